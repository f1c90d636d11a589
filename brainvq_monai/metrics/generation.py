"""Offline metrics of generated brain images: realism, diversity, memorisation, masked reconstruction quality.

* feature-space distances on an in-house feature network (:class:`~brainvq_monai.networks.nets.feature_net.
  BrainFeatureNet`): Frechet distance (MONAI's ``FIDMetric``), kernel distance (KID: unbiased MMD^2 with the cubic
  polynomial kernel over random subsets), precision / recall / density / coverage (Naeem et al., ICML 2020);
* diversity: mean pairwise MS-SSIM among samples, to be compared with (not minimised below) the same among real images;
* memorisation: SSIM from each sample to its nearest training image, as a distribution, against the same for real
  test images (a real image is never in the training set, so its nearest-neighbour SSIM is the honest floor);
* reconstruction SSIM / PSNR inside a brain mask (background inflates whole-image SSIM);
* :func:`evaluate_generation` computes all of them, per class when labels are given, each next to a real-vs-real floor
  (training images scored as if they were samples against the test images), with counts, seeds and bootstrap CIs.

Numbers only: no file I/O and no text. A run's evaluation (samples, feature network, ``generation_metrics.json``)
is :mod:`brainvq_monai.apps.generation_eval`; its tables are :mod:`brainvq_monai.visualize.generation_tables`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import FIDMetric
from scipy.linalg import LinAlgWarning
from torch.nn import functional as F

from brainvq_monai.metrics.ssim import multiscale_ssim_metric
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = [
    "frechet_distance",
    "kernel_inception_distance",
    "prdc",
    "ssim_map",
    "pairwise_ms_ssim",
    "mean_pairwise_ms_ssim",
    "nearest_neighbour_ssim",
    "brain_mask",
    "masked_ssim_psnr",
    "bootstrap_ci",
    "cluster_bootstrap_ci",
    "classification_accuracy",
    "extract_features",
    "feature_metrics",
    "diversity_metrics",
    "memorisation_metrics",
    "closer_to_train_metrics",
    "generation_groups",
    "evaluate_generation",
]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# ---------------------------------------------------------------------------------------------- feature-space metrics
def _feats(x: Any, where: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu().double()
    if t.dim() != 2 or t.shape[0] < 1:
        raise BrainVQInputError(where, f"expected features (N, D), got shape {tuple(t.shape)}")
    return t


def frechet_distance(real_feats: Any, fake_feats: Any) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (``monai.metrics.FIDMetric``).

    Args:
        real_feats: ``(N, D)`` features of real images.
        fake_feats: ``(M, D)`` features of generated images.

    Returns:
        the distance (>= 0; tiny negative round-off is clipped to 0).
    """
    real, fake = _feats(real_feats, "real_feats"), _feats(fake_feats, "fake_feats")
    if real.shape[0] < 2 or fake.shape[0] < 2 or real.shape[1] != fake.shape[1]:
        raise BrainVQInputError(
            "features", f"need >= 2 vectors of one size, got {tuple(real.shape)}, {tuple(fake.shape)}"
        )
    with warnings.catch_warnings():  # singular covariances (fewer images than features) are expected here
        warnings.simplefilter("ignore", category=LinAlgWarning)
        return max(0.0, float(FIDMetric()(fake, real)))


