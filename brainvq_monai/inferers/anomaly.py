"""Anomaly maps from an autoregressive prior over VQ-VAE codes (Pinaya et al., MedIA 2022).

Two maps, both in image space and ``spatial_dims``-generic:

* the **NLL map**: the prior's per-token negative log-likelihood ``-log p(code | earlier codes)`` (nats),
  upsampled from the latent grid to the image (:func:`anomaly_map`);
* the **healed reconstruction**: the codes are visited in the prior's generation order with its incremental decoder
  (:func:`~brainvq_monai.inferers.decoding.walk_codes`, the walk sampling uses too);
  a code is kept when its probability given the already healed prefix is above ``threshold``, otherwise it is
  replaced by a draw from that conditional; the healed codes are decoded by the VQ-VAE (:func:`heal`). The residual
  ``|image - healed|``, optionally smoothed and restricted to the (upsampled) resampled tokens, is a pixel-level
  anomaly map (:func:`residual_map`).

Per-image scores are means of these maps inside a brain mask or a region (e.g. a central "ventricle" box,
:func:`region_mask`); :func:`auroc` compares the scores of two groups.
:func:`brainvq_monai.bundle.anomaly.save_anomaly_outputs` writes maps, healed images and a CSV of scores for a
dataset (used by the bundle config ``anomaly.json``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from monai.networks import eval_mode
from torch import nn
from torch.nn import functional as F

from brainvq_monai.inferers.decoding import KeepUnlessUnlikely, walk_codes
from brainvq_monai.inferers.sampling import token_nll
from brainvq_monai.metrics.generation import brain_mask
from brainvq_monai.networks.nets.prior import AutoregressivePrior, require_likelihood
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.tensors import as_generator, device_of, plain_tensor

__all__ = [
    "HealResult",
    "anomaly_map",
    "auroc",
    "brain_mask",
    "heal",
    "heal_codes",
    "likelihood_threshold",
    "masked_mean",
    "region_mask",
    "residual_map",
    "upsample_map",
]

SCORE_COLUMNS = (
    "nll_brain",
    "nll_region",
    "residual_brain",
    "residual_region",
    "resampled_fraction",
)


class HealResult(NamedTuple):
    """Output of :func:`heal`.

    Attributes:
        image: ``(B, C, *image)`` decoding of the healed codes.
        codes: ``(B, *latent)`` healed codes.
        resampled: ``(B, *latent)`` bool, the tokens that were replaced.
        original_codes: ``(B, *latent)`` codes of the input.
    """

    image: torch.Tensor
    codes: torch.Tensor
    resampled: torch.Tensor
    original_codes: torch.Tensor


def _codes_of(inputs: torch.Tensor, vqvae: nn.Module | None) -> torch.Tensor:
    """``(B, *latent)`` long codes of float images (quantized by ``vqvae`` in eval mode) or of integer code maps."""
    if not isinstance(inputs, torch.Tensor):
        raise BrainVQInputError("inputs", "expected float images (B, C, *image) or integer code maps (B, *latent)")
    inputs = plain_tensor(inputs)
    if not inputs.is_floating_point():
        return inputs.long()
    if vqvae is None:
        raise BrainVQInputError("inputs", "float images need a vqvae to be quantized (or pass integer code maps)")
    with eval_mode(vqvae):
        return plain_tensor(vqvae.index_quantize(inputs.to(device_of(vqvae)))).long()


def upsample_map(latent_map: torch.Tensor, spatial_size: Sequence[int], mode: str = "nearest") -> torch.Tensor:
    """Upsamples a latent map to image size.

    Args:
        latent_map: ``(B, *latent)`` or ``(B, C, *latent)`` map (float or bool).
        spatial_size: image spatial size; its length sets the number of spatial dims.
        mode: ``"nearest"``, ``"linear"`` (bilinear in 2D, trilinear in 3D), ``"bilinear"`` or ``"trilinear"``.

    Returns:
        ``(B, C, *spatial_size)`` float map (``C = 1`` for a ``(B, *latent)`` input).
    """
    spatial_size = tuple(int(s) for s in spatial_size)
    dims = len(spatial_size)
    linear = {2: "bilinear", 3: "trilinear"}.get(dims)
    if mode == "linear":
        mode = linear or "linear"
    if mode not in ("nearest", linear):
        raise BrainVQInputError("mode", f"must be 'nearest' or 'linear' ({linear}) for {dims}D maps, got {mode!r}")
    x = latent_map.float()
    if x.dim() == dims + 1:
        x = x[:, None]
    if x.dim() != dims + 2:
        raise BrainVQInputError("latent_map", f"expected (B, *latent) or (B, C, *latent), got {tuple(x.shape)}")
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(x, size=spatial_size, mode=mode, **kwargs)


@torch.no_grad()
def anomaly_map(
    inputs: torch.Tensor,
    vqvae: nn.Module | None,
    prior: AutoregressivePrior,
    class_labels: torch.Tensor | None = None,
    mode: str = "nearest",
    upsample: bool = True,
) -> torch.Tensor:
    """Per-token NLL of the images' codes under the prior, upsampled to the image (higher = more anomalous).

    The one implementation of NLL maps: :meth:`AutoregressivePriorInferer.get_likelihood
    <brainvq_monai.inferers.prior_inferer.AutoregressivePriorInferer.get_likelihood>` and ``get_anomaly_map``
    delegate here. The NLL is :func:`~brainvq_monai.inferers.sampling.token_nll` (one causal forward pass, which gives
    every position's conditional at once, so no decoding walk is needed).

    Args:
        inputs: ``(B, C, *image)`` float images; with ``upsample=False`` also ``(B, *latent)`` integer code maps.
        vqvae: the VQ-VAE (``index_quantize``); used in eval mode. May be ``None`` for code-map inputs.
        prior: the prior; used in eval mode.
        class_labels: optional ``(B,)`` labels (or one label) for a conditional prior, e.g. the normal class.
        mode: upsampling mode, see :func:`upsample_map`.
        upsample: ``False`` returns the latent map ``(B, *latent)`` instead.

    Returns:
        ``(B, 1, *image)`` NLL map in nats, or ``(B, *latent)`` when ``upsample=False``.

    Raises:
        BrainVQInputError: float images without a VQ-VAE, code maps to upsample, an unknown ``mode``, or a prior
            without a likelihood (the DCGAN prior).
    """
    require_likelihood(prior, "anomaly maps")
    if upsample and not (isinstance(inputs, torch.Tensor) and inputs.is_floating_point()):
        raise BrainVQInputError("inputs", "expected float images (B, C, *image) to upsample the map to")
    codes = _codes_of(inputs, vqvae)
    with eval_mode(prior):
        nll = token_nll(prior, codes.to(device_of(prior)), class_labels)
    return upsample_map(nll, inputs.shape[2:], mode) if upsample else nll


@torch.no_grad()
def heal_codes(
    prior: AutoregressivePrior,
    codes: torch.Tensor,
    threshold: float,
    class_labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | int | None = None,
    use_cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replaces the codes that are unlikely given the healed prefix by draws from the prior.

    :func:`~brainvq_monai.inferers.decoding.walk_codes` with the
    :class:`~brainvq_monai.inferers.decoding.KeepUnlessUnlikely` choice: the positions are visited in
    ``prior.generation_order``; at each one the prior's conditional ``p(. | healed prefix)`` (from its incremental
    decoder, or a full forward pass when ``use_cache=False``) is evaluated, the code is kept when
    ``p(code) > threshold`` and otherwise replaced by a draw (:func:`~brainvq_monai.inferers.decoding.draw_tokens`,
    one draw per map at every step, so the generator advances exactly as in
    :func:`~brainvq_monai.inferers.sampling.sample_codes`).
    Later positions condition on the healed codes. ``threshold=0`` keeps every code; ``threshold=1`` replaces every
    code, which is exactly sampling the prior with the same generator.

    Args:
        prior: the prior (used in eval mode).
        codes: ``(B, *latent)`` integer codes.
        threshold: probability in ``[0, 1]`` under which a code is resampled.
        class_labels: optional ``(B,)`` labels (or one label).
        temperature: temperature of the replacement draws (the keep test always uses the plain softmax).
        top_k: optional top-k truncation of the replacement draws.
        generator: ``torch.Generator`` on the prior's device, or an int seed.
        use_cache: use the prior's incremental decoder (fast, exact); ``False``: full forward passes.

    Returns:
        ``(healed codes (B, *latent) long, resampled (B, *latent) bool)`` on the prior's device.
    """
    require_likelihood(prior, "healing")
    gen = as_generator(generator, device_of(prior))
    choose = KeepUnlessUnlikely(threshold, temperature, top_k, generator=gen)
    with eval_mode(prior):
        return tuple(walk_codes(prior, codes, choose, class_labels, use_cache))


@torch.no_grad()
def heal(
    inputs: torch.Tensor,
    vqvae: nn.Module,
    prior: AutoregressivePrior,
    threshold: float,
    class_labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | int | None = None,
    use_cache: bool = True,
) -> HealResult:
    """Healed reconstruction: quantize, :func:`heal_codes`, decode with the VQ-VAE.

    Args:
        inputs: ``(B, C, *image)`` float images, or ``(B, *latent)`` integer codes.
        vqvae: the VQ-VAE (``index_quantize``, ``decode_samples``); used in eval mode.
        prior: the prior.
        threshold: see :func:`heal_codes`.
        class_labels: optional labels, e.g. the normal class for a conditional prior.
        temperature: temperature of the replacement draws.
        top_k: optional top-k truncation of the draws.
        generator: ``torch.Generator`` on the prior's device, or an int seed.
        use_cache: see :func:`heal_codes`.

    Returns:
        a :class:`HealResult` (healed image on the VQ-VAE's device).
    """
    require_likelihood(prior, "healing")
    codes = _codes_of(inputs, vqvae)
    healed, resampled = heal_codes(prior, codes, threshold, class_labels, temperature, top_k, generator, use_cache)
    with eval_mode(vqvae):
        image = vqvae.decode_samples(healed.to(device_of(vqvae)))
    return HealResult(image=image, codes=healed, resampled=resampled, original_codes=codes)


def residual_map(
    images: torch.Tensor,
    healed: torch.Tensor,
    resampled: torch.Tensor | None = None,
    sigma: float | None = None,
    mode: str = "nearest",
) -> torch.Tensor:
    """Pixel-level anomaly map ``|images - healed|``, optionally smoothed and restricted to resampled tokens.

    Args:
        images: ``(B, C, *image)`` inputs.
        healed: ``(B, C, *image)`` healed reconstructions (:func:`heal`).
        resampled: optional ``(B, *latent)`` mask of replaced tokens; the residual is multiplied by its upsampling.
        sigma: standard deviation (pixels) of a Gaussian smoothing of the residual (MONAI ``GaussianFilter``).
        mode: upsampling mode of ``resampled`` (see :func:`upsample_map`).

    Returns:
        ``(B, C, *image)`` float map.
    """
    if images.shape != healed.shape:
        raise BrainVQInputError("healed", f"shape {tuple(healed.shape)} differs from the images' {tuple(images.shape)}")
    res = (images.float() - healed.float().to(images.device)).abs()
    if sigma:
        from monai.networks.layers import GaussianFilter

        res = GaussianFilter(images.dim() - 2, float(sigma)).to(res.device)(res)
    if resampled is not None:
        res = res * upsample_map(resampled, images.shape[2:], mode).to(res.device)
    return res


def region_mask(
    spatial_size: Sequence[int], box: Sequence[float] | Sequence[Sequence[float]] = (0.3, 0.7)
) -> torch.Tensor:
    """A box mask ``(1, 1, *spatial_size)`` given as fractions of the image extent.

    Args:
        spatial_size: image spatial size.
        box: one ``(start, end)`` pair of fractions in ``[0, 1]`` for every dim, or one pair per dim. The default,
            the central 40% of each axis, covers the lateral ventricles of the (centred, brain-cropped) demo slices.

    Returns:
        bool mask.
    """
    spatial_size = tuple(int(s) for s in spatial_size)
    pairs = [tuple(box)] * len(spatial_size) if np.ndim(box) == 1 else [tuple(p) for p in box]  # type: ignore[arg-type]
    if len(pairs) != len(spatial_size) or any(len(p) != 2 or not 0 <= p[0] < p[1] <= 1 for p in pairs):
        raise BrainVQInputError(
            "box", f"expected (start, end) fractions with 0 <= start < end <= 1, one pair or {len(spatial_size)}"
        )
    mask = torch.zeros(spatial_size, dtype=torch.bool)
    index = tuple(
        slice(int(math.floor(a * n)), max(int(math.ceil(b * n)), 1)) for (a, b), n in zip(pairs, spatial_size)
    )
    mask[index] = True
    return mask[None, None]


def masked_mean(maps: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image mean of ``maps`` ``(B, C, *S)`` inside ``mask`` (broadcastable bool), NaN where the mask is empty."""
    if mask is None:
        return maps.float().flatten(1).mean(1)
    weights = mask.to(maps.device).expand_as(maps).float().flatten(1)
    total = weights.sum(1)
    out = (maps.float().flatten(1) * weights).sum(1) / total.clamp_min(1)
    return torch.where(total > 0, out, torch.full_like(out, float("nan")))


def likelihood_threshold(nll: torch.Tensor, quantile: float) -> float:
    """Healing threshold from reference NLLs: codes less likely than the ``quantile`` of reference tokens are resampled.

    Args:
        nll: NLL values (nats) of tokens of reference (e.g. validation, normal-class) images, any shape.
        quantile: in ``[0, 1]``; e.g. ``0.95`` resamples about 5% of the tokens of reference-like images.

    Returns:
        the probability ``exp(-q)``, ``q`` the quantile of ``nll``.
    """
    if not 0.0 <= quantile <= 1.0:
        raise BrainVQInputError("quantile", f"must lie in [0, 1], got {quantile}")
    values = nll.detach().float().flatten().cpu()
    if values.numel() == 0:
        raise BrainVQInputError("nll", "no reference values")
    return float(torch.exp(-torch.quantile(values, float(quantile))))


def auroc(
    scores: Sequence[float] | np.ndarray | torch.Tensor, labels: Sequence[int] | np.ndarray | torch.Tensor
) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (1 = positive, e.g. AD), ties counted half.

    Args:
        scores: per-item scores (higher = more likely positive).
        labels: per-item 0/1 labels.

    Returns:
        the probability that a random positive scores above a random negative.
    """
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels).astype(int)
    if s.shape != y.shape or s.ndim != 1:
        raise BrainVQInputError("scores", f"expected 1D scores and labels of equal length, got {s.shape}, {y.shape}")
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0 or not set(np.unique(y)) <= {0, 1}:
        raise BrainVQInputError("labels", "need 0/1 labels with both classes present")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())
