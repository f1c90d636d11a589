"""Ending training well: within a time budget (the last whole epoch that fits, its LR schedule annealed to it),
and with a validation of the last epoch, wherever it falls."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler as MonaiValidationHandler
from torch.optim.lr_scheduler import CosineAnnealingLR

from brainvq_monai.utils.distributed import rank_and_world
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["TimeBudgetHandler", "ValidationHandler"]

logger = logging.getLogger(__name__)


class TimeBudgetHandler:
    """Caps ``max_epochs`` so that training ends within ``budget_s`` seconds, at an epoch boundary.

    After every epoch the handler measures the mean epoch time so far (training plus whatever runs at epoch end, such
    as validation; the first epoch, with its one-off costs, is left out once there are others) and sets
    ``engine.state.max_epochs`` to the last epoch that still fits in the budget, never above the configured
    ``max_epochs`` and never below the current epoch. The run then ends the normal way (``COMPLETED`` fires, final checkpoints are written), unlike Ignite's
    ``TimeLimit``, which stops in the middle of an epoch. When ``lr_scheduler`` is a ``CosineAnnealingLR`` stepped
    once per epoch, its ``T_max`` follows the new last epoch, so the learning rate still anneals to its minimum at
    the end of the shortened run instead of stopping half-way down the curve.

    A budget makes the number of epochs, and so the results, depend on the machine's speed: the epochs actually run
    are in ``engine.state.epoch`` at the end and in the log line written when the cap first applies.

    Args:
        budget_s: seconds for the whole run (from the engine's ``STARTED``); ``None`` or ``0``: no budget.
        lr_scheduler: an epoch-level ``CosineAnnealingLR`` to re-target, or ``None``.
        min_epochs: never cap below this many epochs.
        clock: ``"wall"`` (elapsed time: what a user waits for) or ``"process"`` (CPU time of this process, all
            threads together: with N busy threads about N x wall time on a quiet machine, but unaffected by other
            programs competing for the cores, so runs on a shared machine get the same compute; CPU only: GPU
            work is not counted).
    """

    def __init__(
        self, budget_s: float | None = None, lr_scheduler: Any = None, min_epochs: int = 1, clock: str = "wall"
    ) -> None:
        if budget_s is not None and (not isinstance(budget_s, (int, float)) or isinstance(budget_s, bool)):
            raise BrainVQInputError("time_budget_s", f"must be a number of seconds or null, got {budget_s!r}")
        if budget_s is not None and budget_s < 0:
            raise BrainVQInputError("time_budget_s", f"must be >= 0 (0 or null: no budget), got {budget_s}")
        if min_epochs < 1:
            raise BrainVQInputError("min_epochs", f"must be >= 1, got {min_epochs}")
        if clock not in ("wall", "process"):
            raise BrainVQInputError("time_budget_clock", f"must be 'wall' or 'process', got {clock!r}")
        self.clock = clock
        self._now = time.perf_counter if clock == "wall" else time.process_time
        self.budget_s = float(budget_s) if budget_s else None
        self.lr_scheduler = lr_scheduler
        self.min_epochs = int(min_epochs)
        self._t0 = 0.0
        self._first_epoch = 0
        self.capped_at: int | None = None

    def attach(self, engine: Engine) -> None:
        """Registers the handler on ``engine``.

        Args:
            engine: the trainer.
        """
        if self.budget_s is None:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Engine) -> None:
        self._t0 = self._now()
        self._first_epoch = engine.state.epoch  # > 0 when a run resumes
        self._max_epochs = int(engine.state.max_epochs)
        self._first_epoch_s: float | None = None

    def _elapsed(self) -> float:
        """Seconds since ``STARTED``; under ``torch.distributed`` the slowest rank's, so every rank caps alike."""
        elapsed = self._now() - self._t0
        if rank_and_world()[1] > 1:
            backend = dist.get_backend()
            device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            t = torch.tensor([elapsed], dtype=torch.float64, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            elapsed = float(t.item())
        return elapsed

    def _epoch_completed(self, engine: Engine) -> None:
        assert self.budget_s is not None
        done = engine.state.epoch - self._first_epoch
        elapsed = self._elapsed()
        if self._first_epoch_s is None:
            self._first_epoch_s = elapsed
        # the first epoch carries one-off costs (codebook init, allocations, compilation): later ones set the rate
        per_epoch = (elapsed - self._first_epoch_s) / (done - 1) if done > 1 else elapsed
        fits = done + max(0, math.floor((self.budget_s - elapsed) / max(per_epoch, 1e-9)))
        new_max = max(min(self._max_epochs, self._first_epoch + fits), engine.state.epoch, self.min_epochs)
        if new_max == engine.state.max_epochs:
            return
        engine.state.max_epochs = new_max
        if isinstance(self.lr_scheduler, CosineAnnealingLR):
            self.lr_scheduler.T_max = new_max
        if self.capped_at is None or new_max < self.capped_at - 1 or engine.state.epoch == new_max:
            logger.info(
                f"time budget {self.budget_s:.0f} s ({self.clock} clock): {per_epoch:.2f} s per epoch, training ends "
                f"after epoch {new_max}"
            )
        self.capped_at = new_max


class ValidationHandler(MonaiValidationHandler):
    """MONAI's ``ValidationHandler`` that also validates the last epoch when the interval skipped it.

    With ``interval=10`` and training that ends at epoch 24 (its ``max_epochs``, a time budget or early stopping),
    MONAI's handler last validated at epoch 20: the best checkpoint never sees the final four epochs, and a run
    shorter than the interval never validates, so it never writes a best checkpoint at all. Here the trainer's
    ``COMPLETED`` event runs one more validation whenever the last epoch was not validated.

    Args:
        interval: validate every ``interval`` epochs (or iterations with ``epoch_level=False``).
        validator: the evaluator.
        epoch_level: epochs (``True``) or iterations.
        exec_at_start: also validate before training.
        exec_at_end: validate at the end of training when the last epoch was not validated.
    """

    def __init__(
        self,
        interval: int,
        validator: Any = None,
        epoch_level: bool = True,
        exec_at_start: bool = False,
        exec_at_end: bool = True,
    ) -> None:
        super().__init__(interval, validator, epoch_level, exec_at_start)
        self.exec_at_end = exec_at_end
        self._validated_at: tuple[int, int] | None = None

    def attach(self, engine: Engine) -> None:
        """Attaches to the trainer.

        Args:
            engine: the trainer.
        """
        super().attach(engine)
        if self.exec_at_end:
            engine.add_event_handler(Events.COMPLETED, self._at_end)

    def __call__(self, engine: Engine) -> None:
        super().__call__(engine)
        self._validated_at = (engine.state.epoch, engine.state.iteration)

    def _at_end(self, engine: Engine) -> None:
        if engine.state.iteration > 0 and self._validated_at != (engine.state.epoch, engine.state.iteration):
            self(engine)
