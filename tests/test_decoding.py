"""The one decoding walk: sampling, greedy decoding and healing are the same walk with different token choices.

``_old_sample_codes`` and ``_old_heal_codes`` are the two walks as they were written before they were merged (the
loops of ``inferers/sampling.py`` and ``inferers/anomaly.py``), kept here as references: the merged walk must give
bit-identical codes for the same seed.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from brainvq_monai.inferers import (
    ArgmaxToken,
    FullForwardDecoder,
    KeepUnlessUnlikely,
    SampleToken,
    draw_tokens,
    heal_codes,
    sample_codes,
    walk_codes,
)
from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer
from brainvq_monai.networks.nets import BlockTransformerPrior
from brainvq_monai.networks.nets.gated_pixelcnn import GatedPixelCNN
from brainvq_monai.networks.nets.prior import AutoregressivePrior
from brainvq_monai.networks.nets.transformer_prior import TransformerPrior
from brainvq_monai.utils.errors import BrainVQInputError

K = 6
SHAPE = (4, 4)
KINDS = ["pixelcnn", "transformer", "block"]


def _prior(kind: str, num_classes: int | None = 2) -> AutoregressivePrior:
    torch.manual_seed(3)
    small = {"attn_layers_dim": 16, "attn_layers_depth": 1, "attn_layers_heads": 2}
    if kind == "pixelcnn":
        return GatedPixelCNN(2, K, num_classes, channels=8, num_layers=2, kernel_size=3).eval()
    if kind == "transformer":
        return TransformerPrior(2, K, SHAPE, num_classes, ordering_type="s_curve", **small).eval()
    return BlockTransformerPrior(2, K, SHAPE, num_classes, **small).eval()


@torch.no_grad()
def _old_sample_codes(prior, num_samples, spatial_shape, labels, temperature, top_k, generator, use_cache, top_p):
    """The sampling walk of ``inferers/sampling.py`` before the merge (verbatim loop)."""
    labels = prior.check_class_labels(labels, num_samples)
    order = prior.generation_order(spatial_shape).tolist()
    codes = torch.zeros(num_samples, len(order), dtype=torch.long)
    decoder = prior.incremental_decoder(num_samples, spatial_shape, labels) if use_cache else None
    for t in range(len(order)):
        if decoder is not None:
            logits = decoder.step(codes, t)
        else:
            logits = prior(codes.view(num_samples, *spatial_shape), labels).flatten(2)[:, :, order[t]]
        codes[:, order[t]] = draw_tokens(logits, temperature, top_k, generator, top_p)
    return codes.view(num_samples, *spatial_shape)


@torch.no_grad()
def _old_heal_codes(prior, codes, threshold, labels, temperature, top_k, generator, use_cache):
    """The healing walk of ``inferers/anomaly.py`` before the merge (verbatim loop)."""
    batch, shape = codes.shape[0], tuple(codes.shape[1:])
    flat = codes.reshape(batch, -1).long().clone()
    resampled = torch.zeros_like(flat, dtype=torch.bool)
    log_threshold = math.log(threshold) if threshold > 0 else -math.inf
    labels = prior.check_class_labels(labels, batch)
    order = prior.generation_order(shape).tolist()
    decoder = prior.incremental_decoder(batch, shape, labels) if use_cache else None
    for t, pos in enumerate(order):
        if decoder is not None:
            logits = decoder.step(flat, t)
        else:
            logits = prior(flat.view(batch, *shape), labels).flatten(2)[:, :, pos]
        log_p = F.log_softmax(logits.float(), dim=-1).gather(1, flat[:, pos : pos + 1]).squeeze(1)
        drawn = draw_tokens(logits, temperature, top_k, generator)
        replace = ~(log_p > log_threshold)
        flat[:, pos] = torch.where(replace, drawn, flat[:, pos])
        resampled[:, pos] = replace
    return flat.view(batch, *shape), resampled.view(batch, *shape)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.8, 3, None), (1.2, None, 0.7)])
def test_sample_choice_equals_the_old_sampling_walk(kind, use_cache, temperature, top_k, top_p):
    prior = _prior(kind)
    labels = torch.tensor([1, 0, 1])
    old = _old_sample_codes(prior, 3, SHAPE, labels, temperature, top_k, _gen(11), use_cache, top_p)
    start = torch.zeros(3, *SHAPE, dtype=torch.long)
    walked = walk_codes(prior, start, SampleToken(temperature, top_k, top_p, _gen(11)), labels, use_cache)
    assert torch.equal(walked.codes, old) and bool(walked.replaced.all())
    assert torch.equal(
        sample_codes(prior, 3, SHAPE, labels, temperature, top_k, _gen(11), use_cache, False, top_p), old
    )
    assert not start.any()  # the walk does not write into its input


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("threshold", [0.15, 0.18])  # near 1/K: random priors are nearly uniform
def test_keep_unless_unlikely_equals_the_old_healing_walk(kind, use_cache, threshold):
    prior = _prior(kind)
    codes = torch.randint(0, K, (3, *SHAPE), generator=_gen(2))
    labels = torch.tensor([0, 1, 0])
    old_codes, old_resampled = _old_heal_codes(prior, codes, threshold, labels, 0.9, 4, _gen(5), use_cache)
    healed, resampled = heal_codes(prior, codes, threshold, labels, 0.9, 4, generator=5, use_cache=use_cache)
    assert torch.equal(healed, old_codes) and torch.equal(resampled, old_resampled)
    assert 0 < int(resampled.sum()) < resampled.numel()  # the threshold keeps some codes and replaces others


@pytest.mark.parametrize("kind", KINDS)
def test_healing_threshold_one_is_sampling_and_threshold_zero_keeps_the_codes(kind):
    prior = _prior(kind)
    codes = torch.randint(0, K, (3, *SHAPE), generator=_gen(4))
    labels = torch.tensor([1, 1, 0])
    sampled = sample_codes(prior, 3, SHAPE, labels, generator=_gen(9))
    healed, resampled = heal_codes(prior, codes, 1.0, labels, generator=_gen(9))
    assert torch.equal(healed, sampled) and bool(resampled.all())
    kept, none = heal_codes(prior, codes, 0.0, labels, generator=_gen(9))
    assert torch.equal(kept, codes) and not none.any()
    # the same through the walk itself
    walked = walk_codes(prior, codes, KeepUnlessUnlikely(1.0, generator=_gen(9)), labels)
    assert torch.equal(walked.codes, sampled)


@pytest.mark.parametrize("kind", KINDS)
def test_argmax_choice_is_greedy_decoding(kind):
    prior = _prior(kind, num_classes=None)
    start = torch.zeros(2, *SHAPE, dtype=torch.long)
    greedy = walk_codes(prior, start, ArgmaxToken()).codes
    assert torch.equal(greedy, sample_codes(prior, 2, SHAPE, temperature=0.0))
    assert torch.equal(greedy, walk_codes(prior, start, ArgmaxToken(), use_cache=False).codes)
    # a fixed point: every code is the most likely one given the codes before it
    assert torch.equal(prior(greedy).argmax(1), greedy)


@pytest.mark.parametrize("kind", KINDS)
def test_full_forward_decoder_is_the_reference_of_the_incremental_one(kind):
    prior = _prior(kind)
    codes = torch.randint(0, K, (2, *SHAPE), generator=_gen(6)).view(2, -1)
    labels = torch.tensor([0, 1])
    fast = prior.incremental_decoder(2, SHAPE, labels)
    slow = FullForwardDecoder(prior, SHAPE, labels)
    with torch.no_grad():
        for t in range(codes.shape[1]):
            torch.testing.assert_close(fast.step(codes, t), slow.step(codes, t), atol=1e-5, rtol=1e-5)


def test_inferer_and_checks_use_the_same_walk():
    prior = _prior("transformer")
    inferer = AutoregressivePriorInferer()
    old = _old_sample_codes(prior, 2, SHAPE, torch.tensor([0, 1]), 1.0, None, _gen(3), True, None)
    assert torch.equal(inferer.sample_codes(prior, 2, SHAPE, torch.tensor([0, 1]), generator=3), old)
    with pytest.raises(BrainVQInputError, match="threshold"):
        KeepUnlessUnlikely(1.5)
    with pytest.raises(BrainVQInputError, match="codes"):
        walk_codes(prior, torch.zeros(2, 16, dtype=torch.long), ArgmaxToken())
    with pytest.raises(BrainVQInputError, match="codes"):
        walk_codes(prior, torch.zeros(2, *SHAPE), ArgmaxToken())
