"""Ignite trainer of an autoregressive prior on cached VQ-VAE code maps."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from ignite.metrics import Metric
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.utils import CommonKeys as Keys
from torch.nn import functional as F
from torch.optim import Optimizer

from brainvq_monai.engines.utils import autocast, prepare_codes

__all__ = ["PriorTrainer"]


class PriorTrainer(SupervisedTrainer):
    """Trains a :class:`~brainvq_monai.networks.nets.AutoregressivePrior` by next-token cross-entropy.

    The loader yields cached code maps (``{"codes": (B, *latent) long, "label": (B,)}``, see
    :class:`brainvq_monai.data.CodesDataset`), so the VQ-VAE is not re-run at every step. Class labels are passed to
    the prior when it is conditional (``prior.num_classes`` set). ``engine.state.output`` holds ``loss`` (mean NLL in
    nats per token) and ``nll`` (per-token NLL map), for :class:`~brainvq_monai.metrics.PriorNLL`.

    Args:
        device: device to train on.
        max_epochs: number of epochs.
        train_data_loader: loader of cached code maps.
        network: the prior.
        optimizer: its optimizer.
        grad_clip_norm: clip the gradient norm to this value; ``None``: no clipping.
        amp: bf16 autocast on the engine's device (the loss is computed in float32).
        label_smoothing: label smoothing of the cross-entropy.
        epoch_length: iterations per epoch.
        non_blocking: asynchronous host-to-device copies.
        prepare_batch: batch parser returning ``(codes, labels)``.
        iteration_update: replaces the default iteration.
        inferer: kept for the MONAI bundle ``train#inferer`` property; the prior is called directly.
        key_train_metric: Ignite metric computed on training iterations.
        additional_metrics: further Ignite metrics.
        metric_cmp_fn: comparison of key metric values.
        train_handlers: Ignite handlers.
        event_names: extra events to register.
        event_to_attr: event to state attribute mapping.
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: torch.nn.Module,
        optimizer: Optimizer,
        grad_clip_norm: float | None = 1.0,
        amp: bool = False,
        label_smoothing: float = 0.0,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = prepare_codes,
        iteration_update: Callable | None = None,
        inferer: Inferer | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable | None = None,
        train_handlers: Sequence | None = None,
        event_names: list | None = None,
        event_to_attr: dict | None = None,
        optim_set_to_none: bool = True,
    ) -> None:
        extra: dict[str, Any] = {} if metric_cmp_fn is None else {"metric_cmp_fn": metric_cmp_fn}
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=F.cross_entropy,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            inferer=inferer if inferer is not None else SimpleInferer(),
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            train_handlers=train_handlers,
            amp=False,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=False,
            optim_set_to_none=optim_set_to_none,
            **extra,
        )
        self.use_amp = amp
        self.grad_clip_norm = grad_clip_norm
        self.label_smoothing = label_smoothing

    def _iteration(self, engine: PriorTrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        codes, labels = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        labels = labels if getattr(engine.network, "num_classes", None) else None
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with autocast(engine.state.device, engine.use_amp):
            logits = engine.network(codes, labels)
        engine.state.output = {Keys.IMAGE: codes, Keys.LABEL: labels}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        nll = F.cross_entropy(logits.float(), codes, reduction="none")
        loss = (
            F.cross_entropy(logits.float(), codes, label_smoothing=engine.label_smoothing)
            if engine.label_smoothing
            else nll.mean()
        )
        engine.state.output[Keys.LOSS] = loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if engine.grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(engine.network.parameters(), engine.grad_clip_norm)
        engine.optimizer.step()
        engine.state.output.update({Keys.LOSS: loss.detach(), "nll": nll.detach()})
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
