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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainvq_monai.bundle.layout import AUTOENCODER_ID, PRIOR_ID, config_files
from brainvq_monai.bundle.utils import default_bundle_root
from brainvq_monai.data.demo import validate_demo_settings
from brainvq_monai.networks.nets.factory import PRIORS
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_write_json

__all__ = [
    "DEMO_SETTINGS",
    "STAGES",
    "demo_overrides",
    "demo_precision",
    "run_bundle_config",
    "run_demo",
    "vqvae_architecture",
]

# CPU-sized settings chosen from the quality ablation of issue 10 (docs/quality.md; each value names its row): the
# whole demo, report included, fits in 10 minutes on 2 CPU cores without bf16 units.
DEMO_SETTINGS: dict[str, Any] = {
    "subjects": 60,  # r02: 20 -> 60 subjects stopped the prior overfitting (val NLL final = min)
    "slices_per_subject": 8,  # r03: 8 slices 3 mm apart: the same anatomy range for 40% of the slices
    "slice_spacing": 3,
    "spatial_size": [64, 64],
    "num_embeddings": 256,  # r04: 64 -> 256 codes, all used
    "embedding_dim": 64,  # r05
    "batch_size": 16,  # r16: twice the optimiser steps for the same compute: SSIM +0.04, PSNR +1.1 dB
    "num_workers": 0,
    "vqvae_channels": [32, 64],  # r06: wider trains too few epochs in the time
    "vqvae_res_layers": 1,
    "vqvae_strides": [2, 2],  # r09/r10: one level reconstructs far better, but its prior does not fit the time
    "l1_weight": 1.0,  # r07, r07b, r08: SSIM, perceptual and adversarial terms did not help
    "ssim_weight": 0.0,
    "perceptual_weight": 0.0,
    "adversarial_weight": 0.0,
    "adversarial_start": 0,
    "vqvae_epochs": 50,
    "vqvae_budget_s": None,
    "prior_epochs": 25,  # r16: validation NLL lowest at epoch 18 of 48, the best checkpoint is kept
    "prior_budget_s": None,
    "budget_clock": "wall",
    "prior_val_interval": 1,  # r01: validate every epoch, so the kept checkpoint is the best
    "prior_weight_decay": 0.01,
    "learning_rate_vqvae": 0.002,
    "learning_rate_prior": 0.002,
    "transformer": {
        "attn_layers_dim": 64,
        "attn_layers_depth": 4,
        "attn_layers_heads": 4,
        "embedding_dropout_rate": 0.1,
        "dropout_rate": 0.0,  # r11: residual dropout 0.1 did not lower the validation NLL
    },
    "pixelcnn": {"channels": 48, "num_layers": 8, "kernel_size": 5, "dropout": 0.1},
    # the DCGAN prior (--prior dcgan) trains adversarially: its own optimiser settings and many more, cheaper, epochs.
    # Measured on this cohort's codes (docs/dcgan.md): without the mode-seeking term every sample of a class was the
    # same brain; weight 1.0 gave diverse non-brain shapes after 1,500 steps, 0.2 diverse brains; a discriminator of
    # 16-64 channels let the generator catch up where 32-128 won at once.
    "dcgan": {
        "embedding_dim": "@embedding_dim",  # the discriminator reads the VQ-VAE's code embeddings
        "noise_dim": 64,
        "generator_channels": [128, 64, 32],
        "discriminator_channels": [16, 32, 64],
        "ema_decay": 0.99,  # a short run: the average of the last ~100 steps, not ~1,000
    },
    "dcgan_epochs": 100,
    "dcgan_diversity_weight": 0.2,
    "learning_rate_dcgan": 3e-4,
    "dcgan_weight_decay": 0.0,
    "num_samples": 8,
    "temperature": 1.0,
    "top_k": None,
    "top_p": None,
    "eval_samples_per_class": 100,
    "report_generation": True,
    "amp": "off",
    "time_limit_s": 570,  # a slower CPU trains fewer epochs rather than overrunning 10 minutes
}


