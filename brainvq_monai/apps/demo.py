"""``brainvq demo``: the whole pipeline on the synthetic demo cohort, through the MONAI bundle configs.

demo data -> datalist -> VQ-VAE -> prior -> evaluation -> samples, each step a ``monai.bundle`` run of a config
of ``bundles/brain_vqvae_2d`` with CPU-sized overrides, so what the demo does is exactly what a user's
``python -m monai.bundle run`` does.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainvq_monai.apps.run_loader import run_config_from_settings, write_run_config
from brainvq_monai.bundle.utils import default_bundle_root
from brainvq_monai.data.demo import validate_demo_settings
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["DEMO_SETTINGS", "demo_overrides", "run_bundle_config", "run_demo"]

# CPU-sized settings: the whole demo fits in a few minutes on 2 cores.
DEMO_SETTINGS: dict[str, Any] = {
    "spatial_size": [64, 64],
    "num_embeddings": 64,
    "embedding_dim": 32,
    "batch_size": 32,
    "num_workers": 0,
    "vqvae_channels": [32, 64],
    "vqvae_res_layers": 1,
    "vqvae_epochs": 100,
    "prior_epochs": 60,
    "prior_val_interval": 10,
    "learning_rate_vqvae": 0.002,
    "learning_rate_prior": 0.002,
    "transformer": {
        "attn_layers_dim": 64,
        "attn_layers_depth": 4,
        "attn_layers_heads": 4,
        "embedding_dropout_rate": 0.1,
    },
    "pixelcnn": {"channels": 48, "num_layers": 8, "kernel_size": 5, "dropout": 0.1},
    "num_samples": 8,
    "report_generation": True,
}


def demo_overrides(out: Path, settings: Mapping[str, Any], prior: str, subjects: int, seed: int) -> dict[str, Any]:
    """Config overrides shared by every step of the demo (paths, data, image and codebook sizes).

    Args:
        out: the demo output folder.
        settings: see :data:`DEMO_SETTINGS`.
        prior: ``"transformer"`` or ``"pixelcnn"``.
        subjects: demo cohort size.
        seed: seed of the cohort, the split and the training.

    Returns:
        ``{config_id: value}`` overrides.
    """
    return {
        "output_dir": str(out),
        "ckpt_dir": str(out / "models"),
        "dataset_dir": str(out / "data"),
        "data_format": "adni",
        "demo_subjects": subjects,
        "seed": seed,
        "spatial_size": settings["spatial_size"],
        "num_embeddings": settings["num_embeddings"],
        "embedding_dim": settings["embedding_dim"],
        "batch_size": settings["batch_size"],
        "num_workers": settings["num_workers"],
        "prior": prior,
    }


def _prefixed(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}#{k}": v for k, v in values.items()}


def run_bundle_config(config: str, overrides: Mapping[str, Any], bundle: str = "brain_vqvae_2d") -> None:
    """Runs ``bundles/<bundle>/configs/<config>`` like ``python -m monai.bundle run`` does, in this process.

    Args:
        config: config file name, e.g. ``"train_vqvae.json"``.
        overrides: ``{config_id: value}`` overrides.
        bundle: bundle folder name.
    """
    from monai.bundle import ConfigWorkflow

    root = Path(default_bundle_root(bundle))
    config_file = root / "configs" / config
    if not config_file.is_file():
        raise BrainVQInputError(config_file, "bundle config not found; run from a source checkout (pip install -e .)")
    workflow = ConfigWorkflow(
        config_file=str(config_file),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        workflow_type=None,
        bundle_root=str(root),
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def run_demo(
    out: str | os.PathLike,
    subjects: int = 20,
    seed: int = 0,
    prior: str = "transformer",
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs the whole pipeline on the demo cohort and returns where everything is.

    Args:
        out: output folder (created); the cohort goes to ``out/data``, checkpoints to ``out/models``,
            TensorBoard logs to ``out/tensorboard``, ``metrics.json`` and ``samples/`` to ``out``.
        subjects: demo cohort size.
        seed: seed of everything.
        prior: ``"transformer"`` or ``"pixelcnn"``.
        settings: overrides of :data:`DEMO_SETTINGS`.

    Returns:
        a summary: paths, metrics and timings; the run ends with ``report.md`` (figures, metric tables and
        generation metrics of this run, see :func:`brainvq_monai.apps.report.make_report`).
    """
    if prior not in ("transformer", "pixelcnn"):
        raise BrainVQInputError("prior", f"must be 'transformer' or 'pixelcnn', got {prior!r}")
    validate_demo_settings(subjects, seed, 1)
    s = {**DEMO_SETTINGS, **(settings or {})}
    out_path = Path(os.path.abspath(os.fspath(out)))
    out_path.mkdir(parents=True, exist_ok=True)
    common = demo_overrides(out_path, s, prior, subjects, seed)
    # what rebuilding the networks needs (brainvq_monai.apps.run_loader.load_run), written before training starts
    write_run_config(out_path, run_config_from_settings(s, prior, subjects=subjects, seed=seed))
    arch = {
        "channels": s["vqvae_channels"],
        "num_res_channels": s["vqvae_channels"],
        "num_res_layers": s["vqvae_res_layers"],
    }
    base = {**common, **_prefixed("vqvae_def", arch)}
    prior_args = {f"network_def#{prior}": s[prior]}
    steps = [
        (
            "train the VQ-VAE",
            "train_vqvae.json",
            {
                **common,
                **_prefixed("network_def", arch),
                "train#trainer#max_epochs": s["vqvae_epochs"],
                "learning_rate": s["learning_rate_vqvae"],
            },
        ),
        (
            f"train the {prior} prior on cached codes",
            "train_prior.json",
            {
                **base,
                **prior_args,
                "train#trainer#max_epochs": s["prior_epochs"],
                "val_interval": s["prior_val_interval"],
                "learning_rate": s["learning_rate_prior"],
            },
        ),
        ("evaluate on the test split", "evaluate.json", {**base, f"prior_def#{prior}": s[prior]}),
        ("sample new brains", "inference.json", {**base, **prior_args, "num_samples": s["num_samples"]}),
    ]
    timings: dict[str, float] = {}
    t0 = time.time()
    total = len(steps) + 1  # + the report
    _say(f"[0/{total}] demo cohort and datalist under {out_path / 'data'} (created on first use)")
    for i, (what, config, overrides) in enumerate(steps, 1):
        _say(f"[{i}/{total}] {what} ({config})")
        start = time.time()
        run_bundle_config(config, overrides)
        timings[config] = round(time.time() - start, 1)
    metrics_file = out_path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    summary = {
        "output_dir": str(out_path),
        "data": str(out_path / "data"),
        "checkpoints": str(out_path / "models"),
        "tensorboard": str(out_path / "tensorboard"),
        "run_config": str(out_path / "run_config.json"),
        "metrics": str(metrics_file),
        "samples": str(out_path / "samples"),
        "seconds": {**timings, "total": round(time.time() - t0, 1)},
        "results": metrics,
    }
    (out_path / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from brainvq_monai.apps.report import make_report

    _say(f"[{total}/{total}] generation metrics and report (report.md)")
    start = time.time()
    summary["report"] = str(make_report(out_path, generation=bool(s["report_generation"])))
    summary["seconds"]["report"] = round(time.time() - start, 1)
    summary["seconds"]["total"] = round(time.time() - t0, 1)
    generation_file = out_path / "generation_metrics.json"
    if generation_file.is_file():
        summary["generation_metrics"] = str(generation_file)
    (out_path / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _say(msg: str) -> None:
    print(f"brainvq demo: {msg}", file=sys.stderr, flush=True)