def _frechet_distance_fast(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The same Frechet distance without a matrix square root (for bootstrap replicates).

    With centred feature matrices ``X`` (n x D) and ``Y`` (m x D), ``tr sqrt(S_x S_y)`` equals the nuclear norm of
    ``X Y^T`` divided by ``sqrt((n - 1)(m - 1))``, an SVD of an n x m matrix instead of a D x D square root.
    """
    x = real - real.mean(0)
    y = fake - fake.mean(0)
    n, m = x.shape[0], y.shape[0]
    diff = real.mean(0) - fake.mean(0)
    nuclear = torch.linalg.svdvals(x @ y.T).sum()
    value = diff @ diff + (x * x).sum() / (n - 1) + (y * y).sum() / (m - 1) - 2 * nuclear / math.sqrt((n - 1) * (m - 1))
    return max(0.0, float(value))


def kernel_inception_distance(
    real_feats: Any, fake_feats: Any, num_subsets: int = 50, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with ``k(x, y) = (x.y / D + 1)^3``, over random subsets.

    Args:
        real_feats: ``(N, D)`` real features.
        fake_feats: ``(M, D)`` generated features.
        num_subsets: number of random subsets.
        subset_size: subset size (capped at ``min(N, M)``).
        seed: seed of the subsets.

    Returns:
        ``(mean, std)`` over subsets (the unbiased estimate may be slightly negative for matching sets).
    """
    real, fake = _feats(real_feats, "real_feats"), _feats(fake_feats, "fake_feats")
    m = min(int(subset_size), real.shape[0], fake.shape[0])
    if m < 2:
        raise BrainVQInputError("kernel_inception_distance", "need >= 2 vectors in each set")
    d = real.shape[1]
    gen = torch.Generator().manual_seed(int(seed))
    values = []
    for _ in range(max(1, int(num_subsets))):
        x = real[torch.randperm(real.shape[0], generator=gen)[:m]]
        y = fake[torch.randperm(fake.shape[0], generator=gen)[:m]]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = (
            (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            - 2 * kxy.mean()
        )
        values.append(float(mmd))
    arr = np.asarray(values)
    return float(arr.mean()), float(arr.std())


def prdc(real_feats: Any, fake_feats: Any, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) with k-nearest-neighbour balls.

    ``r_i`` is the distance from real ``i`` to its k-th nearest other real vector (``s_j`` likewise for fakes).
    precision: fraction of fakes inside some real ball; recall: fraction of reals inside some fake ball; density:
    mean number of real balls containing a fake, divided by ``k``; coverage: fraction of real balls containing a fake.

    Args:
        real_feats: ``(N, D)``, ``N > k``.
        fake_feats: ``(M, D)``, ``M > k``.
        k: neighbourhood size.

    Returns:
        ``{"precision", "recall", "density", "coverage"}``.
    """
    real, fake = _feats(real_feats, "real_feats"), _feats(fake_feats, "fake_feats")
    if real.shape[0] <= k or fake.shape[0] <= k:
        raise BrainVQInputError(
            "prdc", f"need more than k={k} vectors per set, got {real.shape[0]} and {fake.shape[0]}"
        )
    return _prdc_from_distances(torch.cdist(real, real), torch.cdist(fake, fake), torch.cdist(real, fake), k)


def _prdc_from_distances(d_rr: torch.Tensor, d_ff: torch.Tensor, d_rf: torch.Tensor, k: int) -> dict[str, float]:
    r_real = d_rr.topk(k + 1, dim=1, largest=False).values[:, -1]  # index 0 is the point itself
    r_fake = d_ff.topk(k + 1, dim=1, largest=False).values[:, -1]
    inside_real = d_rf <= r_real[:, None]  # (N, M): fake j in the ball of real i
    return {
        "precision": float(inside_real.any(0).double().mean()),
        "recall": float((d_rf <= r_fake[None, :]).any(1).double().mean()),
        "density": float(inside_real.sum(0).double().mean() / k),
        "coverage": float((d_rf.min(1).values <= r_real).double().mean()),
    }


# ------------------------------------------------------------------------------------------------------ SSIM family
def _gaussian_1d(kernel_size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _band(n: int, kernel_size: int, sigma: float) -> torch.Tensor:
    """``(n - kernel_size + 1, n)`` matrix of a 'valid' 1-D Gaussian filter."""
    g = _gaussian_1d(kernel_size, sigma)
    m = torch.zeros(n - kernel_size + 1, n)
    for i in range(n - kernel_size + 1):
        m[i, i : i + kernel_size] = g
    return m


def _blur(x: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter without padding ('valid'), any number of spatial dims, per channel.

    Each axis is filtered by a matrix product with a band matrix (an order of magnitude faster on the CPU than
    single-channel convolutions for the many small images of nearest-neighbour searches).
    """
    if min(x.shape[2:]) < kernel_size:
        raise BrainVQInputError("kernel_size", f"{kernel_size} is larger than the images {tuple(x.shape[2:])}")
    out = x
    for axis in range(2, x.dim()):
        band = _band(x.shape[axis], kernel_size, sigma).to(x)
        out = (out.movedim(axis, -1) @ band.T).movedim(-1, axis)
    return out


def _check_images(x: Any, where: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().float()
    if t.dim() not in (4, 5):
        raise BrainVQInputError(
            where, f"expected images (B, C, *spatial) with 2 or 3 spatial dims, got {tuple(t.shape)}"
        )
    return t


def ssim_map(
    pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, kernel_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """SSIM map (Gaussian window, no padding: the settings of ``monai.metrics.SSIMMetric``).

    Args:
        pred: ``(B, C, *spatial)``.
        target: same shape.
        data_range: intensity range.
        kernel_size: window size.
        sigma: Gaussian sigma.

    Returns:
        ``(B, C, *(spatial - kernel_size + 1))``; its mean over non-batch dims is MONAI's SSIM.
    """
    pred, target = _check_images(pred, "pred"), _check_images(target, "target")
    if pred.shape != target.shape:
        raise BrainVQInputError("ssim_map", f"shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _blur(pred, kernel_size, sigma), _blur(target, kernel_size, sigma)
    sxx = _blur(pred * pred, kernel_size, sigma) - mu_x**2
    syy = _blur(target * target, kernel_size, sigma) - mu_y**2
    sxy = _blur(pred * target, kernel_size, sigma) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def nearest_neighbour_ssim(
    queries: torch.Tensor,
    references: torch.Tensor,
    data_range: float = 1.0,
    kernel_size: int = 11,
    sigma: float = 1.5,
    return_index: bool = False,
    max_pairs_per_chunk: int = 2048,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """For each query image, the highest SSIM to any reference image (memorisation: references = training set).

    Local means and variances of every image are computed once; only the cross term is filtered per pair.

    Args:
        queries: ``(Q, C, *spatial)``.
        references: ``(R, C, *spatial)``.
        data_range: intensity range.
        kernel_size: SSIM window.
        sigma: SSIM Gaussian sigma.
        return_index: also return the index of the nearest reference.
        max_pairs_per_chunk: pairs filtered at once (memory bound).

    Returns:
        ``(Q,)`` max SSIM, and ``(Q,)`` long indices when ``return_index``.
    """
    q, r = _check_images(queries, "queries"), _check_images(references, "references")
    if q.shape[1:] != r.shape[1:] or r.shape[0] < 1:
        raise BrainVQInputError("nearest_neighbour_ssim", f"shapes differ: {tuple(q.shape)} vs {tuple(r.shape)}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_r = _blur(r, kernel_size, sigma)
    var_r = _blur(r * r, kernel_size, sigma) - mu_r**2
    best = torch.empty(q.shape[0])
    arg = torch.empty(q.shape[0], dtype=torch.long)
    n_ref = r.shape[0]
    per_chunk = max(1, int(max_pairs_per_chunk) // n_ref)
    with torch.no_grad():
        for start in range(0, q.shape[0], per_chunk):
            qc = q[start : start + per_chunk]
            mu_q = _blur(qc, kernel_size, sigma)
            var_q = _blur(qc * qc, kernel_size, sigma) - mu_q**2
            prod = (qc[:, None] * r[None]).flatten(0, 1)  # (qc * R, C, *spatial)
            cross = _blur(prod, kernel_size, sigma).unflatten(0, (qc.shape[0], n_ref))
            mq, vq = mu_q[:, None], var_q[:, None]
            cov = cross - mq * mu_r[None]
            s = ((2 * mq * mu_r[None] + c1) * (2 * cov + c2)) / (
                (mq**2 + mu_r[None] ** 2 + c1) * (vq + var_r[None] + c2)
            )
            vals = s.flatten(2).mean(-1)  # (qc, R)
            m, i = vals.max(1)
            best[start : start + qc.shape[0]] = m
            arg[start : start + qc.shape[0]] = i
    return (best, arg) if return_index else best


def pairwise_ms_ssim(
    images: torch.Tensor, max_pairs: int = 300, seed: int = 0, data_range: float = 1.0, kernel_size: int = 7
) -> torch.Tensor:
    """MS-SSIM of image pairs (all pairs ``i < j`` when at most ``max_pairs``, else random distinct pairs).

    Uses :func:`brainvq_monai.metrics.ssim.multiscale_ssim_metric`, whose number of scales fits the image size.

    Args:
        images: ``(N, C, *spatial)``, ``N >= 2``.
        max_pairs: cap on the number of pairs.
        seed: seed of the random pairs.
        data_range: intensity range.
        kernel_size: MS-SSIM window.

    Returns:
        ``(P,)`` MS-SSIM values.
    """
    x = _check_images(images, "images")
    n = x.shape[0]
    if n < 2:
        raise BrainVQInputError("images", "need at least 2 images for pairwise MS-SSIM")
    ii, jj = torch.triu_indices(n, n, offset=1)
    if ii.numel() > max_pairs:
        gen = torch.Generator().manual_seed(int(seed))
        pick = torch.randperm(ii.numel(), generator=gen)[: int(max_pairs)]
        ii, jj = ii[pick], jj[pick]
    metric = multiscale_ssim_metric(x.dim() - 2, list(x.shape[2:]), data_range, kernel_size)
    out = []
    with torch.no_grad():
        for s in range(0, ii.numel(), 256):
            a, b = x[ii[s : s + 256]], x[jj[s : s + 256]]
            out.append(metric(a, b).reshape(-1))
    return torch.cat(out).float()


def mean_pairwise_ms_ssim(images: torch.Tensor, max_pairs: int = 300, seed: int = 0) -> float:
    """Diversity: mean pairwise MS-SSIM (lower = more diverse; the target is the value of real images).

    Args:
        images: ``(N, C, *spatial)``.
        max_pairs: cap on the number of pairs.
        seed: seed of the random pairs.

    Returns:
        the mean MS-SSIM.
    """
    return float(pairwise_ms_ssim(images, max_pairs, seed).mean())


def brain_mask(target: torch.Tensor, threshold: float = 0.05, dilation: int = 2) -> torch.Tensor:
    """Brain mask: ``target > threshold`` (any channel), dilated by ``dilation`` voxels (max pooling).

    Args:
        target: ``(B, C, *spatial)`` images in [0, 1].
        threshold: foreground intensity threshold.
        dilation: dilation radius in voxels.

    Returns:
        ``(B, 1, *spatial)`` bool mask.
    """
    t = _check_images(target, "target")
    m = (t > threshold).any(1, keepdim=True).float()
    if dilation > 0:
        pool = getattr(F, f"max_pool{t.dim() - 2}d")
        m = pool(m, kernel_size=2 * dilation + 1, stride=1, padding=dilation)
    return m > 0


def masked_ssim_psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    threshold: float = 0.05,
    dilation: int = 2,
    data_range: float = 1.0,
    kernel_size: int = 11,
) -> dict[str, Any]:
    """SSIM and PSNR inside a brain mask, next to the whole-image values.

    The SSIM map (valid windows) is averaged over the mask voxels at the windows' centres; PSNR uses the MSE over
    the mask voxels (capped at 100 dB for identical images).

    Args:
        pred: ``(B, C, *spatial)`` reconstructions.
        target: same-shape originals.
        mask: ``(B, 1, *spatial)`` mask; ``None``: :func:`brain_mask` of ``target``.
        threshold: foreground threshold of the default mask.
        dilation: dilation of the default mask.
        data_range: intensity range.
        kernel_size: SSIM window.

    Returns:
        dict: ``ssim``, ``psnr`` (means inside the mask), ``ssim_full``, ``psnr_full`` (whole image),
        ``ssim_per_image``, ``psnr_per_image`` (lists), ``mask_fraction``.
    """
    p, t = _check_images(pred, "pred"), _check_images(target, "target")
    if p.shape != t.shape:
        raise BrainVQInputError("masked_ssim_psnr", f"shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    m = brain_mask(t, threshold, dilation) if mask is None else torch.as_tensor(mask).bool()
    if m.shape[0] != p.shape[0] or m.shape[2:] != p.shape[2:]:
        raise BrainVQInputError("mask", f"shape {tuple(m.shape)} does not match images {tuple(p.shape)}")
    m = m.any(1, keepdim=True).float()
    smap = ssim_map(p, t, data_range, kernel_size).mean(1, keepdim=True)
    h = kernel_size // 2
    centre = m[(slice(None), slice(None)) + tuple(slice(h, h + s) for s in smap.shape[2:])]
    msum = centre.flatten(1).sum(1)
    ssim_in = (smap * centre).flatten(1).sum(1) / msum.clamp_min(1)
    ssim_in[msum == 0] = float("nan")
    se = ((p - t) ** 2).mean(1, keepdim=True)
    mse_in = (se * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
    psnr_in = 10 * torch.log10(data_range**2 / mse_in.clamp_min(1e-10))
    psnr_full = 10 * torch.log10(data_range**2 / se.flatten(1).mean(1).clamp_min(1e-10))
    return {
        "ssim": float(torch.nanmean(ssim_in)),
        "psnr": float(psnr_in.mean()),
        "ssim_full": float(smap.flatten(1).mean(1).mean()),
        "psnr_full": float(psnr_full.mean()),
        "ssim_per_image": ssim_in.tolist(),
        "psnr_per_image": psnr_in.tolist(),
        "mask_fraction": float(m.mean()),
    }


# ------------------------------------------------------------------------------------------------------- statistics
def bootstrap_ci(
    values: Any,
    statistic: Callable[..., float] | None = None,
    num: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval.

    Args:
        values: a sequence/array/tensor of per-item values (resampled with replacement), or, with ``statistic``, a
            tuple/list of arrays each resampled independently along its first axis (two-sample statistics such
            as FID of (real, fake) features).
        statistic: ``statistic(*resampled)`` -> float; ``None``: the mean of ``values``.
        num: bootstrap replicates.
        alpha: 1 - confidence level.
        seed: seed.

    Returns:
        ``(low, high)``.
    """
    rng = np.random.default_rng(int(seed))
    if statistic is None:
        arr = np.asarray(
            torch.as_tensor(values).detach().cpu().double() if isinstance(values, torch.Tensor) else values
        )
        arr = arr.astype(np.float64).reshape(-1)
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            return float("nan"), float("nan")
        idx = rng.integers(0, arr.size, size=(int(num), arr.size))
        stats = arr[idx].mean(1)
    else:
        groups = list(values) if isinstance(values, (tuple, list)) else [values]
        stats_list = []
        for _ in range(int(num)):
            resampled = [g[torch.as_tensor(rng.integers(0, len(g), size=len(g)))] for g in groups]
            stats_list.append(float(statistic(*resampled)))
        stats = np.asarray(stats_list)
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def cluster_bootstrap_ci(
    values: Any, clusters: Sequence[Any] | None = None, num: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of a mean when items come in clusters (slices of one subject are not independent).

    Whole clusters are resampled with replacement and the mean is taken over the items of the drawn clusters, so
    the interval reflects how many *subjects* were seen, not how many slices. Without ``clusters`` this is
    :func:`bootstrap_ci`.

    Args:
        values: ``(N,)`` per-item values (e.g. 1.0 for a correct classification).
        clusters: ``N`` cluster ids (e.g. subject ids), or ``None``.
        num: bootstrap replicates.
        alpha: 1 - confidence level.
        seed: seed.

    Returns:
        ``(low, high)``; ``(nan, nan)`` without items.
    """
    arr = np.asarray(torch.as_tensor(values).detach().cpu().double()).reshape(-1)
    if arr.size == 0:
        return float("nan"), float("nan")
    if clusters is None:
        return bootstrap_ci(arr, num=num, alpha=alpha, seed=seed)
    if len(clusters) != arr.size:
        raise BrainVQInputError("clusters", f"expected {arr.size} cluster ids, got {len(clusters)}")
    ids = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    index = np.asarray([ids[c] for c in clusters])
    sums = np.bincount(index, weights=arr, minlength=len(ids))
    counts = np.bincount(index, minlength=len(ids)).astype(np.float64)
    draws = np.random.default_rng(int(seed)).integers(0, len(ids), size=(int(num), len(ids)))
    stats = sums[draws].sum(1) / counts[draws].sum(1)
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


def classification_accuracy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    clusters: Sequence[Any] | None = None,
    class_names: Mapping[Any, str] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of class logits against labels, overall and per class, with (cluster) bootstrap 95% CIs.

    Args:
        logits: ``(N, num_classes)``.
        labels: ``(N,)`` true (or conditioning) classes.
        clusters: ``N`` subject ids for a subject-level CI (see :func:`cluster_bootstrap_ci`), or ``None``.
        class_names: ``{class id: name}`` for the per-class entries.
        seed: bootstrap seed.

    Returns:
        ``{"accuracy", "ci", "num_images", "num_clusters", "per_class": {name: {"accuracy", "ci", "num_images"}}}``.
    """
    labels = torch.as_tensor(labels).long().cpu()
    correct = (torch.as_tensor(logits).argmax(1).cpu() == labels).double()
    names = {int(k): v for k, v in (class_names or {}).items()}
    per_class = {}
    for c in sorted(set(labels.tolist())):
        idx = torch.nonzero(labels == c).flatten()
        sub = [clusters[i] for i in idx.tolist()] if clusters is not None else None
        per_class[names.get(c, str(c))] = {
            "accuracy": float(correct[idx].mean()),
            "ci": list(cluster_bootstrap_ci(correct[idx], sub, seed=seed)),
            "num_images": len(idx),
        }
    return {
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "ci": list(cluster_bootstrap_ci(correct, clusters, seed=seed)),
        "num_images": len(correct),
        "num_clusters": len(set(clusters)) if clusters is not None else None,
        "per_class": per_class,
    }


def _bootstrap_many(
    groups: Sequence[torch.Tensor],
    statistic: Callable[..., Mapping[str, float]],
    num: int,
    seed: int,
    alpha: float = 0.05,
) -> dict[str, list[float]]:
    """Percentile CIs of every entry of a dict-valued two-sample statistic (one resample serves all entries)."""
    rng = np.random.default_rng(int(seed))
    stats: dict[str, list[float]] = {}
    for _ in range(int(num)):
        resampled = [g[torch.as_tensor(rng.integers(0, len(g), size=len(g)))] for g in groups]
        for name, v in statistic(*resampled).items():
            stats.setdefault(name, []).append(float(v))
    return {n: [float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))] for n, v in stats.items()}


# ------------------------------------------------------------------------------------------------------- evaluation
def extract_features(feature_net: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``feature_net.features`` of ``images`` in batches, eval mode, no gradients; ``(N, D)`` on the CPU.

    Args:
        feature_net: a network with ``features(x) -> (B, D)``.
        images: ``(N, C, *spatial)``.
        batch_size: batch size.

    Returns:
        features.
    """
    device = next(feature_net.parameters()).device
    was_training = feature_net.training
    feature_net.eval()
    out = []
    with torch.no_grad():
        for s in range(0, images.shape[0], batch_size):
            out.append(feature_net.features(images[s : s + batch_size].float().to(device)).cpu())
    feature_net.train(was_training)
    return torch.cat(out).double()


def _quantiles(x: torch.Tensor) -> dict[str, float]:
    return {f"q{int(q * 100):02d}": float(torch.quantile(x.double(), q)) for q in QUANTILES}


def _hist(x: torch.Tensor, bins: np.ndarray) -> list[int]:
    return np.histogram(x.double().numpy().clip(bins[0], bins[-1]), bins=bins)[0].astype(int).tolist()


def _row(better: str, **values: Any) -> dict[str, Any]:
    return {"better": better, **values}


def _distance_rows(
    t_f: torch.Tensor, s_f: torch.Tensor, f_f: torch.Tensor, seed: int, num_bootstrap: int, kid_subsets: int
) -> dict[str, Any]:
    """FID (with bootstrap CIs) and KID (mean +/- sd over subsets) of samples and floor against test features."""
    fid_fn = _frechet_distance_fast  # replicates: equal to frechet_distance, without a D x D matrix square root
    nb = max(0, int(num_bootstrap))
    rows = {
        "fid": _row(
            "lower",
            generated=frechet_distance(t_f, s_f),
            real_floor=frechet_distance(t_f, f_f),
            generated_ci=list(bootstrap_ci((t_f, s_f), fid_fn, nb, seed=seed)) if nb else None,
            real_floor_ci=list(bootstrap_ci((t_f, f_f), fid_fn, nb, seed=seed)) if nb else None,
        )
    }
    size = min(len(t_f), len(s_f), len(f_f))
    kg, kgs = kernel_inception_distance(t_f, s_f, kid_subsets, size, seed)
    kf, kfs = kernel_inception_distance(t_f, f_f, kid_subsets, size, seed)
    rows["kid"] = _row("lower", generated=kg, generated_std=kgs, real_floor=kf, real_floor_std=kfs, subset_size=size)
    return rows


def _prdc_rows(
    t_f: torch.Tensor, s_f: torch.Tensor, f_f: torch.Tensor, k: int, seed: int, num_bootstrap: int
) -> dict[str, Any]:
    """Precision / recall / density / coverage of samples and floor, bootstrap CIs from at most 200 replicates."""
    pr_g, pr_f = prdc(t_f, s_f, k), prdc(t_f, f_f, k)
    nb = min(max(0, int(num_bootstrap)), 200)
    ci_g = _bootstrap_many((t_f, s_f), lambda a, b: prdc(a, b, k), nb, seed) if nb else {}
    ci_f = _bootstrap_many((t_f, f_f), lambda a, b: prdc(a, b, k), nb, seed) if nb else {}
    return {
        name: _row(
            "1 (match)" if name == "density" else "higher",
            generated=pr_g[name],
            real_floor=pr_f[name],
            generated_ci=ci_g.get(name),
            real_floor_ci=ci_f.get(name),
        )
        for name in pr_g
    }


def feature_metrics(
    test_feats: torch.Tensor,
    sample_feats: torch.Tensor,
    floor_feats: torch.Tensor,
    k: int = 5,
    seed: int = 0,
    num_bootstrap: int = 500,
    kid_subsets: int = 50,
) -> tuple[dict[str, Any], list[str]]:
    """Feature-space rows of one group: FID, KID and PRDC of the samples and of the real floor against test images.

    Args:
        test_feats: ``(N, D)`` features of the real test images.
        sample_feats: ``(M, D)`` features of the samples.
        floor_feats: ``(F, D)`` features of the floor images (real training images scored like samples).
        k: PRDC neighbourhood size.
        seed: seed of the KID subsets and the bootstrap.
        num_bootstrap: bootstrap replicates (FID: this many, PRDC: at most 200; 0 disables the CIs).
        kid_subsets: KID subsets.

    Returns:
        ``(rows, notes)``: ``{metric: {"better", "generated", "real_floor", CIs...}}`` and why rows were skipped or
        are biased.
    """
    t_f, s_f, f_f = test_feats, sample_feats, floor_feats
    n_min = min(len(t_f), len(s_f), len(f_f))
    if n_min < 2:
        return {}, [f"too few images ({n_min}) for feature metrics"]
    rows = _distance_rows(t_f, s_f, f_f, seed, num_bootstrap, kid_subsets)
    notes: list[str] = []
    if n_min <= t_f.shape[1]:
        notes.append(
            f"FID from {n_min} images with {t_f.shape[1]}-d features (singular covariances): biased upwards; "
            "compare it with the real floor, not with other studies"
        )
    if n_min <= k:
        notes.append(f"precision/recall/density/coverage skipped: {n_min} images, need more than k={k}")
        return rows, notes
    return {**rows, **_prdc_rows(t_f, s_f, f_f, k, seed, num_bootstrap)}, notes


def diversity_metrics(
    samples: torch.Tensor, real_test: torch.Tensor, real_floor: torch.Tensor, max_pairs: int = 300, seed: int = 0
) -> dict[str, Any]:
    """Diversity row: mean pairwise MS-SSIM of samples, test images (the target) and floor images, with 95% CIs.

    Args:
        samples: ``(M, C, *spatial)``, ``M >= 2``.
        real_test: ``(N, C, *spatial)``, ``N >= 2``.
        real_floor: ``(F, C, *spatial)``, ``F >= 2``.
        max_pairs: pairs per set.
        seed: seed of the pairs and the bootstrap.

    Returns:
        the row (``generated``, ``real_test``, ``real_floor``, their CIs and ``num_pairs``).
    """
    div_s, div_t, div_f = (pairwise_ms_ssim(x, max_pairs, seed) for x in (samples, real_test, real_floor))
    return _row(
        "match real_test",
        generated=float(div_s.mean()),
        real_test=float(div_t.mean()),
        real_floor=float(div_f.mean()),
        generated_ci=list(bootstrap_ci(div_s, seed=seed)),
        real_test_ci=list(bootstrap_ci(div_t, seed=seed)),
        real_floor_ci=list(bootstrap_ci(div_f, seed=seed)),
        num_pairs=[int(div_s.numel()), int(div_t.numel()), int(div_f.numel())],
    )


def memorisation_metrics(
    nn_samples: torch.Tensor,
    nn_test: torch.Tensor,
    index_samples: torch.Tensor,
    index_test: torch.Tensor,
    hist_bins: int = 20,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Memorisation of one group from nearest-training-image SSIMs of samples and of test images.

    Args:
        nn_samples: ``(M,)`` SSIM of each sample to its nearest training image.
        nn_test: ``(N,)`` the same for test images (the honest floor: never in the training set).
        index_samples: ``(M,)`` index of each sample's nearest training image.
        index_test: ``(N,)`` the same for test images.
        hist_bins: histogram bins on [0, 1].
        seed: bootstrap seed.

    Returns:
        ``(row, summary)``: the ``nn_ssim_to_train`` metric row, and quantiles, maxima, ``copy_fraction`` (samples
        above the largest test value), histograms and per-image values.
    """
    ns, nt = nn_samples, nn_test
    threshold = float(nt.max()) if len(nt) else float("nan")
    bins = np.linspace(0.0, 1.0, hist_bins + 1)
    row = _row(
        "match real_floor (higher = closer to copies)",
        generated=float(ns.mean()),
        real_floor=float(nt.mean()),
        generated_ci=list(bootstrap_ci(ns, seed=seed)),
        real_floor_ci=list(bootstrap_ci(nt, seed=seed)),
    )
    summary = {
        "reference": "whole training split",
        "generated_quantiles": _quantiles(ns),
        "real_test_quantiles": _quantiles(nt),
        "generated_max": float(ns.max()),
        "real_test_max": threshold,
        "copy_fraction": float((ns > threshold).double().mean()),
        "bins": bins.tolist(),
        "generated_hist": _hist(ns, bins),
        "real_test_hist": _hist(nt, bins),
        "generated_values": ns.tolist(),
        "real_test_values": nt.tolist(),
        "generated_nearest_train_index": index_samples.tolist(),
        "real_test_nearest_train_index": index_test.tolist(),
    }
    return row, summary


def closer_to_train_metrics(closer_samples: torch.Tensor, closer_heldout: torch.Tensor, seed: int = 0) -> dict:
    """Row of the fraction of images nearer (SSIM) to a training than to a test image: samples vs held-out images.

    Args:
        closer_samples: ``(M,)`` bool, per sample.
        closer_heldout: ``(H,)`` bool, per real held-out image (the reference, facing the same set-size bias).
        seed: bootstrap seed.

    Returns:
        the ``closer_to_train`` row.
    """
    cs, ch = closer_samples.double(), closer_heldout.double()
    return _row(
        "match real_heldout (higher = closer to copies)",
        generated=float(cs.mean()),
        real_heldout=float(ch.mean()) if len(ch) else float("nan"),
        real_floor=float(ch.mean()) if len(ch) else float("nan"),
        generated_ci=list(bootstrap_ci(cs, seed=seed)),
        real_floor_ci=list(bootstrap_ci(ch, seed=seed)) if len(ch) > 1 else None,
        num_heldout=len(ch),
    )


def generation_groups(
    counts: tuple[int, int, int],
    sample_labels: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    train_labels: torch.Tensor | None = None,
    class_names: Mapping[Any, str] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int | None]]:
    """Index sets of the evaluation groups: ``"all"``, plus one per class present in samples and test images.

    Args:
        counts: numbers of samples, test and training images.
        sample_labels: ``(M,)`` classes the samples were drawn for, or ``None`` (only ``"all"``).
        test_labels: ``(N,)`` test classes, or ``None`` (only ``"all"``).
        train_labels: ``(T,)`` training classes (per-class floors), or ``None`` (the whole training set).
        class_names: ``{class id: name}`` for group names (default: the id).

    Returns:
        ``{group: (sample indices, test indices, training indices, class id or None)}``.
    """
    n_s, n_t, n_r = counts
    groups = {"all": (torch.arange(n_s), torch.arange(n_t), torch.arange(n_r), None)}
    if sample_labels is None or test_labels is None:
        return groups
    sl, tl = torch.as_tensor(sample_labels).long(), torch.as_tensor(test_labels).long()
    rl = torch.as_tensor(train_labels).long() if train_labels is not None else None
    names = {int(kk): v for kk, v in (class_names or {}).items()}
    for c in sorted(set(sl.tolist()) & set(tl.tolist())):
        ri = torch.nonzero(rl == c).flatten() if rl is not None else torch.arange(n_r)
        groups[names.get(c, str(c))] = (torch.nonzero(sl == c).flatten(), torch.nonzero(tl == c).flatten(), ri, c)
    return groups


def _checked_sets(
    samples: Any, real_test: Any, real_train: Any, labels: Sequence[Any | None]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s, t, r = (
        _check_images(x, w) for x, w in ((samples, "samples"), (real_test, "real_test"), (real_train, "real_train"))
    )
    if not (s.shape[1:] == t.shape[1:] == r.shape[1:]):
        raise BrainVQInputError("evaluate_generation", f"image shapes differ: {s.shape}, {t.shape}, {r.shape}")
    for lab, x, name in zip(labels, (s, t, r), ("sample_labels", "test_labels", "train_labels")):
        if lab is not None and torch.as_tensor(lab).shape != (x.shape[0],):
            raise BrainVQInputError(name, f"expected shape ({x.shape[0]},)")
    return s, t, r


def _nearest(
    s: torch.Tensor, t: torch.Tensor, r: torch.Tensor, heldout: Any, heldout_labels: Any
) -> dict[str, torch.Tensor | None]:
    """Nearest-training-image SSIMs (and indices) of samples and test images; closer-to-train flags."""
    nn_s, idx_s = nearest_neighbour_ssim(s, r, return_index=True)
    nn_t, idx_t = nearest_neighbour_ssim(t, r, return_index=True)
    out = {"nn_s": nn_s, "idx_s": idx_s, "nn_t": nn_t, "idx_t": idx_t, "closer_s": nn_s > nearest_neighbour_ssim(s, t)}
    out["closer_h"] = out["heldout_labels"] = None
    if heldout is not None:
        h = _check_images(heldout, "real_heldout")
        out["closer_h"] = nearest_neighbour_ssim(h, r) > nearest_neighbour_ssim(h, t)
        out["heldout_labels"] = torch.as_tensor(heldout_labels).long() if heldout_labels is not None else None
    return out


def _group_metrics(
    images: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    feats: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    near: Mapping[str, torch.Tensor | None],
    index: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int | None],
    seed: int,
    opts: Mapping[str, int],
) -> dict[str, Any]:
    """Every row of one group (``index``: sample, test, training and floor indices, class id)."""
    (s, t, r), (s_f, t_f, r_f), (si, ti, ri, fi, cls) = images, feats, index
    rows, notes = feature_metrics(t_f[ti], s_f[si], r_f[fi], opts["k"], seed, opts["num_bootstrap"], opts["kid"])
    if len(si) >= 2 and len(ti) >= 2 and len(fi) >= 2:
        rows["ms_ssim_diversity"] = diversity_metrics(s[si], t[ti], r[fi], opts["max_pairs"], seed)
    else:
        notes.append("diversity skipped: fewer than 2 images")
    mem_row, memorisation = memorisation_metrics(
        near["nn_s"][si], near["nn_t"][ti], near["idx_s"][si], near["idx_t"][ti], opts["hist_bins"], seed
    )
    rows["nn_ssim_to_train"] = mem_row
    closer_h, hl = near["closer_h"], near["heldout_labels"]
    if closer_h is not None:
        hi = torch.arange(len(closer_h)) if hl is None or cls is None else torch.nonzero(hl == cls).flatten()
        rows["closer_to_train"] = closer_to_train_metrics(near["closer_s"][si], closer_h[hi], seed)
    counts = {"samples": len(si), "real_test": len(ti), "real_train": len(ri), "real_floor_subset": len(fi)}
    return {"counts": counts, "metrics": rows, "memorisation": memorisation, "notes": notes}


def evaluate_generation(
    samples: torch.Tensor,
    real_test: torch.Tensor,
    real_train: torch.Tensor,
    feature_net: torch.nn.Module,
    sample_labels: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    train_labels: torch.Tensor | None = None,
    seed: int = 0,
    class_names: Mapping[Any, str] | None = None,
    real_heldout: torch.Tensor | None = None,
    heldout_labels: torch.Tensor | None = None,
    k: int = 5,
    max_pairs: int = 300,
    num_bootstrap: int = 500,
    kid_subsets: int = 50,
    hist_bins: int = 20,
) -> dict[str, Any]:
    """All generation metrics of ``samples`` against real test images, each next to a real-vs-real floor.

    The kernels above (:func:`feature_metrics`, :func:`diversity_metrics`, :func:`memorisation_metrics`,
    :func:`closer_to_train_metrics`) over the groups of :func:`generation_groups`.

    The floor scores a random subset of the training images (as many as there are samples, so feature-space
    metrics carry the same small-sample bias) as if they were samples. Diversity compares the samples' mean pairwise
    MS-SSIM with the test images' (the target; training images give the floor). Memorisation is the SSIM from each
    sample to its nearest training image, against the same for test images (``copy_fraction``: samples above the
    largest test-image value). ``closer_to_train`` is the fraction of samples whose nearest training image is more
    similar (SSIM) than their nearest test image, against the same fraction for real held-out images
    (``real_heldout``, e.g. the validation split: seen by neither the networks nor the metric), which face the same
    training and test sets and so the same set-size bias.

    Args:
        samples: ``(M, C, *spatial)`` generated images in [0, 1].
        real_test: ``(N, C, *spatial)`` test images.
        real_train: ``(T, C, *spatial)`` training images (the feature net's training data).
        feature_net: network with ``features(x) -> (B, D)``.
        sample_labels: ``(M,)`` classes the samples were drawn for.
        test_labels: ``(N,)`` test classes.
        train_labels: ``(T,)`` training classes (per-class floors; memorisation always uses the whole training set).
        seed: seed of subsets, pairs and bootstrap.
        class_names: ``{class id: name}`` for group names.
        real_heldout: ``(H, C, *spatial)`` real images in neither the training nor the test set (the reference of
            ``closer_to_train``), or ``None`` to skip that row.
        heldout_labels: ``(H,)`` their classes (per-class reference), or ``None``.
        k: PRDC neighbourhood size.
        max_pairs: pairs for the MS-SSIM diversity.
        num_bootstrap: bootstrap replicates (FID: this many, PRDC: at most 200; 0 disables the CIs).
        kid_subsets: KID subsets.
        hist_bins: bins of the memorisation histograms on [0, 1].

    Returns:
        dict with ``seed``, ``k``, ``num_bootstrap``, ``counts``, ``groups`` (``{"all": ..., "<class>": ...}``, each
        with ``counts``, ``metrics`` (rows with ``generated``, ``real_floor``, CIs and the ``better`` direction),
        ``memorisation`` (quantiles, histograms, per-image values, nearest training index) and ``notes``).
    """
    s, t, r = _checked_sets(samples, real_test, real_train, (sample_labels, test_labels, train_labels))
    gen = torch.Generator().manual_seed(int(seed))  # the floor subsets, drawn group after group
    feats = tuple(extract_features(feature_net, x) for x in (s, t, r))
    near = _nearest(s, t, r, real_heldout, heldout_labels)
    groups = generation_groups((len(s), len(t), len(r)), sample_labels, test_labels, train_labels, class_names)
    opts = {"k": k, "num_bootstrap": num_bootstrap, "kid": kid_subsets, "max_pairs": max_pairs, "hist_bins": hist_bins}
    out_groups: dict[str, Any] = {}
    for gi, (name, (si, ti, ri, cls)) in enumerate(groups.items()):
        fi = ri[torch.randperm(len(ri), generator=gen)[: min(len(si), len(ri))]]
        out_groups[name] = _group_metrics((s, t, r), feats, near, (si, ti, ri, fi, cls), int(seed) + gi, opts)
    return {
        "seed": int(seed),
        "k": int(k),
        "num_bootstrap": int(num_bootstrap),
        "kid_subsets": int(kid_subsets),
        "max_pairs": int(max_pairs),
        "counts": {"samples": len(s), "real_test": len(t), "real_train": len(r)},
        "feature_dim": int(feats[0].shape[1]),
        "floor": "a random training subset of the samples' size, scored against the test images like the samples",
        "groups": out_groups,
    }
