"""Base of the brainvq trainers: bf16 autocast, gradient clipping and the optimizer step, on MONAI's trainer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer
from torch.optim import Optimizer

from brainvq_monai.engines.utils import compile_network, engine_inferer
from brainvq_monai.utils.settings import as_bool

__all__ = ["BrainVQTrainer"]


class BrainVQTrainer(SupervisedTrainer):
    """A ``monai.engines.SupervisedTrainer`` whose subclasses write their own ``_iteration``.

    It keeps MONAI's engine (events, handlers, metrics, checkpointing, ``state_dict``) and adds what both brainvq
    trainers need: bf16 autocast on the engine's device (no fp16 gradient scaler, so MONAI's ``amp`` path is not
    used), gradient-norm clipping and a shared backward/step. As in MONAI, every forward pass of ``network`` is a call
    of ``engine.inferer``; a subclass names the inferer class it calls in :attr:`inferer_class`.

    Args:
        device: device to train on.
        max_epochs: number of epochs.
        train_data_loader: the training loader.
        network: the network.
        optimizer: its optimizer.
        loss_function: the loss (``SupervisedTrainer`` requires one; subclasses document how they use it).
        grad_clip_norm: clip the gradient norm to this value; ``None``: no clipping.
        amp: bf16 autocast on the engine's device.
        compile: compile the network in place with ``torch.compile`` (see
            :func:`~brainvq_monai.engines.utils.compile_network`: checkpoint keys stay unchanged, unlike MONAI's
            ``compile`` option, which wraps the network). The first iterations are slow while it compiles.
        compile_kwargs: arguments of ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``).
        inferer: the inferer called for every forward pass (MONAI bundle ``train#inferer``): an instance of
            :attr:`inferer_class` (or a subclass), built when ``None``.
        decollate: decollate outputs (off: the metrics here work on batches).
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
        kwargs: further arguments of :class:`monai.engines.SupervisedTrainer` (``epoch_length``, ``non_blocking``,
            ``prepare_batch``, ``iteration_update``, ``postprocessing``, ``key_train_metric``,
            ``additional_metrics``, ``metric_cmp_fn``, ``train_handlers``, ``event_names``, ``event_to_attr``,
            ``to_kwargs``).

    Raises:
        BrainVQInputError: ``inferer`` is not an :attr:`inferer_class`.
    """

    #: dotted name of the inferer class the engine calls (the default, and the base class a given inferer must have);
    #: ``None``: any inferer, MONAI's ``SimpleInferer`` by default
    inferer_class: ClassVar[type[Inferer] | None] = None

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        grad_clip_norm: float | None = None,
        amp: bool = False,
        compile: bool = False,
        compile_kwargs: dict | None = None,
        inferer: Inferer | None = None,
        decollate: bool = False,
        optim_set_to_none: bool = True,
        **kwargs: Any,
    ) -> None:
        inferer = engine_inferer(inferer, self.inferer_class, type(self).__name__)
        amp, compile = as_bool(amp, "amp"), as_bool(compile, "compile")
        if compile:
            compile_network(network, **(compile_kwargs or {}))
        if kwargs.get("metric_cmp_fn") is None:
            kwargs.pop("metric_cmp_fn", None)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            inferer=inferer,
            amp=False,  # bf16 autocast is handled by the subclasses; MONAI's amp path adds an fp16 gradient scaler
            decollate=decollate,
            optim_set_to_none=optim_set_to_none,
            **kwargs,
        )
        self.use_amp = amp
        self.compiled = compile
        self.grad_clip_norm = grad_clip_norm

    def backward_and_step(self, loss: torch.Tensor, network: torch.nn.Module, optimizer: Optimizer) -> None:
        """``loss.backward()``, gradient clipping of ``network``, ``optimizer.step()``, firing MONAI's iteration events.

        Args:
            loss: the scalar loss.
            network: the module whose gradients are clipped.
            optimizer: the optimizer to step.
        """
        loss.backward()
        if network is self.network:
            self.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if self.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(network.parameters(), self.grad_clip_norm)
        optimizer.step()
