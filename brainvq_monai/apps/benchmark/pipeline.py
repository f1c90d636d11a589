"""Benchmark section ``pipeline``: samples/s of the training data pipeline, to set next to the trainers' rates.

Everything runs on real files: a synthetic demo cohort (:func:`brainvq_monai.data.demo.make_demo_cohort`, PNG slices
and NIfTI volumes) written to a temporary folder and removed afterwards. Cases:

* ``cache_*``: first-epoch rate of the deterministic part of :func:`~brainvq_monai.transforms.brain_transforms`:
  ``CacheDataset`` (caching threads) and ``PersistentDataset`` (to a temporary cache folder, items in datalist order)
  for the NIfTI axial-slice layout without and with the volume cache (each volume read, reoriented and scaled once,
  not once per slice), plus PNG slices and 3D volumes;
* ``augment_per_sample_*``: one epoch of the cached items through the per-sample MONAI random augmentation in a
  MONAI ``DataLoader`` with 0, 2 (and, with more cores, ``min(8, cpu_count)``) workers (persistent workers; the
  epochs after the first are timed, worker start-up is reported apart);
* ``augment_batched_*``: :class:`~brainvq_monai.transforms.batch.RandBrainAugment` on the benchmark device at
  batch 64 (2D) / 2 (3D), and ``feed_batched_augment_2d``: the whole feed of that design (cached deterministic part,
  ``DataLoader`` without workers, :class:`~brainvq_monai.transforms.batch.AugmentedPrepareBatch` to the device);
* ``codes_*``: prior-training batches of 32x32 code maps at batch 64: MONAI ``DataLoader(CodesDataset)`` (per-item
  collation) against :func:`~brainvq_monai.data.codes.codes_dataloader` (one gather per batch, the dataset on the
  device), both through ``prepare_codes``.

Within each part the compared cases run interleaved (one fill / epoch / batch of each per repeat), and each row
reports its median rate, the spread over repeats and the median per-repeat ratio to its reference. The repeats of
each part fit its share of the section budget (at least one repeat always runs).

Rows of 2D training feeds carry ``config["role"] = "vqvae_2d_feed"`` and the codes loaders ``"prior_feed"``, so the
report can put them next to the trainers' consumption rates.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainvq_monai.apps.benchmark.budget import Budget
from brainvq_monai.apps.benchmark.timing import Interleaved, make_row, paired, spread, sync, time_interleaved
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


def _slice_fill(slices: list[dict], s: dict[str, Any], seed: int, read_cache: int, persistent_dir: Path | None):
    """One first fill of the NIfTI-slice items with a fresh transform (empty volume cache): CacheDataset, or a
    PersistentDataset read once in datalist order into a fresh folder."""
    from monai.data import CacheDataset, PersistentDataset

    from brainvq_monai.transforms.pipeline import brain_transforms

    threads = min(4, os.cpu_count() or 1)
    fills = {"count": 0}

    def fill() -> Any:
        xform = brain_transforms(2, s["size2d"], train=True, from_volume_slices=True, read_cache=read_cache)
        xform.set_random_state(seed)
        if persistent_dir is None:
            return CacheDataset(slices, xform, num_workers=threads, progress=False)
        fills["count"] += 1
        ds = PersistentDataset(slices, xform, cache_dir=persistent_dir / f"fill{fills['count']}")
        _read_all(ds)
        return ds

    return fill


def _caching_rows(
    png: list[dict], slices: list[dict], vols: list[dict], s: dict[str, Any], tmp: Path, seed: int, available_s: float
) -> tuple[list[dict], dict[str, Any]]:
    from monai.data import CacheDataset

    from brainvq_monai.transforms.pipeline import SLICE_READ_CACHE, brain_transforms

    threads = min(4, os.cpu_count() or 1)
    rows, cached = [], {}
    base = {"role": "caching", "caching_threads": threads}
    slice_cfg = {**base, "layout": "nifti axial slices", "spatial_size": list(s["size2d"]), "items": len(slices),
                 "volumes": len(vols)}  # fmt: skip
    calls = []
    for kind in ("cachedataset", "persistent"):
        for read_cache in (0, SLICE_READ_CACHE):
            on = "on" if read_cache else "off"
            folder = tmp / f"persistent_{on}" if kind == "persistent" else None
            calls.append(
                (f"cache_nifti_slices_{kind}_volumecache_{on}", _slice_fill(slices, s, seed, read_cache, folder))
            )
    rec = time_interleaved(calls, "cpu", max_repeats=s["repeats"], available_s=available_s, warmup=0)
    for kind in ("cachedataset", "persistent"):
        ref = f"cache_nifti_slices_{kind}_volumecache_off"
        for on in ("off", "on"):
            case = f"cache_nifti_slices_{kind}_volumecache_{on}"
            results = _rates(rec, case, len(slices), ref)
            results["seconds_total"] = results.pop("seconds")
            what = f"CacheDataset({threads} threads) of the deterministic part, volume cache {on}"
            note = None
            if kind == "persistent":
                seconds2, _ = _timed(_read_all, rec.outputs[case])
                results["epoch2_samples_per_s"] = len(slices) / seconds2
                what = f"PersistentDataset first epoch in datalist order (computes + saves), volume cache {on}"
                note = "PersistentDataset rate includes the random tail (~1 ms/sample)"
            cfg = {**slice_cfg, "read_cache_volumes": SLICE_READ_CACHE if on == "on" else 0, "order": _order(rec)}
            rows.append(
                make_row(SECTION, case, cfg, results, reference=ref if on == "on" else None, ours=what, note=note)
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


def _epoch_rows(
    cached: dict[str, Any], s: dict[str, Any], seed: int, available_s: float
) -> tuple[list[dict], dict[str, float]]:
    from monai.data import DataLoader
    from torch.utils.data import Subset

    deadline = time.perf_counter() + available_s
    rows, per_sample = [], {}
    for dims, name, n, batch in ((2, "png_2d", s["n2d"], s["batch2d"]), (3, "volumes_3d", s["n3d"], s["batch3d"])):
        ds = cached[name]
        epoch = Subset(ds, [i % len(ds) for i in range(n)])  # the cached items repeated to an epoch of n samples
        loaders = {
            workers: DataLoader(
                epoch,
                batch_size=batch,
                shuffle=True,
                num_workers=workers,
                persistent_workers=workers > 0,
                generator=torch.Generator().manual_seed(seed),
            )
            for workers in s["workers"]
        }
        share = (deadline - time.perf_counter()) * (0.6 if dims == 2 else 1.0)
        calls = [
            (f"augment_per_sample_{dims}d_workers{w}", functools.partial(_count_images, loader))
            for w, loader in loaders.items()
        ]
        rec = time_interleaved(calls, "cpu", max_repeats=s["repeats"], available_s=share)  # warm-up: 1st epoch
        del calls, loaders  # stops persistent workers
        ref = f"augment_per_sample_{dims}d_workers0"
        for workers in s["workers"]:
            case = f"augment_per_sample_{dims}d_workers{workers}"
            results = _rates(rec, case, n, ref)
            results.pop("seconds")
            results["seconds_per_sample_per_worker"] = max(workers, 1) / results["samples_per_s"]
            results["first_epoch_samples_per_s"] = n / rec.warmup_seconds[case]
            per_sample[f"{dims}d_w{workers}"] = results["samples_per_s"]
            rows.append(
                make_row(
                    SECTION,
                    case,
                    {
                        "role": "vqvae_2d_feed" if dims == 2 else "vqvae_3d_feed",
                        "spatial_size": list(s["size2d"] if dims == 2 else s["size3d"]),
                        "batch": batch,
                        "workers": workers,
                        "samples_per_epoch": n,
                        "order": _order(rec),
                    },
                    results,
                    reference=ref,
                    ours=f"MONAI DataLoader(CacheDataset), per-sample random transforms, {workers} workers",
                    note="epochs after the first timed; first_epoch includes worker start-up" if workers else None,
                )
            )
    return rows, per_sample


def _augment_inputs(cached: dict[str, Any], s: dict[str, Any], device: torch.device) -> list[tuple]:
    """``(dims, cached name or None, batch, size, images on the device)`` of each batched-augmentation case."""
    cases = [
        (2, "png_2d_noaug", s["aug_batch2d"], s["size2d"]),
        (3, "volumes_3d_noaug", s["aug_batch3d"], s["size3d"]),
    ]
    if s["large3d"] is not None:
        cases.append((3, None, s["aug_batch3d"], s["large3d"]))
    out = []
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
        out.append((dims, name, batch, size, images.to(device)))
    return out


def _augment_check(aug_out: torch.Tensor, images: torch.Tensor) -> dict[str, Any]:
    from brainvq_monai.transforms.batch import RandBrainAugment

    identity = RandBrainAugment(affine_prob=0.0, contrast_prob=0.0, bias_prob=0.0, noise_prob=0.0)(images)
    return {
        "kind": "shape, dtype and [0, 1] range kept; identity at probability 0",
        "passed": bool(
            aug_out.shape == images.shape
            and aug_out.dtype == images.dtype
            and float(aug_out.min()) >= 0.0
            and float(aug_out.max()) <= 1.0
            and torch.equal(identity, images.clamp(0, 1))
        ),
    }


def _feed_epoch(cached: dict[str, Any], s: dict[str, Any], device: torch.device, seed: int) -> Any:
    """One epoch of the batched design: cached deterministic part -> DataLoader (no workers) -> device + augment."""
    from monai.data import DataLoader
    from torch.utils.data import Subset

    from brainvq_monai.transforms.batch import AugmentedPrepareBatch, RandBrainAugment

    ds = cached["png_2d_noaug"]
    loader = DataLoader(
        Subset(ds, [i % len(ds) for i in range(s["n2d"])]),
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

    return epoch


_UNPAIRED = "speedup: median rate over the per-sample workers0 median rate (timed in its own interleaved group)"


def _augment_rows(
    cached: dict[str, Any],
    s: dict[str, Any],
    device: torch.device,
    seed: int,
    per_sample: dict[str, float],
    available_s: float,
) -> list[dict]:
    from brainvq_monai.transforms.batch import RandBrainAugment

    inputs = _augment_inputs(cached, s, device)
    cases = {}
    for dims, name, batch, size, images in inputs:
        suffix = f"{dims}d" if name is not None else "3d_" + "x".join(map(str, size))
        cases[f"augment_batched_{suffix}"] = (dims, name, batch, size, images)
    calls = [(case, functools.partial(RandBrainAugment().set_random_state(seed), c[4])) for case, c in cases.items()]
    calls.append(("feed_batched_augment_2d_workers0", _feed_epoch(cached, s, device, seed)))
    rec = time_interleaved(calls, device, max_repeats=s["repeats"], available_s=available_s)
    rows = []
    for case, (dims, name, batch, size, images) in cases.items():
        results = _rates(rec, case, batch)
        results["seconds_per_batch"] = results.pop("seconds")
        ref = per_sample.get(f"{dims}d_w0") if name is not None else None
        results["speedup"] = None if ref is None else results["samples_per_s"] / ref
        rows.append(
            make_row(
                SECTION,
                case,
                {"spatial_size": list(size), "batch": batch, "device": str(device), "order": _order(rec)},
                results,
                reference=None if ref is None else f"augment_per_sample_{dims}d_workers0",
                ours="RandBrainAugment on the batch (affine_grid/grid_sample, gamma, bias field, noise, clip)",
                check=_augment_check(rec.outputs[case], images),
                note=None if ref is None else _UNPAIRED,
            )
        )
    feed = "feed_batched_augment_2d_workers0"
    results = _rates(rec, feed, rec.outputs[feed])
    results.pop("seconds")
    ref = per_sample.get("2d_w0")
    results["speedup"] = results["samples_per_s"] / ref if ref else None
    rows.append(
        make_row(
            SECTION,
            feed,
            {
                "role": "vqvae_2d_feed",
                "spatial_size": list(s["size2d"]),
                "batch": s["aug_batch2d"],
                "workers": 0,
                "device": str(device),
                "order": _order(rec),
            },
            results,
            reference="augment_per_sample_2d_workers0",
            ours="CacheDataset(augment=False) -> DataLoader(0 workers) -> AugmentedPrepareBatch on the device",
            note=_UNPAIRED,
        )
    )
    return rows


def _codes_rows(s: dict[str, Any], device: torch.device, seed: int, available_s: float) -> list[dict]:
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

    ref = "codes_monai_dataloader"
    calls = [(ref, epoch(monai_loader)), ("codes_dataloader", epoch(ours_loader))]
    rec = time_interleaved(calls, device, max_repeats=s["repeats"], available_s=available_s)
    config["order"] = _order(rec)
    a, b = next(iter(monai_loader)), next(iter(ours_loader))
    same = set(a) == set(b) and all(
        (a[k].dtype, a[k].shape) == (b[k].dtype, b[k].shape) for k in ("codes", "label")
    ) and len(a["subject"]) == len(b["subject"])  # fmt: skip
    rows = []
    for case, what in (
        (ref, "monai DataLoader(CodesDataset): per-item getitem + collation"),
        ("codes_dataloader", "codes_dataloader: one gather per batch, codes resident on the device"),
    ):
        results = _rates(rec, case, n, ref)
        results["batches_per_s"] = len(monai_loader) / results.pop("seconds")
        rows.append(
            make_row(
                SECTION,
                case,
                config,
                results,
                reference=ref,
                ours=what,
                check={"kind": "same batch keys, dtypes and shapes as MONAI's DataLoader", "passed": bool(same)}
                if case == "codes_dataloader"
                else None,
            )
        )
    return rows


def _rates(rec: Interleaved, case: str, items: float, reference: str | None = None) -> dict[str, Any]:
    """Median samples/s of ``case`` with its spread, and the median per-repeat speedup over ``reference``."""
    times = rec.times[case]
    rates = spread([items / t for t in times])
    out: dict[str, Any] = {
        "samples_per_s": rates["median"],
        "seconds": statistics.median(times),
        "repeats": rec.repeats,
        "spread": {"samples_per_s": rates},
    }
    if reference is not None:
        ratio = paired(rec.times[reference], times)
        out["speedup"] = ratio["speedup"]
        out["spread"]["speedup"] = ratio["spread"]["speedup"]
    return out


def _order(rec: Interleaved) -> str:
    return "interleaved: " + ", ".join(rec.times) + " per repeat"


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


def run(
    device: torch.device,
    quick: bool,
    tiny: bool,
    seed: int,
    budget: Budget | None = None,
    bf16: dict[str, Any] | None = None,
) -> list[dict]:
    """Runs the section within ``budget``.

    Writing the cohort and one pass of each part are fixed costs; the repeats of each part fit its share of what
    is left (caching 45%, loader epochs 35%, batched augmentation 12%, codes loaders 8%).

    Args:
        device: where the batched augmentation and the codes loader run (file decoding is on the CPU).
        quick: CPU ``--quick`` sizes.
        tiny: test-suite sizes.
        seed: seed of the cohort, the shuffling and the augmentation.
        budget: the section's time budget and progress lines (default: none, silent).
        bf16: unused (no bf16 rows in this section).

    Returns:
        the rows.
    """
    device = torch.device(device)
    budget = budget or Budget(SECTION, math.inf, quiet=True)
    s = _sizes(device, quick, tiny)
    with _quiet_resize_log(), tempfile.TemporaryDirectory(prefix="brainvq_bench_pipeline_") as tmp:
        tmp_path = Path(tmp)
        seconds, (png, slices, vols) = _timed(_cohort, tmp_path / "cohort", s, seed)
        budget.log(f"demo cohort written in {seconds:.1f} s")
        # one intra-op thread, as in DataLoader workers: per-sample ops gain nothing from more, and on a shared
        # CPU a second thread contending for a busy core makes small ops several times slower
        with _torch_threads(1):
            rows, cached = _caching_rows(png, slices, vols, s, tmp_path, seed, budget.share(0.45, 1.0))
            budget.rows_done(rows)
            epoch_rows, per_sample = _epoch_rows(cached, s, seed, budget.share(0.35, 0.55))
            budget.rows_done(epoch_rows)
            augment_rows = _augment_rows(cached, s, device, seed, per_sample, budget.share(0.12, 0.2))
            budget.rows_done(augment_rows)
            codes_rows = _codes_rows(s, device, seed, budget.share(0.08, 0.08))
            budget.rows_done(codes_rows)
            rows += epoch_rows + augment_rows + codes_rows
    for row in rows:
        row["config"]["cohort"] = f"demo cohort, {s['subjects']} subjects ({seconds:.1f} s to write)"
        row["config"]["torch_threads"] = 1
    return rows


def _with_range(results: dict[str, Any], key: str, spec: str, unit: str = "") -> str:
    value = results.get(key)
    if value is None:
        return _fmt(None)
    s = results.get("spread", {}).get(key)
    text = f"{value:{spec}}{unit}"
    return text + (f" ({s['min']:{spec}}-{s['max']:{spec}})" if s and s["n"] > 1 else "")


def format_rows(rows: list[dict]) -> str:
    """Plain-text table of the section's rows: medians with the (min-max) over the interleaved repeats.

    Args:
        rows: the rows of :func:`run`.

    Returns:
        the table, one line per case (plus a line per note).
    """
    lines = [f"{'case':<46}{'samples/s (min-max)':>32}{'vs ref (min-max)':>22}  what"]
    for row in rows:
        r = row["results"]
        check = ""
        if row.get("check") is not None:
            check = " [check ok]" if row["check"]["passed"] else " [CHECK FAILED]"
        lines.append(
            f"{row['case']:<46}{_with_range(r, 'samples_per_s', ',.1f'):>32}{_with_range(r, 'speedup', '.2f', 'x'):>22}"
            f"  {row.get('ours', '')}{check}"
        )
        if row.get("note"):
            lines.append(f"{'':<46}note: {row['note']}")
    return "\n".join(lines)
