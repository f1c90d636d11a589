"""Batched device-side augmentation: RandBrainAugment and AugmentedPrepareBatch."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from monai.transforms import AdjustContrast, Affine, RandBiasField
from torch.nn import functional as F

from brainvq_monai.transforms.batch import AugmentedPrepareBatch, RandBrainAugment
from brainvq_monai.transforms.pipeline import BRAIN_AUGMENT, BrainAugmentParams, brain_transforms
from brainvq_monai.utils.errors import BrainVQInputError

OFF = {"affine_prob": 0.0, "contrast_prob": 0.0, "bias_prob": 0.0, "noise_prob": 0.0}


def _brains(batch: int, spatial: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Smooth blobs in [0, 1] with a zero background, like fitted brain images."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, *spatial, generator=g)
    pool = F.avg_pool2d if len(spatial) == 2 else F.avg_pool3d
    x = pool(x, 5, 1, 2)
    coords = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in spatial], indexing="ij")
    mask = (sum(c**2 for c in coords) < 0.6).float()
    x = x * mask
    return x / x.amax(dim=tuple(range(1, x.ndim)), keepdim=True)


@pytest.mark.parametrize("spatial", [(24, 32), (12, 16, 14)])
def test_shape_dtype_range_and_input_untouched(spatial):
    x = _brains(6, spatial)
    before = x.clone()
    y = RandBrainAugment(affine_prob=1.0, contrast_prob=1.0, bias_prob=1.0, noise_prob=1.0).set_random_state(0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert y.data_ptr() != x.data_ptr()
    assert torch.equal(x, before)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not torch.allclose(y, x, atol=1e-3)


def test_half_precision_and_channels_last_kept():
    x = _brains(4, (16, 16)).repeat(1, 2, 1, 1).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    y = RandBrainAugment().set_random_state(1)(x)
    assert y.dtype == torch.bfloat16 and y.stride() == x.stride()
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    x3 = _brains(2, (8, 10, 12)).repeat(1, 2, 1, 1, 1).contiguous(memory_format=torch.channels_last_3d)
    y3 = RandBrainAugment().set_random_state(1)(x3)
    assert y3.is_contiguous(memory_format=torch.channels_last_3d) and not y3.is_contiguous()
    # the memory format does not change the values
    assert torch.allclose(y3, RandBrainAugment().set_random_state(1)(x3.contiguous()), atol=1e-6)


def test_reproducible_with_seed_and_generator():
    x = _brains(8, (20, 20))
    a = RandBrainAugment().set_random_state(7)
    y1, y2 = a(x), a(x)
    assert not torch.equal(y1, y2)  # the state advances
    b = RandBrainAugment().set_random_state(7)
    assert torch.equal(b(x), y1) and torch.equal(b(x), y2)
    c = RandBrainAugment().set_random_state(generator=torch.Generator().manual_seed(7))
    assert torch.equal(c(x), y1)
    assert not torch.equal(RandBrainAugment().set_random_state(8)(x), y1)


def test_identity_when_all_probabilities_zero():
    for spatial in [(16, 20), (8, 10, 12)]:
        x = _brains(3, spatial)
        y = RandBrainAugment(**OFF)(x)
        assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()


def test_per_sample_independence():
    # one sample repeated: every copy must get its own parameters
    x = _brains(1, (32, 32)).repeat(8, 1, 1, 1)
    y = RandBrainAugment(affine_prob=1.0, contrast_prob=0.0, bias_prob=0.0, noise_prob=0.0).set_random_state(0)(x)
    flat = y.flatten(1)
    dists = torch.cdist(flat, flat)
    assert float(dists[~torch.eye(8, dtype=torch.bool)].min()) > 1e-3
    # probabilities apply per sample: with p = 0.5 some samples are untouched, others not
    y = RandBrainAugment(affine_prob=0.5, contrast_prob=0.0, bias_prob=0.0, noise_prob=0.0).set_random_state(0)(
        x.repeat(4, 1, 1, 1)
    )
    same = (y == x[:1]).flatten(1).all(1)
    assert 0 < int(same.sum()) < 32


def test_application_rates_match_probabilities():
    x = _brains(1, (8, 8)).repeat(4000, 1, 1, 1)
    y = RandBrainAugment(**{**OFF, "noise_prob": BRAIN_AUGMENT.noise_prob}, clip_range=(-9.0, 9.0))
    y = y.set_random_state(3)(x)
    rate = float((y != x).flatten(1).any(1).float().mean())
    assert abs(rate - BRAIN_AUGMENT.noise_prob) < 0.03


def test_noise_statistics():
    x = torch.full((64, 1, 32, 32), 0.5)
    y = RandBrainAugment(**{**OFF, "noise_prob": 1.0}, noise_std=0.05, noise_sample_std=False).set_random_state(0)(x)
    assert abs(float((y - x).std()) - 0.05) < 0.002 and abs(float((y - x).mean())) < 0.002
    # MONAI's default draws each sample's std from U(0, std): the pooled std is std / sqrt(3)
    y = RandBrainAugment(**{**OFF, "noise_prob": 1.0}, noise_std=0.05).set_random_state(0)(x.repeat(8, 1, 1, 1))
    per_sample = (y - 0.5).flatten(1).std(1)
    assert abs(float((y - 0.5).std()) - 0.05 / math.sqrt(3)) < 0.003
    assert float(per_sample.max()) <= 0.052 and float(per_sample.min()) < 0.02


def test_affine_matches_monai():
    for spatial, angles, scales in [
        ((24, 36), [0.3], [1.04, 0.96]),
        ((12, 18, 16), [0.1, -0.08, 0.05], [1.0, 1.05, 0.97]),
    ]:
        x = _brains(1, spatial)
        ref = Affine(rotate_params=angles, scale_params=scales, padding_mode="zeros", image_only=True)(x[0])
        ours = RandBrainAugment.warp(x, torch.tensor([angles]), torch.tensor([scales]))[0]
        assert torch.allclose(torch.as_tensor(ref), ours, atol=1e-4)


def test_contrast_and_bias_field_match_monai():
    x = _brains(1, (16, 16)) * 0.8 + 0.1
    a = RandBrainAugment(**{**OFF, "contrast_prob": 1.0}, gamma_range=(1.2, 1.2))
    ref = AdjustContrast(1.2)(x[0])
    assert torch.allclose(a(x)[0], torch.as_tensor(ref).clamp(0, 1), atol=1e-5)
    coeffs = np.random.default_rng(0).uniform(0.0, 0.05, 20)
    ref_field = np.exp(RandBiasField()._generate_random_field((6, 7, 8), 3, coeffs.tolist()))
    ours = RandBrainAugment.bias_field(torch.tensor(coeffs[None], dtype=torch.float32), (6, 7, 8), 3)[0]
    assert np.allclose(ours.numpy(), ref_field, atol=1e-5)


def test_params_shared_with_brain_transforms():
    xf = brain_transforms(2, (16, 16), train=True)
    names = {type(t).__name__: t for t in xf.transforms}
    assert names["RandAffined"].prob == BRAIN_AUGMENT.affine_prob
    assert names["RandAdjustContrastd"].prob == BRAIN_AUGMENT.contrast_prob
    assert names["RandGaussianNoised"].rand_gaussian_noise.std == BRAIN_AUGMENT.noise_std
    custom = dataclasses.replace(BRAIN_AUGMENT, noise_prob=0.9)
    xf = brain_transforms(2, (16, 16), train=True, augment_params=custom)
    assert next(t for t in xf.transforms if type(t).__name__ == "RandGaussianNoised").prob == 0.9
    assert RandBrainAugment().params is BRAIN_AUGMENT


def test_bad_inputs():
    with pytest.raises(BrainVQInputError, match="probability"):
        BrainAugmentParams(noise_prob=1.5)
    with pytest.raises(BrainVQInputError, match="unknown"):
        RandBrainAugment(noise_probability=0.5)
    with pytest.raises(BrainVQInputError, match="spatial"):
        RandBrainAugment()(torch.zeros(2, 8, 8))
    with pytest.raises(BrainVQInputError, match="floating"):
        RandBrainAugment()(torch.zeros(2, 1, 8, 8, dtype=torch.long))


def test_augmented_prepare_batch():
    batch = {"image": _brains(4, (16, 16)), "label": torch.tensor([0, 1, 0, 1])}
    prep = AugmentedPrepareBatch(RandBrainAugment(**{**OFF, "noise_prob": 1.0}).set_random_state(0))
    images, labels = prep(batch, torch.device("cpu"), non_blocking=True)
    assert images.shape == (4, 1, 16, 16) and torch.equal(labels, batch["label"])
    assert not torch.equal(images, batch["image"])
    plain, _ = AugmentedPrepareBatch(RandBrainAugment(**OFF))(batch, "cpu")
    assert torch.equal(plain, batch["image"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_paths():
    x = _brains(8, (32, 32))
    before = x.clone()
    prep = AugmentedPrepareBatch(RandBrainAugment().set_random_state(0))
    images, _ = prep({"image": x.pin_memory()}, torch.device("cuda"), non_blocking=True)
    assert images.is_cuda and images.shape == x.shape and float(images.min()) >= 0 and float(images.max()) <= 1
    assert torch.equal(x, before)
    a, b = RandBrainAugment().set_random_state(5), RandBrainAugment().set_random_state(5)
    x3 = _brains(2, (16, 20, 16)).cuda().to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
    y3 = a(x3)
    assert torch.equal(y3, b(x3)) and y3.dtype == torch.bfloat16
    assert y3.is_contiguous(memory_format=torch.channels_last_3d)
    # the same deterministic pieces agree with the CPU
    on = RandBrainAugment(**{**OFF, "affine_prob": 1.0})
    angles, scales = torch.tensor([[0.1]]), torch.tensor([[1.03, 0.98]])
    assert torch.allclose(
        on.warp(x[:1].cuda(), angles.cuda(), scales.cuda()).cpu(), on.warp(x[:1], angles, scales), atol=1e-5
    )
    with pytest.raises(BrainVQInputError, match="generator"):
        RandBrainAugment().set_random_state(generator=torch.Generator())(x.cuda())
