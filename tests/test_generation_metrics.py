"""Generation metrics on cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from monai.metrics import SSIMMetric

from brainvq_monai.metrics.generation import (
    bootstrap_ci,
    brain_mask,
    evaluate_generation,
    frechet_distance,
    kernel_inception_distance,
    masked_ssim_psnr,
    mean_pairwise_ms_ssim,
    nearest_neighbour_ssim,
    pairwise_ms_ssim,
    prdc,
    ssim_map,
)
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.visualize.generation_tables import format_generation_table


def _gauss(n: int, d: int, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


def _blobs(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random 'brains': an ellipse with random texture on a zero background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    ellipse = ((xx / 0.7) ** 2 + (yy / 0.85) ** 2 < 1).float()
    tex = torch.nn.functional.avg_pool2d(torch.rand(n, 1, size, size, generator=g), 5, 1, 2)
    return (ellipse * (0.3 + 0.7 * tex)).clamp(0, 1)


def test_identical_sets_give_zero_distances_and_full_prdc():
    x = _gauss(200, 8)
    assert frechet_distance(x, x.clone()) == pytest.approx(0.0, abs=1e-6)
    kid, _ = kernel_inception_distance(x, x.clone(), num_subsets=10, subset_size=200)
    shifted_kid, _ = kernel_inception_distance(x, x + 1.0, num_subsets=10, subset_size=200)
    assert abs(kid) < 0.01 * shifted_kid
    r = prdc(x, x.clone(), k=5)
    assert r["precision"] == r["recall"] == r["coverage"] == 1.0
    assert r["density"] == pytest.approx(6 / 5)  # each point lies in its own ball and those of its k neighbours


def test_fid_and_kid_grow_with_shift_and_prdc_drops():
    real = _gauss(300, 8, seed=1)
    fids, kids, precisions, recalls = [], [], [], []
    for shift in (0.0, 0.5, 1.0, 2.0):
        fake = _gauss(300, 8, shift=shift, seed=2)
        fids.append(frechet_distance(real, fake))
        kids.append(kernel_inception_distance(real, fake, num_subsets=20, subset_size=100)[0])
        r = prdc(real, fake)
        precisions.append(r["precision"])
        recalls.append(r["recall"])
    assert fids == sorted(fids) and kids == sorted(kids)
    # a mean shift of s in each of 8 dims adds 8 s^2 to the FID
    assert fids[3] - fids[0] == pytest.approx(8 * 4, rel=0.15)
    assert precisions[3] < precisions[0] - 0.5 and recalls[3] < recalls[0] - 0.5


def test_prdc_hand_checked_example():
    # 1-D points; k = 1: radius = distance to the nearest other point
    real = torch.tensor([[0.0], [1.0], [2.0], [10.0]])  # radii 1, 1, 1, 8
    fake = torch.tensor([[0.5], [20.0], [2.5]])  # radii 2, 17.5, 2
    r = prdc(real, fake, k=1)
    # precision: 0.5 in balls of 0 and 1; 20 in none (10's radius 8); 2.5 in ball of 2 (and 10's: |7.5| <= 8) -> 2/3
    assert r["precision"] == pytest.approx(2 / 3)
    # recall: reals within some fake ball: 0 (0.5, r2), 1, 2, 10 (20, r17.5) -> all 4
    assert r["recall"] == pytest.approx(1.0)
    # density: balls containing 0.5: {0, 1} = 2; 20: 0; 2.5: {2, 10} = 2 -> 4 / (1 * 3)
    assert r["density"] == pytest.approx(4 / 3)
    # coverage: nearest fake of 0 is 0.5 (<= 1 yes), 1: 0.5 (yes), 2: 2.5 (yes), 10: 2.5 at 7.5 (<= 8 yes) -> 1
    assert r["coverage"] == pytest.approx(1.0)
    with pytest.raises(BrainVQInputError):
        prdc(real[:2], fake, k=5)


def test_ssim_map_matches_monai():
    a, b = _blobs(3, seed=0), _blobs(3, seed=1)
    ours = ssim_map(a, b).flatten(1).mean(1)
    ref = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=11)(a, b).flatten()
    assert torch.allclose(ours, ref, atol=1e-4)


def test_memorised_copies_have_nn_ssim_one():
    train = _blobs(12, seed=3)
    test = _blobs(6, seed=4)
    samples = torch.cat([train[:4].clone(), _blobs(4, seed=5)])
    nn, idx = nearest_neighbour_ssim(samples, train, return_index=True, max_pairs_per_chunk=20)
    assert torch.allclose(nn[:4], torch.ones(4), atol=1e-5) and idx[:4].tolist() == [0, 1, 2, 3]
    nn_test = nearest_neighbour_ssim(test, train)
    assert nn_test.max() < 0.99 and nn[4:].max() < 0.99
    # brute force agrees
    brute = torch.stack([torch.stack([ssim_map(s[None], t[None]).mean() for t in train]).max() for s in test])
    assert torch.allclose(nn_test, brute, atol=1e-5)


def test_masked_ssim_ignores_background():
    target = torch.zeros(2, 1, 48, 48)
    target[:, :, 16:32, 16:32] = _blobs(2, size=16, seed=6)[:, :, :, :] + 0.2
    pred = target.clone()
    pred[:, :, :4, :] = torch.rand(2, 1, 4, 48)  # background noise far from the brain (> dilation + window radius)
    m = masked_ssim_psnr(pred, target, dilation=2)
    assert m["ssim"] == pytest.approx(1.0, abs=1e-5) and m["psnr"] >= 99
    assert m["ssim_full"] < 0.99 and m["psnr_full"] < 40
    mask = brain_mask(target, dilation=2)
    assert mask.shape == (2, 1, 48, 48) and mask[0, 0, 14, 14] and not mask[0, 0, 10, 10]
    worse = masked_ssim_psnr(target + 0.1 * torch.randn_like(target), target)
    assert worse["ssim"] < 0.9 and len(worse["ssim_per_image"]) == 2


def test_pairwise_ms_ssim_diversity():
    x = _blobs(6, size=64, seed=7)
    same = x[:1].repeat(6, 1, 1, 1)
    assert mean_pairwise_ms_ssim(same) == pytest.approx(1.0, abs=1e-4)
    assert mean_pairwise_ms_ssim(x) < 0.95
    assert pairwise_ms_ssim(x, max_pairs=4).numel() == 4 and pairwise_ms_ssim(x).numel() == 15


def test_bootstrap_ci_contains_point_estimate():
    v = torch.rand(50, generator=torch.Generator().manual_seed(0))
    lo, hi = bootstrap_ci(v, num=500)
    assert lo < float(v.mean()) < hi and hi - lo < 0.3
    a, b = _gauss(60, 3, seed=1), _gauss(60, 3, shift=1.0, seed=2)
    lo, hi = bootstrap_ci((a, b), frechet_distance, num=50)
    assert lo <= frechet_distance(a, b) <= hi


class _MeanFeatures(torch.nn.Module):
    """Tiny deterministic 'feature net': local means on a 4x4 grid (enough to separate the test sets)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) * 10


