"""``brainvq report``: a Markdown report with figures of one finished run (``brainvq demo`` or the bundle configs).

Three stages:

* **compute** (:mod:`brainvq_monai.apps.report_compute`, with the run's own models on the run's own test split):
  TensorBoard curves, reconstructions, codebook usage and projection, samples per class (the run's sample files,
  or fresh ones with their seed), and the generation metrics of ``generation_metrics.json`` (computed by
  :func:`brainvq_monai.apps.generation_eval.run_generation_eval` when missing);
* **record** (:func:`compute_report`, here): ``run_dir/report.json`` holds every number, the seeds, counts,
  versions and device, and the paths of the figures' source arrays (``report/data/*.npz``);
* **render** (:func:`brainvq_monai.visualize.report.render_report`): ``run_dir/report.md`` and the PNG figures under
  ``run_dir/report/`` from the record and those arrays only (``brainvq report --run RUN --render-only``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from brainvq_monai.apps import report_compute as compute
from brainvq_monai.apps.report_compute import read_json, read_tensorboard_scalars
from brainvq_monai.utils.environment import device_info, versions
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_json
from brainvq_monai.visualize.report import RECORD_VERSION, REPORT_FIGURES, REPORT_RECORD, render_report

__all__ = [
    "REPORT_FIGURES",
    "REPORT_RECORD",
    "REPORT_ARRAYS",
    "compute_report",
    "write_report_record",
    "make_report",
    "read_tensorboard_scalars",
    "render_report",
]

REPORT_ARRAYS: dict[str, str] = {
    "curves": "report/data/curves.npz",
    "reconstructions": "report/data/reconstructions.npz",
    "samples": "report/data/samples.npz",
    "codebook_projection": "report/data/codebook_projection.npz",
}
"""Source arrays of the figures, relative to the run folder (written by the compute stage, read by the renderer)."""


def _check_run_dir(run: Path) -> None:
    if not (run / "metrics.json").is_file():
        raise BrainVQInputError(
            run, "not a finished brainvq run: no metrics.json (run the evaluate workflow, or `brainvq demo --out DIR`)"
        )


# ---------------------------------------------------------------------------------------------------- run blocks
def _describe_run(run: Path, art: Any, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The run, data, model and settings blocks of the record (from the run's files and its loaded networks)."""
    summary = read_json(run / "demo_summary.json")
    dl = art.datalist
    record = dict(art.config or {})
    settings = {**art.settings, **{k: record[k] for k in ("autoencoder_def", "prior_def") if k in record}}
    return {
        "run": {
            "dir": str(run),
            "name": run.name,
            "finished": (metrics.get("reconstruction") or metrics.get("prior") or {}).get("written"),
            "seconds": summary.get("seconds") or {},
        },
        "data": {
            "name": dl.get("name"),
            "format": dl.get("format"),
            "root": dl.get("root"),
            "split_method": dl.get("split_method"),
            "seed": dl.get("seed"),
            "counts": {k: len(dl.get(k) or []) for k in ("training", "validation", "test")},
            "labels": dl.get("labels") or {},
        },
        "model": {
            "spatial_dims": int(art.spatial_dims),
            "spatial_size": [int(s) for s in art.spatial_size],
            "latent_shape": [int(s) for s in art.latent_shape],
            "num_embeddings": int(art.vqvae.ema_quantizer.num_embeddings),
            "embedding_dim": int(art.vqvae.ema_quantizer.embedding.weight.shape[1]),
            "prior": art.prior_name,
            "conditional": bool(art.conditional),
            "class_names": {str(k): str(v) for k, v in (art.class_names or {}).items()},
        },
        "settings": {
            "source": "run_settings.json",
            "values": json.loads(json.dumps(settings, default=str)),
        },
        "training_device": summary.get("device"),
    }


def _generation_block(run: Path, generation: bool) -> dict[str, Any]:
    """``generation_metrics.json`` as read (``status``: ``read``, ``computed`` now, or ``missing``)."""
    from brainvq_monai.apps.generation_eval import GENERATION_METRICS

    path = run / GENERATION_METRICS
    status = "read"
    if not path.is_file() and generation:
        from brainvq_monai.apps.generation_eval import run_generation_eval

        run_generation_eval(run)
        status = "computed"
    record = read_json(path) or None
    return {"status": status if record else "missing", "file": GENERATION_METRICS if record else None, "record": record}


