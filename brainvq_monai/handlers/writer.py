"""A TensorBoard writer that only writes on the first rank, so configs run unchanged under torchrun."""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

__all__ = ["NullSummaryWriter", "summary_writer"]


class NullSummaryWriter:
    """Accepts every ``SummaryWriter`` call and writes nothing (used on ranks other than 0)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def summary_writer(log_dir: str | os.PathLike, **kwargs: Any) -> SummaryWriter | NullSummaryWriter:
    """A ``SummaryWriter`` on rank 0 (or without ``torch.distributed``), a :class:`NullSummaryWriter` elsewhere.

    Args:
        log_dir: TensorBoard run folder.
        kwargs: further ``SummaryWriter`` arguments.

    Returns:
        the writer.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_rank() > 0:
        return NullSummaryWriter()
    return SummaryWriter(log_dir=os.fspath(log_dir), **kwargs)
