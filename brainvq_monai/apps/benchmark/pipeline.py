"""Benchmark section ``pipeline``: samples/s of the training data pipeline, to set next to the trainers' rates.

Everything runs on real files: a synthetic demo cohort (:func:`brainvq_monai.data.demo.make_demo_cohort`, PNG slices
and NIfTI volumes) written to a temporary folder and removed afterwards. Cases:

* ``cache_*``: first-epoch rate of the deterministic part of :func:`~brainvq_monai.transforms.brain_transforms`:
  ``CacheDataset`` (caching threads) and ``PersistentDataset`` (to a temporary cache folder, items in datalist order)
  for the NIfTI axial-slice layout without and with the volume cache (each volume read, reoriented and scaled once,
  not once per slice), plus PNG slices and 3D volumes;
* ``augment_per_sample_*``: one epoch of the cached items through the per-sample MONAI random augmentation in a
  MONAI ``DataLoader`` with 0, 2 (and, with more cores, ``min(8, cpu_count)``) workers (persistent workers; the
  second epoch is timed, worker start-up is reported apart);
* ``augment_batched_*``: :class:`~brainvq_monai.transforms.batch.RandBrainAugment` on the benchmark device at
  batch 64 (2D) / 2 (3D), and ``feed_batched_augment_2d``: the whole feed of that design (cached deterministic part,
  ``DataLoader`` without workers, :class:`~brainvq_monai.transforms.batch.AugmentedPrepareBatch` to the device);
* ``codes_*``: prior-training batches of 32x32 code maps at batch 64: MONAI ``DataLoader(CodesDataset)`` (per-item
  collation) against :func:`~brainvq_monai.data.codes.codes_dataloader` (one gather per batch, the dataset on the
  device), both through ``prepare_codes``.

Rows of 2D training feeds carry ``config["role"] = "vqvae_2d_feed"`` and the codes loaders ``"prior_feed"``, so the
report can put them next to the trainers' consumption rates.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainvq_monai.apps.benchmark.timing import make_row, sync, time_fn
from brainvq_monai.utils.format import fmt as _fmt

__all__ = ["format_rows", "run"]

SECTION = "pipeline"


def _sizes(device: torch.device, quick: bool, tiny: bool) -> dict[str, Any]:
    """What each case runs at (the bundles' sizes: 128x128 slices, 80x96x80 volumes at 2 mm)."""
    cores = os.cpu_count() or 1
    workers = [0, 2] + ([min(8, cores)] if min(8, cores) > 2 else [])
    if tiny:
        return {"subjects": 2, "slices": 2, "nifti_slices": 3, "size2d": (32, 32), "size3d": (24, 24, 24),
                "pixdim3d": (4.0, 4.0, 4.0), "n2d": 32, "n3d": 4, "batch2d": 16, "batch3d": 2, "aug_batch2d": 16,
                "aug_batch3d": 2, "latent": (8, 8), "n_codes": 128, "codes_batch": 16, "workers": [0, 2],
                "repeats": 1, "large3d": None}  # fmt: skip
    if quick:
        return {"subjects": 2, "slices": 8, "nifti_slices": 12, "size2d": (128, 128), "size3d": (80, 96, 80),
                "pixdim3d": (2.0, 2.0, 2.0), "n2d": 512, "n3d": 12, "batch2d": 64, "batch3d": 4, "aug_batch2d": 64,
                "aug_batch3d": 2, "latent": (32, 32), "n_codes": 64 * 40, "codes_batch": 64, "workers": workers,
                "repeats": 3, "large3d": None}  # fmt: skip
    return {"subjects": 4, "slices": 20, "nifti_slices": 40, "size2d": (128, 128), "size3d": (80, 96, 80),
            "pixdim3d": (2.0, 2.0, 2.0), "n2d": 4096, "n3d": 64, "batch2d": 64, "batch3d": 4, "aug_batch2d": 64,
            "aug_batch3d": 2, "latent": (32, 32), "n_codes": 64 * 200, "codes_batch": 64, "workers": workers,
            "repeats": 5, "large3d": (160, 224, 160) if device.type == "cuda" else None}  # fmt: skip


def _cohort(root: Path, s: dict[str, Any], seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Writes the demo cohort; returns the PNG-slice, NIfTI-slice and NIfTI-volume datalists."""
    from brainvq_monai.data.demo import make_demo_cohort
    from brainvq_monai.data.image_io import brain_axial_slices

    with contextlib.redirect_stderr(io.StringIO()):  # its per-subject progress lines
        make_demo_cohort(root, subjects=s["subjects"], seed=seed, slices_per_subject=s["slices"], workers=1)
    png = [{"image": str(p)} for p in sorted(root.glob("keras_png_slices_*/case_*.png"))]
    volumes = sorted((root / "nifti").glob("*.nii.gz"))
    slices = []
    for vol in volumes:  # datalist order: the slices of one volume one after the other, as build_datalist lists them
        brain = brain_axial_slices(vol)
        picks = np.unique(np.linspace(0, len(brain) - 1, s["nifti_slices"]).round().astype(int))
        slices += [{"image": str(vol), "slice": int(brain[i]), "subject": vol.name} for i in picks]
    return png, slices, [{"image": str(v)} for v in volumes]


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """``(seconds, fn(*args, **kwargs))`` of one call."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def _read_all(ds: Any) -> int:
    """Reads every item of ``ds`` in order."""
    for i in range(len(ds)):
        ds[i]
    return len(ds)


def _count_images(loader: Any) -> int:
    """Iterates an epoch of ``loader``; the number of images seen."""
    return sum(len(b["image"]) for b in loader)


def _caching_rows(
    png: list[dict], slices: list[dict], vols: list[dict], s: dict[str, Any], tmp: Path, seed: int
) -> tuple[list[dict], dict[str, Any]]:
    from monai.data import CacheDataset, PersistentDataset

    from brainvq_monai.transforms.pipeline import SLICE_READ_CACHE, brain_transforms

    threads = min(4, os.cpu_count() or 1)
    rows, cached = [], {}
    base = {"role": "caching", "caching_threads": threads}
    slice_cfg = {**base, "layout": "nifti axial slices", "spatial_size": list(s["size2d"]), "items": len(slices),
                 "volumes": len(vols)}  # fmt: skip
    ref_rates: dict[str, float] = {}
    for kind in ("cachedataset", "persistent"):
        for read_cache in (0, SLICE_READ_CACHE):
            xform = brain_transforms(2, s["size2d"], train=True, from_volume_slices=True, read_cache=read_cache)
            xform.set_random_state(seed)
            on = "on" if read_cache else "off"
            extra: dict[str, Any] = {}
            if kind == "cachedataset":
                seconds, _ = _timed(CacheDataset, slices, xform, num_workers=threads, progress=False)
                what = f"CacheDataset({threads} threads) of the deterministic part, volume cache {on}"
            else:
                ds = PersistentDataset(slices, xform, cache_dir=tmp / f"persistent_{on}")
                seconds, _ = _timed(_read_all, ds)
                seconds2, _ = _timed(_read_all, ds)
                extra = {"epoch2_samples_per_s": len(slices) / seconds2}
                what = f"PersistentDataset first epoch in datalist order (computes + saves), volume cache {on}"
            rate = len(slices) / seconds
            if not read_cache:
                ref_rates[kind] = rate
            rows.append(
                make_row(
                    SECTION,
                    f"cache_nifti_slices_{kind}_volumecache_{on}",
                    {**slice_cfg, "read_cache_volumes": read_cache},
                    {"samples_per_s": rate, "seconds_total": seconds, "speedup": rate / ref_rates[kind], **extra},
                    reference=None if not read_cache else f"cache_nifti_slices_{kind}_volumecache_off",
                    ours=what,
                    note="PersistentDataset rate includes the random tail (~1 ms/sample)"
                    if kind == "persistent"
                    else None,
                )
            )
    # PNG slices and 3D volumes: the bundles' CacheDataset (their per-epoch datasets below reuse these)
    for name, items, xform, cfg in (
        ("png_2d", png, brain_transforms(2, s["size2d"], train=True), {"spatial_size": list(s["size2d"])}),
        ("png_2d_noaug", png, brain_transforms(2, s["size2d"], train=False), {"spatial_size": list(s["size2d"])}),
        (
            "volumes_3d",
            vols,
            brain_transforms(3, s["size3d"], train=True, pixdim=s["pixdim3d"]),
            {"spatial_size": list(s["size3d"]), "pixdim": list(s["pixdim3d"])},
        ),
        ("volumes_3d_noaug", vols, brain_transforms(3, s["size3d"], train=False, pixdim=s["pixdim3d"]), {}),
    ):
        xform.set_random_state(seed)
        seconds, ds = _timed(CacheDataset, items, xform, num_workers=threads, progress=False)
        cached[name] = ds
        if name.endswith("_noaug"):
            continue  # the same deterministic work as its augmented twin
        rows.append(
            make_row(
                SECTION,
                f"cache_{name}_cachedataset",
                {**base, **cfg, "items": len(items)},
                {"samples_per_s": len(items) / seconds, "seconds_total": seconds},
                ours=f"CacheDataset({threads} threads) of the deterministic part",
            )
        )
    return rows, cached


def _epoch_rows(cached: dict[str, Any], s: dict[str, Any], seed: int) -> tuple[list[dict], dict[str, float]]:
    from monai.data import DataLoader
    from torch.utils.data import Subset

    rows, per_sample = [], {}
    for dims, name, n, batch in ((2, "png_2d", s["n2d"], s["batch2d"]), (3, "volumes_3d", s["n3d"], s["batch3d"])):
        ds = cached[name]
        epoch = Subset(ds, [i % len(ds) for i in range(n)])  # the cached items repeated to an epoch of n samples
        w0 = None
        for workers in s["workers"]:
            loader = DataLoader(
                epoch,
                batch_size=batch,
                shuffle=True,
                num_workers=workers,
                persistent_workers=workers > 0,
                generator=torch.Generator().manual_seed(seed),
            )
            first, _ = _timed(_count_images, loader)
            seconds, count = _timed(_count_images, loader)
            del loader  # stops persistent workers
            rate = count / seconds
            w0 = rate if workers == 0 else w0
            per_sample[f"{dims}d_w{workers}"] = rate
            rows.append(
                make_row(
                    SECTION,
                    f"augment_per_sample_{dims}d_workers{workers}",
                    {
                        "role": "vqvae_2d_feed" if dims == 2 else "vqvae_3d_feed",
                        "spatial_size": list(s["size2d"] if dims == 2 else s["size3d"]),
                        "batch": batch,
                        "workers": workers,
                        "samples_per_epoch": n,
                    },
                    {
                        "samples_per_s": rate,
                        "seconds_per_sample_per_worker": max(workers, 1) / rate,
                        "first_epoch_samples_per_s": count / first,
                        "speedup": rate / w0,
                    },
                    reference=f"augment_per_sample_{dims}d_workers0",
                    ours=f"MONAI DataLoader(CacheDataset), per-sample random transforms, {workers} workers",
                    note="second epoch timed; first_epoch includes worker start-up" if workers else None,
                )
            )
    return rows, per_sample


def _augment_rows(
    cached: dict[str, Any], s: dict[str, Any], device: torch.device, seed: int, per_sample: dict[str, float]
) -> list[dict]:
    from monai.data import DataLoader

    from brainvq_monai.transforms.batch import AugmentedPrepareBatch, RandBrainAugment

    rows = []
    cases = [
        (2, "png_2d_noaug", s["aug_batch2d"], s["size2d"]),
        (3, "volumes_3d_noaug", s["aug_batch3d"], s["size3d"]),
    ]
    if s["large3d"] is not None:
        cases.append((3, None, s["aug_batch3d"], s["large3d"]))
    for dims, name, batch, size in cases:
        if name is not None:
            ds = cached[name]
            # the cached deterministic images (the pipeline without augmentation), repeated to a batch
            images = torch.stack(
                [torch.as_tensor(ds[i % len(ds)]["image"]).as_subclass(torch.Tensor) for i in range(batch)]
            )
        else:  # the issue's 3D size: a synthetic smooth volume (no cohort resampling at this size)
            images = torch.rand(batch, 1, *[max(1, n // 8) for n in size], generator=torch.Generator().manual_seed(0))
            images = torch.nn.functional.interpolate(images, size=size, mode="trilinear")
        images = images.to(device)
        aug = RandBrainAugment().set_random_state(seed)
        seconds, out = time_fn(functools.partial(aug, images), device, repeats=s["repeats"], warmup=1)
        identity = RandBrainAugment(affine_prob=0.0, contrast_prob=0.0, bias_prob=0.0, noise_prob=0.0)(images)
        check = {
            "kind": "shape, dtype and [0, 1] range kept; identity at probability 0",
            "passed": bool(
                out.shape == images.shape
                and out.dtype == images.dtype
                and float(out.min()) >= 0.0
                and float(out.max()) <= 1.0
                and torch.equal(identity, images.clamp(0, 1))
            ),
        }
        rate = batch / seconds
        ref = per_sample.get(f"{dims}d_w0") if name is not None else None
        suffix = f"{dims}d" if name is not None else "3d_" + "x".join(map(str, size))
        rows.append(
            make_row(
                SECTION,
                f"augment_batched_{suffix}",
                {"spatial_size": list(size), "batch": batch, "device": str(device)},
                {"samples_per_s": rate, "seconds_per_batch": seconds, "speedup": None if ref is None else rate / ref},
                reference=None if ref is None else f"augment_per_sample_{dims}d_workers0",
                ours="RandBrainAugment on the batch (affine_grid/grid_sample, gamma, bias field, noise, clip)",
                check=check,
            )
        )
    # the whole feed of the batched design: cached deterministic part -> DataLoader (no workers) -> device + augment
    ds = cached["png_2d_noaug"]
    n = s["n2d"]
    from torch.utils.data import Subset

    loader = DataLoader(
        Subset(ds, [i % len(ds) for i in range(n)]),
        batch_size=s["aug_batch2d"],
        shuffle=True,
        num_workers=0,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )
    prepare = AugmentedPrepareBatch(RandBrainAugment().set_random_state(seed))

    def epoch() -> int:
        count = 0
        for batch in loader:
            images, _ = prepare(batch, device, non_blocking=True)
            count += images.shape[0]
        sync(device)
        return count

    epoch()
    seconds, count = _timed(epoch)
    rate = count / seconds
    ref = per_sample.get("2d_w0")
    rows.append(
        make_row(
            SECTION,
            "feed_batched_augment_2d_workers0",
            {
                "role": "vqvae_2d_feed",
                "spatial_size": list(s["size2d"]),
                "batch": s["aug_batch2d"],
                "workers": 0,
                "device": str(device),
            },
            {"samples_per_s": rate, "speedup": rate / ref if ref else None},
            reference="augment_per_sample_2d_workers0",
            ours="CacheDataset(augment=False) -> DataLoader(0 workers) -> AugmentedPrepareBatch on the device",
        )
    )
    return rows


def _codes_rows(s: dict[str, Any], device: torch.device, seed: int) -> list[dict]:
    from monai.data import DataLoader

    from brainvq_monai.data.codes import CodesDataset, codes_dataloader
    from brainvq_monai.engines.utils import prepare_codes

    g = torch.Generator().manual_seed(seed)
    n, batch = s["n_codes"], s["codes_batch"]
    encoded = {
        "codes": torch.randint(0, 256, (n, *s["latent"]), generator=g),
        "labels": torch.randint(0, 2, (n,), generator=g),
        "subjects": [f"sub-{i}" for i in range(n)],
    }
    monai_loader = DataLoader(CodesDataset(encoded), batch_size=batch, shuffle=True, num_workers=0)
    ours_loader = codes_dataloader(CodesDataset(encoded).to(device), batch_size=batch, shuffle=True)
    config = {"role": "prior_feed", "latent": list(s["latent"]), "batch": batch, "codes": n, "device": str(device)}

    def epoch(loader: Any) -> Any:
        def run_epoch() -> int:
            count = 0
            for b in loader:
                codes, _ = prepare_codes(b, device, non_blocking=True)
                count += codes.shape[0]
            return count

        return run_epoch

    ref_seconds, _ = time_fn(epoch(monai_loader), device, repeats=s["repeats"], warmup=1)
    seconds, _ = time_fn(epoch(ours_loader), device, repeats=s["repeats"], warmup=1)
    a, b = next(iter(monai_loader)), next(iter(ours_loader))
    same = set(a) == set(b) and all(
        (a[k].dtype, a[k].shape) == (b[k].dtype, b[k].shape) for k in ("codes", "label")
    ) and len(a["subject"]) == len(b["subject"])  # fmt: skip
    rows = []
    for case, secs, what in (
        ("codes_monai_dataloader", ref_seconds, "monai DataLoader(CodesDataset): per-item getitem + collation"),
        ("codes_dataloader", seconds, "codes_dataloader: one gather per batch, codes resident on the device"),
    ):
        batches = len(monai_loader)
        rows.append(
            make_row(
                SECTION,
                case,
                config,
                {
                    "batches_per_s": batches / secs,
                    "samples_per_s": n / secs,
                    "speedup": ref_seconds / secs,
                },
                reference="codes_monai_dataloader",
                ours=what,
                check={"kind": "same batch keys, dtypes and shapes as MONAI's DataLoader", "passed": bool(same)}
                if case == "codes_dataloader"
                else None,
            )
        )
    return rows


@contextlib.contextmanager
def _torch_threads(n: int) -> Any:
    """Runs the block with ``n`` intra-op threads (tiny per-sample ops only lose from more)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _quiet_resize_log() -> Any:
    """Silences ResizeToFit's one-off "mixed image sizes" warning (expected here: the cohort's volumes differ)."""
    log = logging.getLogger("brainvq_monai.transforms.spatial")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def run(device: torch.device, quick: bool, tiny: bool, seed: int) -> list[dict]:
    """Runs the section.

    Args:
        device: where the batched augmentation and the codes loader run (file decoding is on the CPU).
        quick: CPU ``--quick`` sizes.
        tiny: test-suite sizes.
        seed: seed of the cohort, the shuffling and the augmentation.

    Returns:
        the rows.
    """
    device = torch.device(device)
    s = _sizes(device, quick, tiny)
    with _quiet_resize_log(), tempfile.TemporaryDirectory(prefix="brainvq_bench_pipeline_") as tmp:
        tmp_path = Path(tmp)
        seconds, (png, slices, vols) = _timed(_cohort, tmp_path / "cohort", s, seed)
        # one intra-op thread, as in DataLoader workers: per-sample ops gain nothing from more, and on a shared
        # CPU a second thread contending for a busy core makes small ops several times slower
        with _torch_threads(1):
            rows, cached = _caching_rows(png, slices, vols, s, tmp_path, seed)
            epoch_rows, per_sample = _epoch_rows(cached, s, seed)
            rows += epoch_rows
            rows += _augment_rows(cached, s, device, seed, per_sample)
            rows += _codes_rows(s, device, seed)
    for row in rows:
        row["config"]["cohort"] = f"demo cohort, {s['subjects']} subjects ({seconds:.1f} s to write)"
        row["config"]["torch_threads"] = 1
    return rows


def format_rows(rows: list[dict]) -> str:
    """Plain-text table of the section's rows.

    Args:
        rows: the rows of :func:`run`.

    Returns:
        the table, one line per case (plus a line per note).
    """
    lines = [f"{'case':<46}{'samples/s':>12}{'vs ref':>9}  what"]
    for row in rows:
        r = row["results"]
        speedup = _fmt(r.get("speedup"), ".2f") + ("x" if r.get("speedup") is not None else "")
        check = ""
        if row.get("check") is not None:
            check = " [check ok]" if row["check"]["passed"] else " [CHECK FAILED]"
        lines.append(
            f"{row['case']:<46}{_fmt(r.get('samples_per_s'), ',.1f'):>12}{speedup:>9}  {row.get('ours', '')}{check}"
        )
        if row.get("note"):
            lines.append(f"{'':<46}note: {row['note']}")
    return "\n".join(lines)
