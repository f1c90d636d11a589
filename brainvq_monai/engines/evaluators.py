"""Ignite evaluators of VQ-VAEs and priors."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer, SimpleInferer
from monai.utils import CommonKeys as Keys
from torch.nn import functional as F

from brainvq_monai.engines.utils import autocast, prepare_codes, prepare_images, to_channels_last, unwrap, vqvae_forward
from brainvq_monai.utils.settings import as_bool

__all__ = ["VQVAEEvaluator", "PriorEvaluator"]


class _BrainVQEvaluator(SupervisedEvaluator):
    """Shared constructor: eval mode, no decollation, bf16 autocast handled by the subclasses."""

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Iterable,
        network: torch.nn.Module,
        prepare_batch: Callable,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        inferer: Inferer | None = None,
        key_val_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable | None = None,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        channels_last: bool = False,
    ) -> None:
        amp, channels_last = as_bool(amp, "amp"), as_bool(channels_last, "channels_last")
        extra: dict[str, Any] = {} if metric_cmp_fn is None else {"metric_cmp_fn": metric_cmp_fn}
        super().__init__(
            device=torch.device(device),
            val_data_loader=val_data_loader,
            network=to_channels_last(network, channels_last),
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            inferer=inferer if inferer is not None else SimpleInferer(),
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            val_handlers=val_handlers,
            amp=False,
            decollate=False,
            **extra,
        )
        self.use_amp = amp
        self.channels_last = channels_last


class VQVAEEvaluator(_BrainVQEvaluator):
    """Runs a VQ-VAE in eval mode (the codebook is frozen) over a loader of images.

    ``engine.state.output`` holds ``image``, ``label`` (the input, as reconstruction target), ``pred``
    (reconstruction, clipped to the data range when ``clip_range`` is set), ``indices`` (code map) and
    ``class_label`` (the dataset's class label, if any), for SSIM/PSNR/codebook metrics and image handlers.

    Args:
        device: device.
        val_data_loader: loader of dicts with ``"image"``.
        network: the VQ-VAE.
        clip_range: clip reconstructions to this range before metrics (``None``: no clipping).
        kwargs: further arguments of :class:`monai.engines.SupervisedEvaluator` (``epoch_length``, ``non_blocking``,
            ``inferer``, ``key_val_metric``, ``additional_metrics``, ``metric_cmp_fn``, ``val_handlers``) and
            ``amp``, ``channels_last``.
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Iterable,
        network: torch.nn.Module,
        clip_range: tuple[float, float] | None = (0.0, 1.0),
        prepare_batch: Callable = prepare_images,
        **kwargs: Any,
    ) -> None:
        super().__init__(device, val_data_loader, network, prepare_batch=prepare_batch, **kwargs)
        self.clip_range = clip_range

    def _iteration(self, engine: VQVAEEvaluator, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images, labels = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        images = to_channels_last(torch.as_tensor(images), engine.channels_last)
        engine.network.eval()
        with torch.no_grad(), autocast(engine.state.device, engine.use_amp):
            recon, quant_loss, indices = vqvae_forward(engine.network, images)
        recon = recon.float()
        if engine.clip_range is not None:
            recon = recon.clamp(*engine.clip_range)
        engine.state.output = {
            Keys.IMAGE: images.float(),
            Keys.LABEL: images.float(),
            Keys.PRED: recon,
            "indices": indices,
            "quant_loss": quant_loss.float(),
            "class_label": labels,
        }
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class PriorEvaluator(_BrainVQEvaluator):
    """Scores cached code maps under a prior: per-token NLL (nats) in ``engine.state.output["nll"]``.

    Args:
        device: device.
        val_data_loader: loader of cached code maps (``{"codes", "label"}``).
        network: the prior.
        kwargs: further arguments of :class:`monai.engines.SupervisedEvaluator` and ``amp``.
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Iterable,
        network: torch.nn.Module,
        prepare_batch: Callable = prepare_codes,
        **kwargs: Any,
    ) -> None:
        super().__init__(device, val_data_loader, network, prepare_batch=prepare_batch, **kwargs)

    def _iteration(self, engine: PriorEvaluator, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        codes, labels = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        labels = labels if getattr(unwrap(engine.network), "num_classes", None) else None
        engine.network.eval()
        with torch.no_grad(), autocast(engine.state.device, engine.use_amp):
            logits = engine.network(codes, labels)
        nll = F.cross_entropy(logits.float(), codes, reduction="none")
        engine.state.output = {Keys.IMAGE: codes, Keys.LABEL: labels, "nll": nll, Keys.LOSS: nll.mean()}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
