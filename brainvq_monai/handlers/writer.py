"""Rank-aware logging: a TensorBoard writer and handler lists that only log on the first rank, so configs run
unchanged under torchrun."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from brainvq_monai.utils.distributed import rank_and_world
from brainvq_monai.utils.errors import register_exit_flush

__all__ = ["NullSummaryWriter", "handlers_for_rank", "summary_writer", "validation_handlers_for_rank"]


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
    if rank_and_world()[0] > 0:
        return NullSummaryWriter()
    writer = SummaryWriter(log_dir=os.fspath(log_dir), **kwargs)
    register_exit_flush(writer.flush)  # a run that fails or is interrupted keeps the events logged so far
    return writer


def handlers_for_rank(handlers: Sequence[Any], rank: int | None = None) -> list[Any]:
    """The handlers a rank attaches: all of them on rank 0; on other ranks only those that change training.

    Every rank must take the same training decisions (learning-rate steps, time-budget caps, validation epochs, whose
    collectives all ranks join), while logging, TensorBoard, progress bars, metric files and checkpoints are written
    once, by rank 0. Selecting by type, not by position, keeps multi-GPU configs right when a config adds a handler.
    The resumable checkpoint handlers (``TrainingCheckpointHandler``, ``BestCheckpointSaver``) are kept on every rank:
    they write only on rank 0 themselves, and every rank must load the last checkpoint when a run resumes.

    Args:
        handlers: the single-process handler list of a config.
        rank: the process rank; ``None``: ``torch.distributed``'s rank, or 0 when it is not initialised.

    Returns:
        the handlers for this rank.
    """
    from ignite.handlers import ProgressBar
    from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardHandler

    from brainvq_monai.handlers.metrics import MetricsJSONWriter
    from brainvq_monai.handlers.tensorboard import LossTensorBoardHandler, _TensorBoardHandler

    if (rank_and_world()[0] if rank is None else rank) == 0:
        return list(handlers)
    writes = (StatsHandler, TensorBoardHandler, ProgressBar, CheckpointSaver, MetricsJSONWriter, LossTensorBoardHandler,
              _TensorBoardHandler)  # fmt: skip
    return [h for h in handlers if not isinstance(h, writes)]


def validation_handlers_for_rank(handlers: Sequence[Any], rank: int | None = None) -> list[Any]:
    """The validation handlers of a multi-process run: none on ranks other than 0; on rank 0 all but early stopping.

    Validation metrics are all-reduced, so rank 0 alone logs them and saves the best checkpoint. Early stopping is
    left out because a stop decided on one rank would leave the other ranks waiting in a collective.

    Args:
        handlers: the single-process validation handler list of a config.
        rank: the process rank; ``None``: ``torch.distributed``'s rank, or 0 when it is not initialised.

    Returns:
        the handlers for this rank.
    """
    from monai.handlers import EarlyStopHandler

    if (rank_and_world()[0] if rank is None else rank) > 0:
        return []
    return [h for h in handlers if not isinstance(h, EarlyStopHandler)]