def demo_overrides(out: Path, settings: Mapping[str, Any], prior: str, subjects: int, seed: int) -> dict[str, Any]:
    """Config overrides shared by every step of the demo (paths, data, image and codebook sizes).

    Args:
        out: the demo output folder.
        settings: see :data:`DEMO_SETTINGS`.
        prior: ``"transformer"``, ``"pixelcnn"`` or ``"dcgan"``.
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


def vqvae_architecture(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``BrainVQVAE`` arguments that demo settings choose (the rest come from the bundle config).

    Args:
        settings: demo settings with ``vqvae_channels`` (per level), ``vqvae_res_layers`` and optionally
            ``vqvae_strides`` (per level: 2 halves the size with a 4-wide kernel, 1 keeps it with a 3-wide kernel;
            default 2 at every level).

    Returns:
        ``channels``, ``num_res_channels``, ``num_res_layers``, ``downsample_parameters``, ``upsample_parameters``.
    """
    channels = [int(c) for c in settings["vqvae_channels"]]
    strides = [int(s) for s in settings.get("vqvae_strides") or [2] * len(channels)]
    if len(strides) != len(channels) or any(s not in (1, 2) for s in strides):
        raise BrainVQInputError("vqvae_strides", f"one stride (1 or 2) per level of {channels}, got {strides}")
    kernels = [4 if s == 2 else 3 for s in strides]
    return {
        "channels": channels,
        "num_res_channels": channels,
        "num_res_layers": int(settings["vqvae_res_layers"]),
        "downsample_parameters": [[s, k, 1, 1] for s, k in zip(strides, kernels)],
        "upsample_parameters": [[s, k, 1, 1, 0] for s, k in zip(strides, kernels)],
    }


def _prefixed(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}#{k}": v for k, v in values.items()}


def run_bundle_config(workflow: str, overrides: Mapping[str, Any], bundle: str = "brain_vqvae_2d") -> None:
    """Runs a workflow of a bundle (``configs/common.json`` + its overlay) like ``python -m monai.bundle run``
    does, in this process.

    Args:
        workflow: a workflow of :data:`brainvq_monai.bundle.layout.WORKFLOWS`, e.g. ``"train_vqvae"``.
        overrides: ``{config_id: value}`` overrides.
        bundle: bundle folder name.
    """
    from monai.bundle import ConfigWorkflow

    root = Path(default_bundle_root(bundle))
    workflow_run = ConfigWorkflow(
        config_file=config_files(root, workflow),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=str(root / "configs" / "logging.conf"),
        workflow_type=None,
        bundle_root=str(root),
        **overrides,
    )
    workflow_run.initialize()
    workflow_run.run()
    workflow_run.finalize()


STAGES: tuple[str, ...] = ("vqvae", "prior", "evaluate", "sample", "report")


def _prior_training(settings: Mapping[str, Any], prior: str) -> dict[str, Any]:
    """Epochs and optimiser overrides of the prior stage: the DCGAN's own, or the autoregressive priors'."""
    if prior == "dcgan":
        keys = ("dcgan_epochs", "learning_rate_dcgan", "dcgan_weight_decay")
    else:
        keys = ("prior_epochs", "learning_rate_prior", "prior_weight_decay")
    epochs, lr, decay = (settings[k] for k in keys)
    extra = {"adversarial#diversity_weight": settings["dcgan_diversity_weight"]} if prior == "dcgan" else {}
    return {"max_epochs": epochs, "learning_rate": lr, "optimizer#weight_decay": decay, **extra}


def demo_precision(amp: str | bool) -> dict[str, Any]:
    """Decides the demo's precision: bf16 autocast where the CPU has bf16 units (or a GPU is used), else float32.

    Args:
        amp: ``"auto"`` (detect), ``True``/``"on"`` (bf16 autocast) or ``False``/``"off"`` (float32).

    Returns:
        ``{"amp": bool, "requested": ..., "cpu_bf16_units": {...}, "cuda": bool}`` (recorded in ``demo_summary.json``).
    """
    import torch

    from brainvq_monai.utils.environment import cpu_bf16_units

    units = cpu_bf16_units()
    cuda = torch.cuda.is_available()
    if isinstance(amp, bool):
        use = amp
    elif str(amp).lower() in ("auto",):
        use = cuda or bool(units["usable"])
    elif str(amp).lower() in ("on", "true", "bf16"):
        use = True
    elif str(amp).lower() in ("off", "false", "fp32", "float32"):
        use = False
    else:
        raise BrainVQInputError("amp", f"must be 'auto', 'on' or 'off', got {amp!r}")
    return {"amp": use, "requested": amp, "cpu_bf16_units": units, "cuda": cuda}


