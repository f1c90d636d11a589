"""Checkpoints that survive interruption: an atomic last checkpoint to resume from, and an atomic best checkpoint.

MONAI's ``CheckpointSaver`` writes in place (``atomic=False``) and, through Ignite's ``Checkpoint``, deletes the
previous best file before writing the new one; its ``save_final`` writes the last checkpoint only when training ends.
A run killed at the wrong moment then has no last checkpoint and a truncated best one. The handlers here write every
file with :func:`~brainvq_monai.utils.io.atomic_torch_save` (temporary file, sync, rename), so at every instant the
best and last checkpoints on disk are complete, and :class:`TrainingCheckpointHandler` saves everything a run needs to
continue exactly where it stopped: at the end of every epoch, every ``every_n_iterations`` iterations, and when
SIGINT (Ctrl-C) or SIGTERM (a scheduler, ``kill``) arrives.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch.optim.lr_scheduler import CosineAnnealingLR

from brainvq_monai.utils.distributed import rank_and_world
from brainvq_monai.utils.errors import BrainVQInputError, BrainVQInterrupted
from brainvq_monai.utils.faults import fault_point
from brainvq_monai.utils.io import atomic_torch_save, load_torch_file, remove_stale_temp_files
from brainvq_monai.utils.rng import capture_rng_state, restore_rng_state
from brainvq_monai.utils.settings import as_bool, as_int
from brainvq_monai.utils.state import load_state_dict_checked, unwrap_module

__all__ = ["BestCheckpointSaver", "CHECKPOINT_FORMAT", "TrainingCheckpointHandler"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "brainvq-training-checkpoint"
CHECKPOINT_VERSION = 1
_NOT_RUNNING = (None, Events.COMPLETED, Events.EXCEPTION_RAISED, Events.TERMINATE)
# the setting that decides whether an optional entry of the training state exists
_OPTIONAL_HINTS = {"discriminator": "adversarial_weight", "discriminator_optimizer": "adversarial_weight"}


def _extra_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Non-persistent buffers (left out of ``state_dict``, e.g. the quantizer's assignment counts since the last
    restart check), which a resumed run needs to continue exactly."""
    persistent = set(module.state_dict())
    return {name: buf for name, buf in module.named_buffers() if name not in persistent}


def _state_of(obj: Any) -> Any:
    if isinstance(obj, Engine):
        return obj.state_dict()
    return unwrap_module(obj).state_dict()