# ---------------------------------------------------------------------------------------------------- compute
def _figure_data(
    run: Path, art: Any, dev: torch.device, per_class: tuple[int, int], seed: int, seconds: dict[str, float]
) -> dict[str, Any]:
    """Curves, reconstructions, codebook usage and projection, samples: numbers, with their arrays saved."""
    t = time.time()
    tb_dir = run / "tensorboard"
    scalars = read_tensorboard_scalars(tb_dir) if tb_dir.is_dir() else {}
    out: dict[str, Any] = {
        "curves": {"source": "tensorboard", **compute.save_curves(scalars, run / REPORT_ARRAYS["curves"])}
    }
    seconds["curves"] = round(time.time() - t, 2)
    t = time.time()
    images, labels = art.load_images("test")
    labels = labels if labels is not None else torch.full((len(images),), -1, dtype=torch.long)
    recon, codes = compute.encode_images(art.vqvae, images, dev)
    names = {int(k): str(v) for k, v in (art.class_names or {}).items()}
    picked = compute.pick_per_class(labels, sorted(names) or [-1], per_class[0])
    out["reconstructions"] = compute.reconstruction_panel(
        art.datalist["test"], images, labels, recon, picked, names, run / REPORT_ARRAYS["reconstructions"]
    )
    out["codebook_usage"] = compute.codebook_usage(codes, int(art.vqvae.ema_quantizer.num_embeddings))
    codebook = art.vqvae.ema_quantizer.embedding.weight.detach().float().cpu().numpy()
    out["codebook_projection"] = compute.codebook_projection(codebook, seed, run / REPORT_ARRAYS["codebook_projection"])
    seconds["reconstructions_and_codebook"] = round(time.time() - t, 2)
    t = time.time()
    out["samples"] = compute.sample_panel(art, images, labels, per_class[1], seed, run / REPORT_ARRAYS["samples"])
    seconds["samples"] = round(time.time() - t, 2)
    return out


def compute_report(
    run_dir: str | os.PathLike,
    generation: bool = True,
    device: str | torch.device | None = None,
    images_per_class: int = 4,
    samples_per_class: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Compute and record stages: every number and figure array of a run's report, as the ``report.json`` record.

    Args:
        run_dir: a finished run folder (``brainvq demo --out DIR``): ``metrics.json``, ``models/``,
            ``tensorboard/``, ``samples/``, the datalist and run settings (read through
            :func:`brainvq_monai.apps.run_loader.load_run`).
        generation: compute ``generation_metrics.json`` with
            :func:`brainvq_monai.apps.generation_eval.run_generation_eval` when it is missing; ``False``: use the
            file only if it is already there.
        device: where the models run (default: CUDA when available, else CPU).
        images_per_class: test images per class in the reconstruction grid.
        samples_per_class: samples per class in the sample grid (files of ``run_dir/samples`` first; fresh samples,
            seeded by ``seed``, when there are none).
        seed: seed of fresh samples and of the UMAP projection.

    Returns:
        the record (also written to ``run_dir/report.json``; arrays under ``run_dir/report/data/``).
    """
    from brainvq_monai.apps.run_loader import load_run

    t0 = time.time()
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    art = load_run(run_dir, device=dev)
    run = art.run_dir  # the run's output folder (a bundle trained in place keeps it in runs/)
    _check_run_dir(run)
    metrics = read_json(run / "metrics.json")
    seconds = {"load": round(time.time() - t0, 2)}
    described = _describe_run(run, art, metrics)
    record: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "computed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "parameters": {
            "generation": bool(generation),
            "images_per_class": int(images_per_class),
            "samples_per_class": int(samples_per_class),
            "seed": int(seed),
        },  # fmt: skip
        "device": {"report": str(dev), "training": described.pop("training_device"), "machine": device_info(dev)},
        "versions": versions("matplotlib", "ignite"),
        **described,
        "metrics": {key: metrics.get(key) for key in ("reconstruction", "prior")},
        "arrays": dict(REPORT_ARRAYS),
        **_figure_data(run, art, dev, (images_per_class, samples_per_class), seed, seconds),
    }
    t = time.time()
    record["generation"] = _generation_block(run, generation)
    seconds["generation"] = round(time.time() - t, 2)
    record["seconds"] = {**seconds, "total": round(time.time() - t0, 2)}
    write_report_record(run, record)
    return record


def write_report_record(run_dir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Writes the record to ``run_dir/report.json`` (atomically).

    Args:
        run_dir: the run folder.
        record: the record of :func:`compute_report`.

    Returns:
        the path written.
    """
    return atomic_write_json(Path(os.fspath(run_dir)) / REPORT_RECORD, record)


def make_report(
    run_dir: str | os.PathLike,
    generation: bool = True,
    device: str | torch.device | None = None,
    images_per_class: int = 4,
    samples_per_class: int = 8,
    seed: int = 0,
    render_only: bool = False,
) -> Path:
    """Writes ``run_dir/report.json``, then ``run_dir/report.md`` and its figures under ``run_dir/report/``.

    Args:
        run_dir: a finished run folder (see :func:`compute_report`).
        generation: see :func:`compute_report`.
        device: see :func:`compute_report`.
        images_per_class: see :func:`compute_report`.
        samples_per_class: see :func:`compute_report`.
        seed: see :func:`compute_report`.
        render_only: skip the compute stage and render the existing ``report.json`` (no model is loaded; the other
            arguments are then unused).

    Returns:
        the path of ``report.md``.
    """
    if render_only:
        run = Path(os.path.abspath(os.fspath(run_dir)))
        # a bundle trained in place keeps its run (and its report) in runs/
        return render_report(run / "runs" if (run / "runs" / REPORT_RECORD).is_file() else run)
    record = compute_report(run_dir, generation, device, images_per_class, samples_per_class, seed)
    return render_report(record["run"]["dir"])  # from the file: what is rendered is what was recorded
