"""Ignite evaluators of VQ-VAEs and priors."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import torch
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.inferers import Inferer
from monai.utils import CommonKeys as Keys
from torch.nn import functional as F

from brainvq_monai.engines.utils import (
    autocast,
    engine_inferer,
    prepare_codes,
    prepare_images,
    to_channels_last,
    unwrap,
)
from brainvq_monai.inferers import AutoregressivePriorInferer, VQVAEInferer
from brainvq_monai.inferers.anomaly import brain_mask, masked_mean, region_mask, residual_map
from brainvq_monai.networks.nets.prior import require_likelihood
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.settings import as_bool
from brainvq_monai.utils.tensors import device_of, plain_tensor

__all__ = ["AnomalyEvaluator", "GeneratedCodesEvaluator", "VQVAEEvaluator", "PriorEvaluator", "SamplingEvaluator"]


class _BrainVQEvaluator(SupervisedEvaluator):
    """Shared constructor: eval mode, no decollation, bf16 autocast handled by the subclasses.

    Every forward pass is a call of ``engine.inferer``, an instance of :attr:`inferer_class` (built when no
    ``inferer`` is given; a wrong one raises a ``BrainVQInputError``).
    """

    #: dotted name of the inferer class the engine calls (the default, and the base class a given inferer must have);
    #: ``None``: any inferer, MONAI's ``SimpleInferer`` by default
    inferer_class: ClassVar[type[Inferer] | None] = None

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
        inferer = engine_inferer(inferer, self.inferer_class, type(self).__name__)
        amp, channels_last = as_bool(amp, "amp"), as_bool(channels_last, "channels_last")
        extra: dict[str, Any] = {} if metric_cmp_fn is None else {"metric_cmp_fn": metric_cmp_fn}
        super().__init__(
            device=torch.device(device),
            val_data_loader=val_data_loader,
            network=to_channels_last(network, channels_last),
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            inferer=inferer,
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            val_handlers=val_handlers,
            amp=False,
            decollate=False,
            **extra,
        )
        self.use_amp = amp
        self.channels_last = channels_last
        self.seed = 0
        self.generator: torch.Generator | None = None

    def run_generator(self) -> torch.Generator:
        """The random generator of this run's draws: seeded with ``self.seed`` at the run's first iteration, so every
        run (e.g. each validation of a training run) draws the same maps.

        Returns:
            the ``torch.Generator`` on the network's device.
        """
        if self.generator is None or self.state.iteration == 1:
            self.generator = torch.Generator(device=device_of(self.network)).manual_seed(self.seed)
        return self.generator


class VQVAEEvaluator(_BrainVQEvaluator):
    """Runs a VQ-VAE in eval mode (the codebook is frozen) over a loader of images.

    The forward pass is ``engine.inferer(images, engine.network)``, a
    :class:`~brainvq_monai.inferers.VQVAEInferer` (by default, or a subclass), without gradients and under bf16
    autocast when ``amp`` is set.

    ``engine.state.output`` holds ``image``, ``label`` (the input, as reconstruction target), ``pred``
    (reconstruction, clipped to the data range when ``clip_range`` is set), ``indices`` (code map) and
    ``class_label`` (the dataset's class label, if any), for SSIM/PSNR/codebook metrics and image handlers.

    Args:
        device: device.
        val_data_loader: loader of dicts with ``"image"``.
        network: the VQ-VAE.
        clip_range: clip reconstructions to this range before metrics (``None``: no clipping).
        prepare_batch: batch parser returning ``(images, class labels or None)``.
        kwargs: further arguments of :class:`monai.engines.SupervisedEvaluator` (``epoch_length``, ``non_blocking``,
            ``inferer``: a :class:`~brainvq_monai.inferers.VQVAEInferer`, built when not given; ``key_val_metric``,
            ``additional_metrics``, ``metric_cmp_fn``, ``val_handlers``) and ``amp``, ``channels_last``.

    Raises:
        BrainVQInputError: an ``inferer`` that is not a :class:`~brainvq_monai.inferers.VQVAEInferer`.
    """

    inferer_class = VQVAEInferer

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
            recon, quant_loss, indices = engine.inferer(images, engine.network)
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

    The forward pass is ``engine.inferer(codes, engine.network, class_labels)``, an
    :class:`~brainvq_monai.inferers.AutoregressivePriorInferer` (by default, or a subclass) returning the logits,
    without gradients and under bf16 autocast when ``amp`` is set.

    Args:
        device: device.
        val_data_loader: loader of cached code maps (``{"codes", "label"}``).
        network: the prior.
        prepare_batch: batch parser returning ``(codes, class labels or None)``.
        kwargs: further arguments of :class:`monai.engines.SupervisedEvaluator` (``inferer``: an
            :class:`~brainvq_monai.inferers.AutoregressivePriorInferer`, built when not given) and ``amp``.

    Raises:
        BrainVQInputError: an ``inferer`` that is not an :class:`~brainvq_monai.inferers.AutoregressivePriorInferer`.
    """

    inferer_class = AutoregressivePriorInferer

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
            logits = engine.inferer(codes, engine.network, labels)
        nll = F.cross_entropy(logits.float(), codes, reduction="none")
        engine.state.output = {Keys.IMAGE: codes, Keys.LABEL: labels, "nll": nll, Keys.LOSS: nll.mean()}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class GeneratedCodesEvaluator(PriorEvaluator):
    """Compares generated code maps with real ones: the validation of priors without a likelihood (DCGAN).

    For every batch of real (cached) code maps the prior draws as many maps, of the same classes, through
    ``engine.inferer.sample_codes``; ``engine.state.output`` holds ``image`` (the real codes), ``pred`` (the
    generated codes) and ``label``, for :class:`~brainvq_monai.metrics.CodeMapDivergence` and
    :class:`~brainvq_monai.metrics.CodesUsed`. One ``torch.Generator`` seeded with ``seed`` at every run draws the
    maps, so successive validations of a training run compare the same noise.

    Args:
        args: the arguments of :class:`PriorEvaluator`.
        seed: seed of the sampling generator.
        kwargs: the keyword arguments of :class:`PriorEvaluator`.
    """

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = int(seed)

    def _iteration(self, engine: GeneratedCodesEvaluator, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        codes, labels = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        labels = labels if getattr(unwrap(engine.network), "num_classes", None) else None
        with torch.no_grad(), autocast(engine.state.device, engine.use_amp):
            fake = engine.inferer.sample_codes(
                unwrap(engine.network), codes.shape[0], codes.shape[1:], labels, generator=engine.run_generator()
            )
        engine.state.output = {Keys.IMAGE: codes, Keys.PRED: fake, Keys.LABEL: labels}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _prepare_requests(batchdata: dict[str, Any], device: torch.device, non_blocking: bool = False, **_: Any) -> tuple:
    labels = torch.as_tensor(batchdata["class_label"]).reshape(-1).long()
    return labels.to(device, non_blocking=non_blocking), list(batchdata["name"])


class SamplingEvaluator(_BrainVQEvaluator):
    """Draws new images: each iteration samples a batch of code maps from the prior through ``engine.inferer``
    (:meth:`~brainvq_monai.inferers.AutoregressivePriorInferer.sample`) and decodes them with the autoencoder.

    The data are sampling requests (:func:`brainvq_monai.data.sampling_requests`: ``{"class_label", "name"}``);
    ``engine.state.output`` holds ``pred`` (the decoded images), ``label`` (``None`` for an unconditional prior)
    and ``name``, for handlers such as :class:`~brainvq_monai.handlers.SampleWriter`. One ``torch.Generator``,
    seeded with ``seed`` when the run starts, draws every batch in turn, so a run with the same seed, requests and
    batch size writes the same images.

    Args:
        device: device.
        val_data_loader: loader of sampling requests.
        network: the prior.
        autoencoder: the VQ-VAE whose codes the prior models.
        inferer: an :class:`~brainvq_monai.inferers.AutoregressivePriorInferer`.
        latent_shape: the code map shape (``None``: the prior's own).
        temperature: softmax temperature (``0``: greedy).
        top_k: optional top-k truncation.
        top_p: optional nucleus truncation.
        seed: seed of the sampling generator.
        val_handlers: handlers (e.g. the sample writer).
        kwargs: further arguments of :class:`monai.engines.SupervisedEvaluator`.

    Raises:
        BrainVQInputError: an ``inferer`` that is not an :class:`~brainvq_monai.inferers.AutoregressivePriorInferer`.
    """

    inferer_class = AutoregressivePriorInferer

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Iterable,
        network: torch.nn.Module,
        autoencoder: torch.nn.Module,
        inferer: Inferer,
        latent_shape: Sequence[int] | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        val_handlers: Sequence | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device, val_data_loader, network, prepare_batch=_prepare_requests, inferer=inferer,
            val_handlers=val_handlers, **kwargs,
        )  # fmt: skip
        self.autoencoder = autoencoder
        self.latent_shape = None if latent_shape is None else tuple(int(s) for s in latent_shape)
        self.temperature = float(temperature)
        self.top_k = top_k
        self.top_p = top_p
        self.seed = int(seed)

    def _iteration(self, engine: SamplingEvaluator, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        labels, names = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        conditional = bool(getattr(unwrap(engine.network), "num_classes", None))
        images = engine.inferer.sample(
            engine.autoencoder,
            engine.network,
            len(names),
            engine.latent_shape,
            labels if conditional else None,
            engine.temperature,
            engine.top_k,
            generator=engine.run_generator(),
            top_p=engine.top_p,
        )
        engine.state.output = {Keys.PRED: images, Keys.LABEL: labels if conditional else None, "name": names}
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _keep_batch(batchdata: Any, *args: Any, **kwargs: Any) -> Any:
    return batchdata  # the anomaly scores need the whole batch (image meta, labels, subjects, slices)


class AnomalyEvaluator(_BrainVQEvaluator):
    """Scores images for anomalies: per batch, the prior's NLL map in image space (``engine.inferer
    .get_anomaly_map``), the healed image (``engine.inferer.heal``: codes unlikely under the normal class resampled)
    and the healing residual, with brain and region means of both (:data:`~brainvq_monai.inferers.anomaly
    .SCORE_COLUMNS`); ``engine.state.output`` holds them for handlers such as
    :class:`~brainvq_monai.handlers.AnomalyWriter`. One ``torch.Generator`` seeded with ``seed`` when the run starts
    draws the healing.

    Args:
        device: device.
        val_data_loader: loader of image batches (``image``; ``label``, ``subject``, ``slice`` when present).
        network: the prior.
        autoencoder: the VQ-VAE whose codes the prior models.
        inferer: an :class:`~brainvq_monai.inferers.AutoregressivePriorInferer`.
        class_label: the normal class the images are scored under (conditional priors), or ``None``.
        threshold: healing threshold (probability).
        region_box: the region of the region scores (see :func:`~brainvq_monai.inferers.anomaly.region_mask`).
        brain_threshold: intensity threshold of the brain mask.
        interpolation_mode: upsampling of the latent maps.
        sigma: optional Gaussian smoothing of the residual (pixels).
        seed: seed of the healing draws.
        val_handlers: handlers (e.g. the anomaly writer).
        image_key: the image key of the batches.
        kwargs: further arguments of :class:`monai.engines.SupervisedEvaluator`.

    Raises:
        BrainVQInputError: a prior without a likelihood (the DCGAN), or a class label that is not one of the prior's.
    """

    inferer_class = AutoregressivePriorInferer

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Iterable,
        network: torch.nn.Module,
        autoencoder: torch.nn.Module,
        inferer: Inferer | None = None,
        class_label: int | None = None,
        threshold: float = 0.01,
        region_box: Sequence[float] | Sequence[Sequence[float]] = (0.3, 0.7),
        brain_threshold: float = 0.05,
        interpolation_mode: str = "nearest",
        sigma: float | None = None,
        seed: int = 0,
        val_handlers: Sequence | None = None,
        image_key: str = "image",
        **kwargs: Any,
    ) -> None:
        require_likelihood(network, "anomaly maps")
        super().__init__(
            device, val_data_loader, network, prepare_batch=_keep_batch, inferer=inferer, val_handlers=val_handlers,
            **kwargs,
        )  # fmt: skip
        self.image_key = image_key
        num_classes = getattr(unwrap(network), "num_classes", None)
        if class_label is not None and (not num_classes or not 0 <= int(class_label) < num_classes):
            raise BrainVQInputError(
                "class_label", f"{class_label} is not a class of this prior (num_classes={num_classes})"
            )
        if num_classes and class_label is None:
            raise BrainVQInputError("class_label", "a conditional prior needs the normal class to score images under")
        self.autoencoder = autoencoder
        self.class_label = None if class_label is None else int(class_label)
        self.threshold, self.region_box, self.brain_threshold = threshold, region_box, brain_threshold
        self.interpolation_mode, self.sigma, self.seed = interpolation_mode, sigma, int(seed)

    @torch.no_grad()
    def _iteration(self, engine: AnomalyEvaluator, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        if batchdata is None or engine.image_key not in batchdata:
            raise BrainVQInputError("data", f"batch without '{engine.image_key}'")
        image = batchdata[engine.image_key]
        x = plain_tensor(torch.as_tensor(image)).float().to(device_of(engine.autoencoder))
        n = x.shape[0]
        labels = None if engine.class_label is None else torch.full((n,), engine.class_label, dtype=torch.long)
        vqvae, prior = engine.autoencoder, engine.network
        nll = engine.inferer.get_anomaly_map(x, vqvae, prior, labels, engine.interpolation_mode).to(x.device)
        healed = engine.inferer.heal(x, vqvae, prior, engine.threshold, labels, generator=engine.run_generator())
        residual = residual_map(x, healed.image, healed.resampled, engine.sigma, engine.interpolation_mode)
        residual = residual.mean(1, keepdim=True)
        brain = brain_mask(x, engine.brain_threshold, dilation=0)
        region = region_mask(x.shape[2:], engine.region_box).to(x.device)
        scores = {
            "nll_brain": masked_mean(nll, brain),
            "nll_region": masked_mean(nll, region),
            "residual_brain": masked_mean(residual, brain),
            "residual_region": masked_mean(residual, region),
            "resampled_fraction": healed.resampled.float().flatten(1).mean(1),
        }
        engine.state.output = {
            Keys.IMAGE: image, Keys.PRED: healed.image, "nll": nll, "residual": residual, "scores": scores,
            "batch": batchdata,
        }  # fmt: skip
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