class BestCheckpointSaver:
    """Saves the networks atomically whenever the evaluator's key metric reaches a new best.

    Attach it to the evaluator. It relies on MONAI's ``Workflow``, which compares the key metric with the evaluator's
    ``metric_cmp_fn`` at the end of every validation and records ``state.best_metric`` and ``state.best_metric_epoch``
    (restored by :class:`TrainingCheckpointHandler` when a run resumes, so a resumed run never replaces the best
    checkpoint with a worse epoch). With one entry in ``save_dict`` the file is that network's plain state dict, as
    MONAI's ``CheckpointSaver`` writes a single object and as the model zoo names it (``models/model.pt``), so
    ``python -m monai.bundle ckpt_export`` loads it without ``--key_in_ckpt``; with several entries it holds
    ``{name: state_dict}``. The best metric and its epoch are logged and kept in the last checkpoint. Under
    ``torch.distributed`` only rank 0 writes.

    Args:
        filepath: the best checkpoint, e.g. ``models/model_autoencoder.pt``.
        save_dict: ``{name: network}`` to save.
    """

    def __init__(self, filepath: str | os.PathLike, save_dict: Mapping[str, Any]) -> None:
        self.filepath = Path(os.path.abspath(os.fspath(filepath)))
        self.save_dict = dict(save_dict)

    def attach(self, engine: Engine) -> None:
        """Registers the handler on the evaluator's ``EPOCH_COMPLETED``.

        Args:
            engine: the evaluator.
        """
        if rank_and_world()[0] == 0:
            remove_stale_temp_files(self.filepath)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Saves when this validation set a new best.

        Args:
            engine: the evaluator.
        """
        state = engine.state
        if rank_and_world()[0] != 0 or getattr(state, "best_metric_epoch", -1) != state.epoch:
            return
        states = {k: _state_of(v) for k, v in self.save_dict.items() if v is not None}
        checkpoint = next(iter(states.values())) if len(states) == 1 else states
        atomic_torch_save(checkpoint, self.filepath)
        name = getattr(state, "key_metric_name", None)
        logger.info(f"saved the best checkpoint {self.filepath} (epoch {state.epoch}, {name} {state.best_metric:.4g})")


class TrainingCheckpointHandler:
    """Writes the last checkpoint of a training run atomically, and resumes a run from it.

    **What is saved** (one ``torch.save`` file of tensors and plain data, loadable with ``weights_only=True``): the
    state dict of every entry of ``save_dict`` (networks, optimizers, LR scheduler, discriminator and its optimizer,
    the trainer's Ignite state: epoch length, iteration, ``max_epochs``), the networks' non-persistent buffers, the
    validator's best metric and its epoch, the early-stopping counter, the state of every random stream (torch,
    CUDA, NumPy, Python, the randomizable transforms of the training pipeline and the ``prepare_batch`` augmentation
    generator; the same streams at the start of the current epoch for a checkpoint taken inside an epoch) and
    ``meta`` (format, epoch, iteration, why it was written).

    **When**: when a new run starts (so that a run killed at any moment after that can be resumed), at the end of
    every epoch (after validation and the LR step), every ``every_n_iterations`` iterations, when training
    completes, and when SIGINT or SIGTERM arrives: the run finishes the current iteration (or the
    current epoch's validation), saves, and stops with :class:`~brainvq_monai.utils.errors.BrainVQInterrupted`
    (exit status ``128 + signal`` at the command line). A second signal stops at once without saving.

    **Resuming** (``resume=True``; a missing file is an error, never a fresh start): everything above is restored
    before the trainer starts, and training continues with the next iteration. A checkpoint from inside an epoch
    replays that epoch's data order (the random streams of its start are restored, the batches already trained on
    are drawn and skipped, then the current streams are restored), so on CPU, with ``num_workers=0`` or the
    augmentation on the device, a resumed run ends with the same weights as an uninterrupted one. Settings may change
    between runs where that is well defined:

    * a larger ``max_epochs`` continues training; the cosine LR schedule (``CosineAnnealingLR``) is re-targeted to the
      ``T_max`` of the current config: the learning rate becomes the cosine of the new length at the current epoch
      (as if the run had been configured that long from the start) and anneals to its minimum at the new last epoch;
    * a run that already reached ``max_epochs``, or stopped early with its patience used up, is not trained again
      (nothing is written); raise ``max_epochs`` (or the early-stopping patience) to continue it;
    * another batch size or training split is accepted at an epoch boundary (the iteration count is rescaled), not
      inside an epoch.

    The best metric is restored into the validator, so the best checkpoint is only replaced by a better epoch. Under
    ``torch.distributed`` only rank 0 writes; every rank resumes, but the random streams are not restored (each rank
    keeps its own seeding).

    Args:
        filepath: the last checkpoint, e.g. ``models/vqvae_last.pt``.
        save_dict: ``{name: object}`` with ``state_dict``/``load_state_dict``: networks, optimizers, LR scheduler and
            the trainer engine.
        resume: load ``filepath`` and continue from it (``true``/``false``, also as strings).
        validator: the evaluator whose best metric is saved and restored.
        early_stop: a MONAI ``EarlyStopHandler`` whose counter is saved and restored.
        every_n_iterations: also save every that many iterations (``0`` or ``None``: only at epoch ends).
        handle_signals: save and stop on SIGINT/SIGTERM (only in the main thread).
        config_ids: config ID of each network of ``save_dict``, named by mismatch errors (default ``model`` ->
            ``network_def``, ``discriminator`` -> ``discriminator_def``).
    """

    def __init__(
        self,
        filepath: str | os.PathLike,
        save_dict: Mapping[str, Any],
        resume: bool | str = False,
        validator: Engine | None = None,
        early_stop: Any = None,
        every_n_iterations: int | None = 0,
        handle_signals: bool = True,
        config_ids: Mapping[str, str] | None = None,
    ) -> None:
        self.filepath = Path(os.path.abspath(os.fspath(filepath)))
        self.save_dict = {k: v for k, v in dict(save_dict).items() if v is not None}
        self.resume = as_bool(resume, "resume")
        self.validator = validator
        self.early_stop = early_stop
        self.every_n_iterations = as_int(every_n_iterations, "checkpoint_every_iterations", 0, allow_none=True) or 0
        self.handle_signals = as_bool(handle_signals, "handle_signals")
        self.config_ids = {"model": "network_def", "discriminator": "discriminator_def", **dict(config_ids or {})}
        self._engine: Engine | None = None
        self._writer = True
        self._restore_rng = True
        self._signal: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._epoch_start_rng: dict[str, Any] | None = None
        self._saved_at: int | None = None
        self._nothing_to_do: str | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._pending_epoch_rng: dict[str, Any] | None = None
        self._replay_skip = 0

    # ------------------------------------------------------------------ attach
    def attach(self, engine: Engine) -> None:
        """Registers the handler on the trainer and, with ``resume``, restores the run from ``filepath``.

        Attach it after the trainer's own handlers (the configs do so in their ``run`` section), so that the
        end-of-epoch checkpoint follows the validation and the LR step.

        Args:
            engine: the trainer.
        """
        self._engine = engine
        rank, world = rank_and_world()
        self._writer, self._restore_rng = rank == 0, world == 1
        if self._writer:
            remove_stale_temp_files(self.filepath)
        if self.resume:
            self._load(engine)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        if self._replay_skip:
            engine.add_event_handler(Events.GET_BATCH_STARTED, self._replay_epoch)

    # ------------------------------------------------------------------ saving
    def _stateful(self, engine: Engine) -> tuple[Any, dict[str, Any]]:
        transform = getattr(getattr(getattr(engine, "data_loader", None), "dataset", None), "transform", None)
        prepare = getattr(engine, "prepare_batch", None)
        return transform, ({"prepare_batch": prepare} if hasattr(prepare, "state_dict") else {})

    def _capture_rng(self, engine: Engine) -> dict[str, Any]:
        transform, stateful = self._stateful(engine)
        return capture_rng_state(transform, stateful)

    def checkpoint(self, engine: Engine, reason: str) -> dict[str, Any]:
        """The training state to save now.

        Args:
            engine: the trainer.
            reason: why it is written (``"start"``, ``"epoch"``, ``"iterations"``, ``"signal"``, ``"completed"``).

        Returns:
            the checkpoint dict.
        """
        state = engine.state
        epoch_length = state.epoch_length or 1
        complete = state.iteration % epoch_length == 0
        ckpt: dict[str, Any] = {k: _state_of(v) for k, v in self.save_dict.items()}
        ckpt["buffers"] = {
            k: _extra_buffers(unwrap_module(v)) for k, v in self.save_dict.items() if isinstance(v, torch.nn.Module)
        }
        if self.validator is not None:
            vs = self.validator.state
            ckpt["validator"] = {
                "best_metric": float(getattr(vs, "best_metric", -1)),
                "best_metric_epoch": int(getattr(vs, "best_metric_epoch", -1)),
                "key_metric_name": getattr(vs, "key_metric_name", None),
            }
        stopper = getattr(self.early_stop, "_handler", None)
        if stopper is not None:
            ckpt["early_stop"] = dict(stopper.state_dict())
        ckpt["rng"] = {"now": self._capture_rng(engine)}
        if not complete and self._epoch_start_rng is not None:
            ckpt["rng"]["epoch_start"] = self._epoch_start_rng
        ckpt["meta"] = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "epoch": int(state.iteration // epoch_length),
            "iteration": int(state.iteration),
            "epoch_length": int(epoch_length),
            "epoch_complete": bool(complete),
            "reason": reason,
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": str(torch.__version__),
        }
        return ckpt

    def _save(self, engine: Engine, reason: str) -> None:
        if self._writer:
            atomic_torch_save(self.checkpoint(engine, reason), self.filepath)
        self._saved_at = engine.state.iteration

    # ------------------------------------------------------------------ events
    def _started(self, engine: Engine) -> None:
        if self._nothing_to_do is not None:
            logger.warning(self._nothing_to_do)
            engine.terminate(skip_completed=True)
            return
        self._install_signals()
        if self._pending_rng is not None and not self._replay_skip:
            self._restore(engine, self._pending_rng)
            self._pending_rng = None
        if not self.resume:
            self._save(engine, "start")  # from now on a killed run can always be resumed

    def _epoch_started(self, engine: Engine) -> None:
        if self._pending_epoch_rng is not None:
            self._restore(engine, self._pending_epoch_rng)  # the data order of the interrupted epoch
            self._pending_epoch_rng = None
        self._epoch_start_rng = self._capture_rng(engine)

    def _replay_epoch(self, engine: Engine) -> None:
        """Draws and skips the batches the interrupted epoch already trained on, then restores the random streams."""
        engine.remove_event_handler(self._replay_epoch, Events.GET_BATCH_STARTED)
        batches = getattr(engine, "_dataloader_iter", None)
        skipped = 0
        if batches is not None and self._pending_rng is not None:
            for _ in range(self._replay_skip):
                next(batches)
                skipped += 1
        if self._pending_rng is not None:
            self._restore(engine, self._pending_rng)
            self._pending_rng = None
        logger.info(f"resumed inside epoch {engine.state.epoch}: skipped the {skipped} batches already trained on")
        self._replay_skip = 0

    def _iteration_completed(self, engine: Engine) -> None:
        fault_point("iteration", f"{engine.state.epoch}:{engine.state.iteration}")
        if engine.state.epoch_length and engine.state.iteration % engine.state.epoch_length == 0:
            return  # the end-of-epoch checkpoint follows the validation and the LR step
        if self.every_n_iterations and engine.state.iteration % self.every_n_iterations == 0:
            self._save(engine, "iterations")
        if self._signal is not None:
            self._stop(engine)

    def _epoch_completed(self, engine: Engine) -> None:
        self._save(engine, "epoch")
        if self._signal is not None:
            self._stop(engine)

    def _completed(self, engine: Engine) -> None:
        self._save(engine, "completed")
        self._restore_signals()

    # ------------------------------------------------------------------ signals
    def _install_signals(self) -> None:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return
        self._signal = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.signal(signum, self._on_signal)
            if previous != self._on_signal:
                self._previous_handlers[signum] = previous

    def _restore_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        running = self._engine is not None and self._engine.last_event_name not in _NOT_RUNNING
        if running and self._signal is None:
            self._signal = signum
            logger.warning(
                f"{signal.Signals(signum).name} received: stopping after the current iteration and saving "
                f"{self.filepath} (send it again to stop at once without saving)"
            )
            return
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        self._restore_signals()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)

    def _stop(self, engine: Engine) -> None:
        signum = int(self._signal)  # type: ignore[arg-type]
        if self._saved_at != engine.state.iteration:
            self._save(engine, "signal")
        self._restore_signals()
        where = f"epoch {engine.state.epoch}, iteration {engine.state.iteration}"
        saved = f"saved {self.filepath}" if self._writer else "rank 0 saved the last checkpoint"
        raise BrainVQInterrupted(
            signum,
            f"training stopped by {signal.Signals(signum).name} at {where}; {saved}; "
            "run the same command with --resume true to continue",
        )

    # ------------------------------------------------------------------ resuming
    def _restore(self, engine: Engine, rng: Mapping[str, Any]) -> None:
        if not self._restore_rng:
            return
        transform, stateful = self._stateful(engine)
        try:
            restore_rng_state(rng, transform, stateful)
        except (ValueError, KeyError, RuntimeError) as err:
            raise BrainVQInputError(
                self.filepath, f"the training data pipeline differs from the run that wrote it ({err})"
            ) from None

    def _load(self, engine: Engine) -> None:
        path = self.filepath
        if not path.is_file():
            raise BrainVQInputError(
                path,
                "no last checkpoint to resume from (resume is true); train once without --resume true, "
                "or set ckpt_dir to the folder of the run to continue",
            )
        ckpt = load_torch_file(path, "training checkpoint")
        if not isinstance(ckpt, Mapping):
            raise BrainVQInputError(path, "is not a training checkpoint (not a dict of states)")
        meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), Mapping) else {}
        if meta and meta.get("format") != CHECKPOINT_FORMAT:
            raise BrainVQInputError(
                path, f"is not a training checkpoint of brainvq_monai (format {meta.get('format')!r})"
            )
        for key in self.save_dict:
            if key not in ckpt:
                hint = _OPTIONAL_HINTS.get(key)
                why = f"set {hint} as in the run that wrote it" if hint else "it was written by another config"
                raise BrainVQInputError(path, f"has no '{key}' state to resume from; {why}, or start a new run")
        for key in _OPTIONAL_HINTS:
            if key in ckpt and key not in self.save_dict:
                raise BrainVQInputError(
                    path,
                    f"holds a '{key}' state the current config does not use; set {_OPTIONAL_HINTS[key]} as in "
                    "the run that wrote it, or start a new run",
                )
        engine_key = next((k for k, v in self.save_dict.items() if v is engine), None)
        if engine_key is None or not isinstance(ckpt[engine_key], Mapping):
            raise BrainVQInputError(path, "holds no trainer state (iteration, epoch length)")
        trainer_state = ckpt[engine_key]
        saved_length = int(trainer_state["epoch_length"])
        iteration = int(trainer_state["iteration"])
        epoch = iteration // saved_length
        complete = iteration % saved_length == 0
        length = int(engine.state.epoch_length or saved_length)
        max_epochs = int(engine.state.max_epochs)
        if length != saved_length:
            if not complete:
                raise BrainVQInputError(
                    path,
                    f"was written inside an epoch of {saved_length} batches but an epoch now has {length} "
                    "(batch_size or the training split changed); resume with the same data and batch_size",
                )
            logger.warning(
                f"{path}: {saved_length} batches per epoch then, {length} now; continuing after epoch {epoch}"
            )
            iteration = epoch * length
        if max_epochs < epoch:
            raise BrainVQInputError(
                "max_epochs",
                f"is {max_epochs} but {path} already holds {epoch} epochs; set it to more than {epoch} to continue",
            )
        stopper = getattr(self.early_stop, "_handler", None)
        early = ckpt.get("early_stop")
        if complete and epoch >= max_epochs:
            self._nothing_to_do = (
                f"{path}: the run already trained {epoch} of {max_epochs} epochs; nothing to do "
                "(raise max_epochs to train longer)"
            )
        elif complete and stopper is not None and early and int(early.get("counter", 0)) >= int(stopper.patience):
            self._nothing_to_do = (
                f"{path}: the run stopped early at epoch {epoch} (no improvement for {stopper.patience} validations); "
                "nothing to do (raise early_stop_patience to continue it)"
            )
        if self._nothing_to_do is not None:
            return
        schedulers = {}
        for key, obj in self.save_dict.items():
            if obj is engine:
                continue
            if isinstance(obj, torch.nn.Module):
                load_state_dict_checked(obj, ckpt[key], path, self.config_ids.get(key, key))
                module = unwrap_module(obj)
                for name, value in dict(ckpt.get("buffers", {}).get(key, {})).items():
                    try:
                        module.get_buffer(name).copy_(value)
                    except (AttributeError, RuntimeError):
                        pass  # a buffer of an older version of the network: recomputed as training goes on
            elif isinstance(obj, CosineAnnealingLR):
                schedulers[key] = obj.T_max
                obj.load_state_dict(ckpt[key])
            else:
                try:
                    obj.load_state_dict(ckpt[key])
                except (ValueError, KeyError, RuntimeError, TypeError) as err:
                    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                    raise BrainVQInputError(
                        path,
                        f"the '{key}' state does not fit the configured {key} ({first}); resume with the settings of "
                        "the run that wrote it, or start a new run",
                    ) from None
        for key, configured_t_max in schedulers.items():
            _retarget_cosine(self.save_dict[key], int(configured_t_max))
        engine.load_state_dict({"iteration": iteration, "epoch_length": length, "max_epochs": max_epochs})
        if self.validator is not None and isinstance(ckpt.get("validator"), Mapping):
            best = ckpt["validator"]
            self.validator.state.best_metric = float(best["best_metric"])
            self.validator.state.best_metric_epoch = int(best["best_metric_epoch"])
        if stopper is not None and isinstance(early, Mapping):
            stopper.load_state_dict(dict(early))
        rng = ckpt.get("rng") if isinstance(ckpt.get("rng"), Mapping) else {}
        self._pending_rng = rng.get("now")
        if not complete and rng.get("epoch_start") is not None and self._restore_rng:
            self._pending_epoch_rng = rng["epoch_start"]
            self._replay_skip = iteration % length
        if not meta:
            logger.warning(
                f"{path} was written by an older version (no random states, no best metric): resuming anyway"
            )
        logger.info(f"resuming from {path}: epoch {epoch}, iteration {iteration} of {max_epochs} epochs")


def _retarget_cosine(scheduler: CosineAnnealingLR, t_max: int) -> None:
    """Makes a restored cosine schedule end at ``t_max`` (the config's) when it was saved with another ``T_max``.

    The learning rate becomes the closed-form cosine of length ``t_max`` at the current epoch, so a run extended from
    ``N`` to ``M`` epochs continues as if it had been configured for ``M`` epochs from the start (instead of climbing
    back up the saved cosine beyond ``N``); the recursive update then follows this new curve to ``eta_min``.
    """
    if scheduler.T_max == t_max:
        return
    old, epoch = scheduler.T_max, scheduler.last_epoch
    scheduler.T_max = t_max
    lrs = []
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2
        lrs.append(group["lr"])
    scheduler._last_lr = lrs
    logger.info(f"cosine LR schedule re-targeted from T_max={old} to T_max={t_max}: lr {lrs[0]:.3g} at epoch {epoch}")
