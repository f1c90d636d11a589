"""Which engines and metrics train, validate and evaluate a prior: the one place that tells the priors apart.

The bundle's ``train_prior.json`` and ``evaluate.json`` serve all three priors (``--prior transformer``,
``pixelcnn`` or ``dcgan``). The autoregressive priors train by cross-entropy and are scored by their likelihood; the
DCGAN prior trains adversarially and, having no likelihood, is scored by how far its generated code maps are from
real ones. The configs call these functions with the built network, so a prior switch is one override.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine
from ignite.metrics import Metric

from brainvq_monai.engines.dcgan_trainer import DCGANTrainer
from brainvq_monai.engines.evaluators import GeneratedCodesEvaluator, PriorEvaluator
from brainvq_monai.engines.prior_trainer import PriorTrainer
from brainvq_monai.engines.trainer import BrainVQTrainer
from brainvq_monai.engines.utils import lower_is_better, unwrap
from brainvq_monai.metrics import CodeMapDivergence, CodesUsed, PriorNLL

__all__ = [
    "has_likelihood",
    "key_metric_score",
    "likelihood_note",
    "prior_additional_metrics",
    "prior_evaluator",
    "prior_key_metric",
    "prior_metric_cmp_fn",
    "prior_trainer",
]


def has_likelihood(network: torch.nn.Module) -> bool:
    """Whether a prior (possibly DDP-wrapped) defines a likelihood (autoregressive priors do, the DCGAN does not).

    Args:
        network: the prior.

    Returns:
        ``network.has_likelihood`` (``True`` for networks without the attribute).
    """
    return bool(getattr(unwrap(network), "has_likelihood", True))


def likelihood_note(network: torch.nn.Module) -> str:
    """One line for metric records: what the prior's scores are.

    Args:
        network: the prior.

    Returns:
        ``"NLL under the prior"`` or a note that the prior has no likelihood and what is reported instead.
    """
    if has_likelihood(network):
        return "NLL under the prior"
    return (
        "none: an adversarial prior has no likelihood; code_js (generated vs real code maps) and the generation "
        "metrics (brainvq report) score it"
    )


def prior_trainer(
    network: torch.nn.Module,
    autoencoder: torch.nn.Module | None = None,
    adversarial: dict[str, Any] | None = None,
    **kwargs: Any,
) -> BrainVQTrainer:
    """The trainer of a prior: :class:`PriorTrainer` (cross-entropy) or, for the DCGAN, :class:`DCGANTrainer`.

    Args:
        network: the prior.
        autoencoder: the VQ-VAE (the DCGAN copies its codebook; unused by the autoregressive priors).
        adversarial: arguments of :class:`DCGANTrainer` only (e.g. ``d_steps``, ``grad_clip_norm``), overriding
            ``kwargs`` for the DCGAN.
        kwargs: arguments of both trainers (``device``, ``max_epochs``, ``train_data_loader``, ``optimizer``,
            ``grad_clip_norm``, ``amp``, ``inferer``, ``train_handlers``, ...).

    Returns:
        the trainer.
    """
    if has_likelihood(network):
        return PriorTrainer(network=network, **kwargs)
    return DCGANTrainer(network=network, autoencoder=autoencoder, **{**kwargs, **(adversarial or {})})


def prior_evaluator(network: torch.nn.Module, seed: int = 0, **kwargs: Any) -> PriorEvaluator | GeneratedCodesEvaluator:
    """The evaluator of a prior on cached code maps: NLL (:class:`PriorEvaluator`) or generated vs real codes.

    Args:
        network: the prior.
        seed: seed of the generated maps (:class:`GeneratedCodesEvaluator` only).
        kwargs: arguments of both evaluators (``device``, ``val_data_loader``, ``inferer``, ``key_val_metric``, ...).

    Returns:
        the evaluator.
    """
    if has_likelihood(network):
        return PriorEvaluator(network=network, **kwargs)
    return GeneratedCodesEvaluator(network=network, seed=seed, **kwargs)


def prior_key_metric(network: torch.nn.Module, prefix: str) -> dict[str, Metric]:
    """The key metric of a prior's validation or test (lower is better): ``{prefix}_nll`` or ``{prefix}_code_js``.

    Args:
        network: the prior.
        prefix: ``"val"`` or ``"test"``.

    Returns:
        ``{name: metric}`` with one entry.
    """
    if has_likelihood(network):
        return {f"{prefix}_nll": PriorNLL(unit="nats_per_token")}
    return {f"{prefix}_code_js": CodeMapDivergence(unwrap(network).num_embeddings)}


def prior_additional_metrics(network: torch.nn.Module, prefix: str, dims_per_token: float) -> dict[str, Metric]:
    """Further metrics: bits/dim (likelihood priors) or the number of distinct codes generated (DCGAN).

    Args:
        network: the prior.
        prefix: ``"val"`` or ``"test"``.
        dims_per_token: image pixels (voxels) per code, for bits/dim.

    Returns:
        ``{name: metric}``.
    """
    if has_likelihood(network):
        return {f"{prefix}_bits_per_dim": PriorNLL(unit="bits_per_dim", dims_per_token=float(dims_per_token))}
    k = unwrap(network).num_embeddings
    return {f"{prefix}_generated_codes_used": CodesUsed(k, output_transform=lambda out: out["pred"])}


def _latest_is_best(current: float, prev: float) -> bool:
    return True


def prior_metric_cmp_fn(network: torch.nn.Module) -> Callable[[float, float], bool]:
    """``metric_cmp_fn`` of a prior's validation: which epoch's weights the run keeps as ``models/model.pt``.

    A likelihood prior keeps its lowest validation NLL (:func:`~brainvq_monai.engines.lower_is_better`). A GAN keeps
    its latest weights, as DCGAN practice does: its code JS is a monitor, not a selector. Measured on the demo cohort,
    the lowest code JS came after 7 epochs, from a generator of blocky noise that hedges over many codes, while the
    later, brain-shaped generators scored worse (docs/dcgan.md).

    Args:
        network: the prior.

    Returns:
        the comparison ``(current, best) -> is this the new best``.
    """
    return lower_is_better if has_likelihood(network) else _latest_is_best


def key_metric_score(engine: Engine) -> float:
    """Early-stopping score of a prior's evaluator (higher is better).

    Args:
        engine: a MONAI evaluator (``state.key_metric_name`` set).

    Returns:
        minus the key metric (a lower-is-better NLL) for a likelihood prior; for a GAN the epoch, which always
        improves, so a GAN trains its whole budget (see :func:`prior_metric_cmp_fn`).
    """
    if not has_likelihood(engine.network):
        return float(engine.state.epoch)
    return -float(engine.state.metrics[engine.state.key_metric_name])
