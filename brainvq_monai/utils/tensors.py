"""Tensor helpers shared across the package."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["as_generator", "device_of", "plain_tensor"]


def plain_tensor(x: Any) -> torch.Tensor:
    """``x`` as a plain ``torch.Tensor``, without MONAI ``MetaTensor`` metadata.

    Engines and inferers work on batches; batched metadata breaks on per-item indexing and is kept in the batch dict.

    Args:
        x: tensor-like.

    Returns:
        a plain tensor sharing memory with ``x`` where possible.
    """
    x = torch.as_tensor(x)
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def device_of(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (CPU for a module without parameters).

    Args:
        module: a module.

    Returns:
        its device.
    """
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def as_generator(generator: torch.Generator | int | None, device: torch.device | str) -> torch.Generator | None:
    """A ``torch.Generator`` on ``device`` from a seed, or the given generator / ``None`` unchanged.

    Args:
        generator: a generator, an integer seed, or ``None``.
        device: device of a generator made from a seed.

    Returns:
        the generator or ``None``.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return torch.Generator(device=device).manual_seed(int(generator))