def test_evaluate_generation_structure_and_known_answers():
    train, test = _blobs(40, seed=10), _blobs(20, seed=11)
    train_y, test_y = torch.arange(40) % 2, torch.arange(20) % 2
    copies = train[:16].clone()  # a 'prior' that memorised the training set
    res = evaluate_generation(
        copies, test, train, _MeanFeatures(), train_y[:16], test_y, train_y, seed=3,
        class_names={0: "NC", 1: "AD"}, num_bootstrap=20, kid_subsets=5, max_pairs=20,
    )  # fmt: skip
    assert set(res["groups"]) == {"all", "NC", "AD"} and res["seed"] == 3
    g = res["groups"]["all"]
    assert g["counts"] == {"samples": 16, "real_test": 20, "real_train": 40, "real_floor_subset": 16}
    mem = g["memorisation"]
    assert mem["copy_fraction"] == 1.0 and mem["generated_quantiles"]["q05"] == pytest.approx(1.0, abs=1e-5)
    assert g["metrics"]["nn_ssim_to_train"]["real_floor"] < 0.99
    assert sum(mem["generated_hist"]) == 16 and sum(mem["real_test_hist"]) == 20
    for name in ("fid", "kid", "precision", "recall", "density", "coverage", "ms_ssim_diversity"):
        row = g["metrics"][name]
        assert math.isfinite(row["generated"]) and math.isfinite(row["real_floor"])
    ci = g["metrics"]["fid"]["generated_ci"]
    assert ci[0] <= ci[1]
    assert res["groups"]["NC"]["counts"]["samples"] == 8
    table = format_generation_table(res)
    assert "| fid |" in table and "nearest" in table.lower()


def test_ssim_metrics_run_on_volumes():
    """One code path for 2D and 3D: copies of volumes are found, masked SSIM of identical volumes is 1."""
    g = torch.Generator().manual_seed(0)
    vols = torch.nn.functional.avg_pool3d(torch.rand(5, 1, 16, 16, 16, generator=g), 3, 1, 1)
    nn = nearest_neighbour_ssim(torch.cat([vols[2:3], vols[:1] * 0.5]), vols, kernel_size=7)
    assert nn[0] == pytest.approx(1.0, abs=1e-5) and nn[1] < 0.999
    assert masked_ssim_psnr(vols, vols, kernel_size=7)["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert brain_mask(vols).shape == (5, 1, 16, 16, 16)


def test_fast_frechet_distance_used_for_bootstrap_equals_monai_fid():
    from brainvq_monai.metrics.generation import _frechet_distance_fast

    for n, m, d in ((40, 30, 16), (20, 25, 64)):  # full-rank and singular covariances
        a, b = _gauss(n, d, seed=1), _gauss(m, d, shift=0.3, seed=2)
        assert _frechet_distance_fast(a, b) == pytest.approx(frechet_distance(a, b), rel=1e-5, abs=1e-6)
