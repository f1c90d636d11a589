"""``prepare_batch`` functions: collated batch dicts to ``(inputs, labels)`` on the engine's device.

They parse the data layer's batches (image dicts and :class:`~brainvq_monai.data.codes.CodesDataset` batches) for
MONAI engines and for the batched augmentation of :mod:`brainvq_monai.transforms.batch`; the engines re-export them
from :mod:`brainvq_monai.engines.utils`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.utils import CommonKeys as Keys

from brainvq_monai.utils.tensors import plain_tensor

__all__ = ["prepare_codes", "prepare_images"]


def prepare_images(
    batchdata: Mapping, device: torch.device | str | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``prepare_batch`` for autoencoders: returns ``(image, label)``; the label (a class, if any) is not a target.

    Args:
        batchdata: a collated dict with ``"image"`` and optionally ``"label"``.
        device: target device.
        non_blocking: asynchronous host-to-device copy.
        kwargs: further arguments of ``Tensor.to``.

    Returns:
        ``(images, labels or None)`` on ``device``.
    """
    images = plain_tensor(batchdata[Keys.IMAGE]).to(device=device, non_blocking=non_blocking, **kwargs)
    labels = batchdata.get(Keys.LABEL)
    if labels is not None:
        labels = plain_tensor(labels).to(device=device, non_blocking=non_blocking)
    return images, labels


def prepare_codes(
    batchdata: Mapping, device: torch.device | str | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``prepare_batch`` for priors over cached code maps: returns ``(codes, class labels or None)``.

    Args:
        batchdata: a collated dict with ``"codes"`` (long) and optionally ``"label"``.
        device: target device.
        non_blocking: asynchronous host-to-device copy.
        kwargs: ignored (kept for the MONAI ``prepare_batch`` signature).

    Returns:
        ``(codes, labels or None)`` on ``device``.
    """
    codes = plain_tensor(batchdata["codes"]).long().to(device=device, non_blocking=non_blocking)
    labels = batchdata.get(Keys.LABEL)
    if labels is not None:
        labels = plain_tensor(labels).long().to(device=device, non_blocking=non_blocking)
    return codes, labels
