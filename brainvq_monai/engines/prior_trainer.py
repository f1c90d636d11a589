"""Ignite trainer of an autoregressive prior on cached VQ-VAE code maps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch.nn import functional as F
from torch.optim import Optimizer

from brainvq_monai.engines.trainer import BrainVQTrainer
from brainvq_monai.engines.utils import autocast, prepare_codes, unwrap
from brainvq_monai.inferers import AutoregressivePriorInferer
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["PriorTrainer", "check_code_dataset"]


def check_code_dataset(dataset: Any, network: torch.nn.Module) -> None:
    """Checks once that a dataset of cached codes fits the prior: codes in ``[0, K)``, labels in ``[0, num_classes)``.

    The priors skip this per-batch check in training mode on CUDA (it would make the host wait for the GPU at every
    step), so the trainer does it once for the whole dataset. Datasets without a ``codes`` tensor are not checked.

    Args:
        dataset: the training dataset (e.g. :class:`~brainvq_monai.data.CodesDataset`).
        network: the prior (possibly DDP-wrapped).

    Raises:
        BrainVQInputError: codes or labels out of range.
    """
    prior = unwrap(network)
    codes = getattr(dataset, "codes", None)
    k = getattr(prior, "num_embeddings", None)
    if isinstance(codes, torch.Tensor) and codes.numel() and k is not None:
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= k:
            raise BrainVQInputError(
                "codes", f"cached codes span [{low}, {high}] but the prior has {k} codes; re-encode with its VQ-VAE"
            )
    labels = getattr(dataset, "labels", None)
    num_classes = getattr(prior, "num_classes", None)
    if isinstance(labels, torch.Tensor) and labels.numel() and num_classes:
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise BrainVQInputError("label", f"class labels span [{low}, {high}] but the prior has {num_classes}")


class PriorTrainer(BrainVQTrainer):
    """Trains a :class:`~brainvq_monai.networks.nets.AutoregressivePrior` by next-token cross-entropy.

    The forward pass is ``engine.inferer(codes, engine.network, class_labels)``, a
    :class:`~brainvq_monai.inferers.AutoregressivePriorInferer` (by default, or a subclass) returning the prior's
    ``(B, K, *latent)`` logits, under bf16 autocast when ``amp`` is set.

    The loader yields cached code maps (``{"codes": (B, *latent) long, "label": (B,)}``, see
    :class:`brainvq_monai.data.CodesDataset`), so the VQ-VAE is not re-run at every step. Class labels are passed to
    the prior when it is conditional (``prior.num_classes`` set). ``engine.state.output`` holds ``loss`` (mean NLL in
    nats per token, or the label-smoothed cross-entropy) and ``nll`` (per-token NLL map), for
    :class:`~brainvq_monai.metrics.PriorNLL`.

    Args:
        device: device to train on.
        max_epochs: number of epochs.
        train_data_loader: loader of cached code maps.
        network: the prior.
        optimizer: its optimizer.
        grad_clip_norm: clip the gradient norm to this value; ``None``: no clipping.
        amp: bf16 autocast on the engine's device (the loss is computed in float32).
        label_smoothing: label smoothing of the cross-entropy.
        prepare_batch: batch parser returning ``(codes, labels)``.
        kwargs: further arguments of :class:`~brainvq_monai.engines.trainer.BrainVQTrainer` (``inferer``: an
            :class:`~brainvq_monai.inferers.AutoregressivePriorInferer`, built when not given).

    Raises:
        BrainVQInputError: an ``inferer`` that is not an :class:`~brainvq_monai.inferers.AutoregressivePriorInferer`,
            or cached codes or labels out of the prior's range.
    """

    inferer_class = AutoregressivePriorInferer

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
        prepare_batch: Callable = prepare_codes,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device,
            max_epochs,
            train_data_loader,
            network,
            optimizer,
            loss_function=F.cross_entropy,
            grad_clip_norm=grad_clip_norm,
            amp=amp,
            prepare_batch=prepare_batch,
            **kwargs,
        )
        self.label_smoothing = label_smoothing
        check_code_dataset(getattr(train_data_loader, "dataset", None), network)

    def _iteration(self, engine: PriorTrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        codes, labels = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        labels = labels if getattr(unwrap(engine.network), "num_classes", None) else None
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with autocast(engine.state.device, engine.use_amp):
            logits = engine.inferer(codes, engine.network, labels)
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
        engine.backward_and_step(loss, engine.network, engine.optimizer)
        engine.state.output.update({Keys.LOSS: loss.detach(), "nll": nll.detach()})
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
