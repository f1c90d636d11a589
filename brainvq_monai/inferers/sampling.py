"""Exact autoregressive sampling of code maps, shared by every prior."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from brainvq_monai.networks.nets.prior import AutoregressivePrior

__all__ = ["draw_tokens", "sample_codes", "token_nll"]


def draw_tokens(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """Draws one token per row of ``logits`` ``(B, K)``.

    Args:
        logits: unnormalised scores ``(B, K)``.
        temperature: softmax temperature; ``0`` means greedy (argmax).
        top_k: keep only the ``top_k`` most likely tokens before sampling.
        generator: random generator, for reproducible draws.
        top_p: nucleus sampling: keep the most likely tokens whose probabilities (after temperature and top-k) add
            up to at least ``top_p`` (the most likely token is always kept); ``None`` or ``1``: no truncation.

    Returns:
        ``(B,)`` long tensor of token indices.
    """
    logits = logits.float()
    if temperature < 0:
        raise ValueError(f"temperature: must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k: must be >= 1, got {top_k}")
        k = min(int(top_k), logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1:
        if not 0 < top_p:
            raise ValueError(f"top_p: must be in (0, 1], got {top_p}")
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # mass before a token already reaches top_p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample_codes(
    prior: AutoregressivePrior,
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

    The cached path (``use_cache=True``) calls :meth:`AutoregressivePrior.incremental_decoder`; the naive path
    re-runs ``prior.forward`` over the whole map at every position. Both draw from the same logits with the same
    generator, so for equal seeds they return equal codes.

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

    Returns:
        ``(num_samples, *spatial_shape)`` long tensor of codes.
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if len(spatial_shape) != prior.spatial_dims:
        raise ValueError(f"spatial_shape: expected {prior.spatial_dims} dims, got {spatial_shape}")
    device = next(prior.parameters()).device
    labels = prior.check_class_labels(class_labels, num_samples)
    labels = None if labels is None else labels.to(device)
    order = prior.generation_order(spatial_shape).tolist()
    codes = torch.zeros(num_samples, len(order), dtype=torch.long, device=device)
    decoder = prior.incremental_decoder(num_samples, spatial_shape, labels) if use_cache else None
    steps = range(len(order))
    if verbose:
        from monai.utils import optional_import

        tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
        steps = tqdm(steps, desc="sampling", leave=False) if has_tqdm else steps
    for t in steps:
        if decoder is not None:
            logits = decoder.step(codes, t)
        else:
            full = prior(codes.view(num_samples, *spatial_shape), labels)
            logits = full.flatten(2)[:, :, order[t]]
        codes[:, order[t]] = draw_tokens(logits, temperature, top_k, generator, top_p)
    return codes.view(num_samples, *spatial_shape)


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
    """
    labels = prior.check_class_labels(class_labels, codes.shape[0])
    logits = prior(codes, labels)
    return F.cross_entropy(logits.float(), codes, reduction="none")