def _stage_budget(own: float | None, share: float, deadline: float | None) -> float | None:
    """A training stage's time budget: its own setting, cut to ``share`` of what is left before ``deadline``."""
    if deadline is None:
        return own
    left = max(deadline - time.time(), 1.0)
    return min(own, share * left) if own else share * left


def run_demo(
    out: str | os.PathLike,
    subjects: int | None = None,
    seed: int = 0,
    prior: str = "transformer",
    settings: Mapping[str, Any] | None = None,
    stages: Sequence[str] = STAGES,
) -> dict[str, Any]:
    """Runs the whole pipeline on the demo cohort and returns where everything is.

    Each training stage stops at its epoch count or its time budget (``vqvae_budget_s``, ``prior_budget_s``),
    whichever comes first; ``time_limit_s`` bounds the whole run: the stages' budgets shrink to fit what is left of
    it (a slow CPU trains fewer epochs rather than overrunning; the epochs actually trained are in the TensorBoard
    logs and the report).

    Args:
        out: output folder (created); the cohort goes to ``out/data``, checkpoints to ``out/models``,
            TensorBoard logs to ``out/tensorboard``, ``metrics.json`` and ``samples/`` to ``out``.
        subjects: demo cohort size (default: ``DEMO_SETTINGS["subjects"]``).
        seed: seed of everything.
        prior: ``"transformer"``, ``"pixelcnn"`` or ``"dcgan"``.
        settings: overrides of :data:`DEMO_SETTINGS`.
        stages: the stages to run, in order, from :data:`STAGES`; later stages read what earlier runs wrote to
            ``out`` (e.g. ``("sample", "report")`` re-samples trained models with other sampling settings).

    Returns:
        a summary: paths, metrics and timings; the run ends with ``report.md`` (figures, metric tables and
        generation metrics of this run, see :func:`brainvq_monai.apps.report.make_report`).
    """
    if prior not in PRIORS:
        raise BrainVQInputError("prior", f"must be one of {', '.join(PRIORS)}, got {prior!r}")
    unknown = [st for st in stages if st not in STAGES]
    if unknown or not stages:
        raise BrainVQInputError("stages", f"must be some of {', '.join(STAGES)}, got {list(stages)}")
    s = {**DEMO_SETTINGS, **(settings or {})}
    subjects = int(s["subjects"] if subjects is None else subjects)
    validate_demo_settings(subjects, seed, 1)
    t0 = time.time()
    deadline = t0 + float(s["time_limit_s"]) if s.get("time_limit_s") else None
    out_path = Path(os.path.abspath(os.fspath(out)))
    out_path.mkdir(parents=True, exist_ok=True)
    precision = demo_precision(s["amp"])
    common = {**demo_overrides(out_path, s, prior, subjects, seed), "amp": precision["amp"]}
    arch = vqvae_architecture(s)
    base = {**common, **_prefixed(AUTOENCODER_ID, arch)}
    prior_args = {f"{PRIOR_ID}#{prior}": s[prior]}
    steps: dict[str, tuple[str, str, Any]] = {
        "vqvae": (
            "train the VQ-VAE",
            "train_vqvae",
            lambda: {
                **base,
                "max_epochs": s["vqvae_epochs"],
                "time_budget_s": _stage_budget(s["vqvae_budget_s"], 0.35, deadline),
                "time_budget_clock": s["budget_clock"],
                "learning_rate": s["learning_rate_vqvae"],
                "l1_weight": s["l1_weight"],
                "ssim_weight": s["ssim_weight"],
                "perceptual_weight": s["perceptual_weight"],
                "adversarial_weight": s["adversarial_weight"],
                "adversarial_start": s["adversarial_start"],
            },
        ),
        "prior": (
            f"train the {prior} prior on cached codes",
            "train_prior",
            lambda: {
                **base,
                **prior_args,
                **_prior_training(s, prior),
                "time_budget_s": _stage_budget(s["prior_budget_s"], 0.5, deadline),
                "time_budget_clock": s["budget_clock"],
                "val_interval": s["prior_val_interval"],
            },
        ),
        "evaluate": (
            "evaluate on the test split",
            "evaluate",
            lambda: {**base, **prior_args},
        ),
        "sample": (
            "sample new brains",
            "inference",
            lambda: {
                **base,
                **prior_args,
                "num_samples": s["num_samples"],
                "temperature": s["temperature"],
                "top_k": s["top_k"],
                "top_p": s["top_p"],
            },
        ),
    }
    timings: dict[str, float] = {}
    total = len(stages)
    if "vqvae" in stages:
        _say(f"[0/{total}] demo cohort under {out_path / 'data'}")
        start = time.time()
        _ensure_cohort(out_path / "data", subjects, seed, int(s["slices_per_subject"]), int(s["slice_spacing"]))
        timings["cohort"] = round(time.time() - start, 1)
    if precision["amp"]:
        _say("bf16 autocast on: this CPU has bf16 units (amp='auto'; --amp off for float32)")
    for i, stage in enumerate((st for st in stages if st != "report"), 1):
        what, config, overrides = steps[stage]
        _say(f"[{i}/{total}] {what} ({config})")
        start = time.time()
        run_bundle_config(config, overrides())
        timings[config] = round(time.time() - start, 1)
    metrics_file = out_path / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    summary = {
        "output_dir": str(out_path),
        "data": str(out_path / "data"),
        "checkpoints": str(out_path / "models"),
        "tensorboard": str(out_path / "tensorboard"),
        "run_settings": str(out_path / "run_settings.json"),
        "metrics": str(metrics_file),
        "samples": str(out_path / "samples"),
        "precision": precision,
        "seconds": {**timings, "total": round(time.time() - t0, 1)},
        "results": metrics,
    }
    atomic_write_json(out_path / "demo_summary.json", summary)
    if "report" not in stages:
        return summary
    from brainvq_monai.apps.generation_eval import run_generation_eval
    from brainvq_monai.apps.report import make_report

    _say(f"[{total}/{total}] generation metrics and report (report.md)")
    start = time.time()
    if s["report_generation"]:
        run_generation_eval(
            out_path,
            num_samples_per_class=int(s["eval_samples_per_class"]),
            seed=seed,
            temperature=float(s["temperature"]),
            top_k=s["top_k"],
            top_p=s["top_p"],
        )
        summary["seconds"]["generation_metrics"] = round(time.time() - start, 1)
    summary["report"] = str(make_report(out_path, generation=False))
    summary["seconds"]["report"] = round(time.time() - start, 1)
    summary["seconds"]["total"] = round(time.time() - t0, 1)
    generation_file = out_path / "generation_metrics.json"
    if generation_file.is_file():
        summary["generation_metrics"] = str(generation_file)
    atomic_write_json(out_path / "demo_summary.json", summary)
    return summary


def _ensure_cohort(data: Path, subjects: int, seed: int, slices: int, spacing: int) -> None:
    """Makes the demo cohort in ``data`` unless the same cohort is already there (then it is reused)."""
    from brainvq_monai.data.demo import make_demo_cohort

    marker = data / "demo_cohort.json"
    if marker.is_file():
        try:
            meta = json.loads(marker.read_text())
        except json.JSONDecodeError:
            meta = {}
        wanted = {"subjects": subjects, "seed": seed, "slices_per_subject": slices, "slice_spacing": spacing}
        if meta.get("complete") and all(
            meta.get(k, 1 if k == "slice_spacing" else None) == v for k, v in wanted.items()
        ):
            return
    make_demo_cohort(data, subjects=subjects, seed=seed, slices_per_subject=slices, slice_spacing=spacing)
    stale = data.parent / "datalist_adni.json"
    if stale.is_file():
        stale.unlink()


def _say(msg: str) -> None:
    print(f"brainvq demo: {msg}", file=sys.stderr, flush=True)
