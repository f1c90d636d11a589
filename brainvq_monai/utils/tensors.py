"""Tensor helpers shared across the package."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

__all__ = ["as_generator", "autocast", "device_of", "plain_tensor", "to_channels_last"]


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


def autocast(
    device: torch.device | str, enabled: bool, dtype: torch.dtype = torch.bfloat16
) -> contextlib.AbstractContextManager:
    """Autocast context for ``device`` (bf16 by default, so no gradient scaler is needed), or a no-op.

    Args:
        device: the device the computation runs on.
        enabled: whether mixed precision is wanted.
        dtype: the reduced precision type.

    Returns:
        a context manager.
    """
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_channels_last(x: Any, enabled: bool = True) -> Any:
    """Puts a 4D (2D images) or 5D (3D volumes) tensor or module in channels-last memory format.

    Args:
        x: tensor or module.
        enabled: no-op when False.

    Returns:
        ``x`` in channels-last format where that applies, else ``x`` unchanged.
    """
    if not enabled:
        return x
    if isinstance(x, torch.nn.Module):
        return x.to(memory_format=torch.channels_last)
    if isinstance(x, torch.Tensor) and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if isinstance(x, torch.Tensor) and x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x
