"""Sampling of code maps, shared by every prior.

For an autoregressive prior, sampling is :func:`~brainvq_monai.inferers.decoding.walk_codes` with the
:class:`~brainvq_monai.inferers.decoding.SampleToken` choice; :func:`draw_tokens` lives in
:mod:`brainvq_monai.inferers.decoding` and is re-exported here. A prior that generates whole maps at once (the DCGAN
prior, ``sample_logits``) is sampled by one generator pass and a :func:`draw_tokens` draw at every position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from brainvq_monai.inferers.decoding import SampleToken, draw_tokens, walk_codes
from brainvq_monai.networks.nets.prior import AutoregressivePrior, CodeMapPrior, require_likelihood

__all__ = ["draw_tokens", "sample_codes", "token_nll"]


@torch.no_grad()
def sample_codes(
    prior: CodeMapPrior,
    num_samples: int,
    spatial_shape: Sequence[int],
    class_labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    verbose: bool = False,
    top_p: float | None = None,
) -> torch.Tensor:
    """Samples ``num_samples`` code maps from ``prior``.

    :func:`~brainvq_monai.inferers.decoding.walk_codes` from an all-zero map with the
    :class:`~brainvq_monai.inferers.decoding.SampleToken` choice. The cached path (``use_cache=True``) calls
    :meth:`AutoregressivePrior.incremental_decoder`; the naive path re-runs ``prior.forward`` over the whole map at
    every position. Both draw from the same logits with the same generator, so for equal seeds they return equal
    codes.

    Args:
        prior: the prior to sample.
        num_samples: number of code maps.
        spatial_shape: latent spatial shape, e.g. ``(32, 32)``.
        class_labels: optional ``(num_samples,)`` labels (or a single label) for a conditional prior.
        temperature: softmax temperature (``0``: greedy).
        top_k: optional top-k truncation.
        generator: random generator for reproducible sampling; must live on the prior's device.
        use_cache: use the prior's incremental decoder (fast) instead of full forward passes.
        verbose: show a progress bar on stderr.
        top_p: optional nucleus truncation (see :func:`draw_tokens`).

    For a prior without a generation order (the DCGAN prior) the map comes from one pass of its generator and every
    position is drawn from its own logits with the same ``temperature``/``top_k``/``top_p``; ``use_cache`` does not
    apply.

    Returns:
        ``(num_samples, *spatial_shape)`` long tensor of codes.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if len(spatial_shape) != prior.spatial_dims:
        raise ValueError(f"spatial_shape: expected {prior.spatial_dims} dims, got {spatial_shape}")
    if not isinstance(prior, AutoregressivePrior):
        return _sample_whole_maps(prior, num_samples, spatial_shape, class_labels, temperature, top_k, generator, top_p)
    device = next(prior.parameters()).device
    start = torch.zeros(num_samples, *spatial_shape, dtype=torch.long, device=device)
    choose = SampleToken(temperature, top_k, top_p, generator)
    return walk_codes(prior, start, choose, class_labels, use_cache, verbose).codes


def _sample_whole_maps(
    prior: CodeMapPrior,
    num_samples: int,
    spatial_shape: tuple[int, ...],
    class_labels: torch.Tensor | None,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
    top_p: float | None,
) -> torch.Tensor:
    """Code maps of a prior that generates whole maps (``prior.sample_logits``), one draw per position."""
    if tuple(getattr(prior, "spatial_shape", spatial_shape)) != spatial_shape:
        raise ValueError(f"spatial_shape: this prior generates {list(prior.spatial_shape)} maps, got {spatial_shape}")
    logits = prior.sample_logits(num_samples, class_labels, generator)  # (B, K, *S)
    flat = logits.movedim(1, -1).reshape(-1, logits.shape[1])
    return draw_tokens(flat, temperature, top_k, generator, top_p).reshape(num_samples, *spatial_shape)


def token_nll(
    prior: AutoregressivePrior, codes: torch.Tensor, class_labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token negative log-likelihood (nats) of code maps under ``prior``.

    Args:
        prior: the prior.
        codes: ``(B, *S)`` long tensor.
        class_labels: optional ``(B,)`` labels.

    Returns:
        ``(B, *S)`` float tensor of ``-log p(code_p | earlier codes)``.

    Raises:
        BrainVQInputError: the prior has no likelihood (the DCGAN prior).
    """
    require_likelihood(prior, "token NLLs")
    labels = prior.check_class_labels(class_labels, codes.shape[0])
    logits = prior(codes, labels)
    return F.cross_entropy(logits.float(), codes, reduction="none")
