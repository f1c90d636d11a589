"""The process's place in ``torch.distributed``, one definition for every layer that needs it."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["rank_and_world"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group.

    Returns:
        ``(0, 1)`` when ``torch.distributed`` is unavailable or not initialised.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
