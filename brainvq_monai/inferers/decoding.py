"""One decoding walk over a prior's generation order, with a pluggable choice of the next token.

Sampling, greedy decoding and healing all visit the positions of a code map in
:meth:`~brainvq_monai.networks.nets.prior.AutoregressivePrior.generation_order`, ask the prior for the logits of the
next position given the codes chosen so far, and choose that position's code. Only the choice differs, so there is
one walk (:func:`walk_codes`) and one small object per choice:

* :class:`SampleToken`: a draw from the (temperature, top-k, top-p truncated) softmax (:func:`draw_tokens`);
* :class:`ArgmaxToken`: the most likely code;
* :class:`KeepUnlessUnlikely`: the code already there unless its probability is at most a threshold, otherwise a
  draw as :class:`SampleToken` makes (healing, Pinaya et al. 2022).

The logits come from the prior's exact :class:`~brainvq_monai.networks.nets.prior.IncrementalDecoder` (or, with
``use_cache=False``, from :class:`FullForwardDecoder`, the reference that re-runs the whole map), so every choice
sees exactly the conditional ``p(. | earlier codes)`` that ``prior.forward`` defines.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch.nn import functional as F

from brainvq_monai.networks.nets.prior import AutoregressivePrior, IncrementalDecoder
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = [
    "ArgmaxToken",
    "FullForwardDecoder",
    "KeepUnlessUnlikely",
    "SampleToken",
    "TokenChoice",
    "WalkResult",
    "draw_tokens",
    "walk_codes",
]


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


class TokenChoice(ABC):
    """How :func:`walk_codes` chooses the code of the next position from the prior's logits."""

    @abstractmethod
    def __call__(self, logits: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Chooses one code per map.

        Args:
            logits: ``(B, K)`` logits of the position, given the codes already chosen at earlier positions.
            current: ``(B,)`` long codes at the position before the choice (the input map's codes).

        Returns:
            ``(codes (B,) long, replaced (B,) bool or None)``: the chosen codes and where they were not kept from
            ``current`` (a replacement may happen to equal the old code); ``None`` means every code was replaced
            (it spares the walk a per-step write).
        """


class SampleToken(TokenChoice):
    """A draw from the prior's conditional, as :func:`draw_tokens` makes it (one draw per map at every step).

    Args:
        temperature: softmax temperature (``0``: greedy).
        top_k: optional top-k truncation.
        top_p: optional nucleus truncation.
        generator: random generator on the prior's device, for reproducible draws.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.generator = generator

    def __call__(self, logits: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Draws every map's code.

        Args:
            logits: ``(B, K)`` logits.
            current: ``(B,)`` codes before the choice (ignored).

        Returns:
            ``(drawn codes, None)``: every code is replaced.
        """
        return draw_tokens(logits, self.temperature, self.top_k, self.generator, self.top_p), None


class ArgmaxToken(TokenChoice):
    """The most likely code (greedy decoding; the same as :class:`SampleToken` with ``temperature=0``)."""

    def __call__(self, logits: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Takes every map's most likely code.

        Args:
            logits: ``(B, K)`` logits.
            current: ``(B,)`` codes before the choice (ignored).

        Returns:
            ``(argmax codes, None)``: every code is replaced.
        """
        return logits.float().argmax(dim=-1), None


class KeepUnlessUnlikely(TokenChoice):
    """Healing: keeps a code whose probability is above ``threshold``, otherwise replaces it by a draw.

    The keep test uses the plain softmax of the logits; the replacement is a :class:`SampleToken` draw, made at every
    step for every map (kept or not), so the generator advances exactly as in sampling: ``threshold=1`` replaces every
    code and equals sampling with the same generator, ``threshold=0`` keeps every code.

    Args:
        threshold: probability in ``[0, 1]``; codes with ``p(code) <= threshold`` are replaced.
        temperature: temperature of the replacement draws.
        top_k: optional top-k truncation of the replacement draws.
        top_p: optional nucleus truncation of the replacement draws.
        generator: random generator on the prior's device.

    Raises:
        BrainVQInputError: a threshold outside ``[0, 1]``.
    """

    def __init__(
        self,
        threshold: float,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        threshold = float(threshold)
        if not 0.0 <= threshold <= 1.0:
            raise BrainVQInputError("threshold", f"must be a probability in [0, 1], got {threshold}")
        self.threshold = threshold
        self.log_threshold = math.log(threshold) if threshold > 0 else -math.inf
        self.draw = SampleToken(temperature, top_k, top_p, generator)

    def __call__(self, logits: torch.Tensor, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keeps the likely codes of ``current`` and replaces the others by draws.

        Args:
            logits: ``(B, K)`` logits.
            current: ``(B,)`` codes to keep or replace.

        Returns:
            ``(healed codes, replaced mask)``.
        """
        log_p = F.log_softmax(logits.float(), dim=-1).gather(1, current[:, None]).squeeze(1)
        drawn, _ = self.draw(logits, current)
        replace = ~(log_p > self.log_threshold)
        return torch.where(replace, drawn, current), replace


class FullForwardDecoder(IncrementalDecoder):
    """The reference :class:`IncrementalDecoder`: runs ``prior.forward`` on the whole map at every step.

    Slow (one full pass per position) but obviously exact; the priors' own incremental decoders must match it.

    Args:
        prior: the prior.
        spatial_shape: latent spatial shape.
        class_labels: optional ``(B,)`` labels, already checked and on the prior's device.
    """

    def __init__(
        self, prior: AutoregressivePrior, spatial_shape: Sequence[int], class_labels: torch.Tensor | None = None
    ) -> None:
        self.prior = prior
        self.spatial_shape = tuple(int(s) for s in spatial_shape)
        self.class_labels = class_labels
        self.order = prior.generation_order(self.spatial_shape).tolist()

    def step(self, codes: torch.Tensor, t: int) -> torch.Tensor:
        """Logits of the ``t``-th generated position from a full forward pass.

        Args:
            codes: ``(B, N)`` flat codes.
            t: step index.

        Returns:
            ``(B, K)`` logits.
        """
        full = self.prior(codes.view(codes.shape[0], *self.spatial_shape), self.class_labels)
        return full.flatten(2)[:, :, self.order[t]]


class WalkResult(NamedTuple):
    """Output of :func:`walk_codes`.

    Attributes:
        codes: ``(B, *S)`` long codes after the walk.
        replaced: ``(B, *S)`` bool, where the choice did not keep the input code.
    """

    codes: torch.Tensor
    replaced: torch.Tensor


@torch.no_grad()
def walk_codes(
    prior: AutoregressivePrior,
    codes: torch.Tensor,
    choose: TokenChoice,
    class_labels: torch.Tensor | None = None,
    use_cache: bool = True,
    verbose: bool = False,
) -> WalkResult:
    """Visits the positions of ``codes`` in the prior's generation order and sets each one with ``choose``.

    At step ``t`` the logits of position ``generation_order[t]`` are computed from the codes chosen at the earlier
    positions (later positions of the input are ignored by the causal prior), ``choose`` picks the position's code
    and the walk moves on. The prior's training mode is left as it is (callers put it in eval mode).

    Args:
        prior: the prior.
        codes: ``(B, *S)`` integer codes to start from (e.g. zeros for sampling, an image's codes for healing); not
            modified.
        choose: the choice of the next token (:class:`SampleToken`, :class:`ArgmaxToken`,
            :class:`KeepUnlessUnlikely`, ...).
        class_labels: optional ``(B,)`` labels (or one label) for a conditional prior.
        use_cache: the prior's incremental decoder (fast, exact); ``False``: :class:`FullForwardDecoder`.
        verbose: show a progress bar on stderr.

    Returns:
        a :class:`WalkResult` on the prior's device.
    """
    if codes.is_floating_point() or codes.dim() != prior.spatial_dims + 1:
        raise BrainVQInputError("codes", f"expected integer codes (B, *latent) with {prior.spatial_dims} spatial dims")
    device = next(prior.parameters()).device
    batch, shape = codes.shape[0], tuple(int(s) for s in codes.shape[1:])
    labels = prior.check_class_labels(class_labels, batch)
    labels = None if labels is None else labels.to(device)
    flat = codes.reshape(batch, -1).long().to(device).clone()
    replaced = torch.zeros_like(flat, dtype=torch.bool)
    order = prior.generation_order(shape).tolist()
    decoder = prior.incremental_decoder(batch, shape, labels) if use_cache else FullForwardDecoder(prior, shape, labels)
    steps: Sequence[int] = range(len(order))
    if verbose:
        from monai.utils import optional_import

        tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
        steps = tqdm(steps, desc="decoding", leave=False) if has_tqdm else steps
    replaced_everywhere: list[int] = []  # positions whose choice replaced every map's code (marked once at the end)
    for t in steps:
        pos = order[t]
        tokens, mask = choose(decoder.step(flat, t), flat[:, pos])
        flat[:, pos] = tokens
        if mask is None:
            replaced_everywhere.append(pos)
        else:
            replaced[:, pos] = mask
    if replaced_everywhere:
        replaced[:, replaced_everywhere] = True
    return WalkResult(flat.view(batch, *shape), replaced.view(batch, *shape))
