"""Runs the benchmark sections into one report (device, versions, date) and prints it as tables."""

from __future__ import annotations

import datetime
import importlib
import time
from collections.abc import Sequence
from typing import Any

import torch

from brainvq_monai.utils.environment import device_info, versions
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["SECTIONS", "data_feed", "failed_checks", "format_report", "run_benchmark"]

#: section name -> module under ``brainvq_monai.apps.benchmark``, in the order they run and print
SECTIONS = {
    "sampling": "sampling",
    "training": "training",
    "pipeline": "pipeline",
    "scale3d": "scale3d",
}


def _section(name: str) -> Any:
    return importlib.import_module(f"brainvq_monai.apps.benchmark.{SECTIONS[name]}")


def run_benchmark(
    device: str | torch.device = "cpu",
    quick: bool = False,
    tiny: bool = False,
    seed: int = 0,
    sections: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Runs the benchmark sections and returns the report.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        quick: smaller CPU sizes (the whole run in a few minutes on two cores).
        tiny: test-suite sizes (seconds).
        seed: seed of weights, data and samplers.
        sections: the sections to run (default: all of :data:`SECTIONS`).

    Returns:
        ``{"date", "mode", "seed", "device", "versions", "seconds", "sections": {name: rows}, "data_feed": {...}}``.

    Raises:
        BrainVQInputError: unknown section, or CUDA requested without CUDA.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BrainVQInputError("--device", "cuda requested but CUDA is not available")
    names = list(sections) if sections else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise BrainVQInputError("--sections", f"unknown {unknown}; choose from {list(SECTIONS)}")
    start = time.perf_counter()
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "tiny" if tiny else ("quick" if quick else "full"),
        "seed": seed,
        "device": device_info(dev),
        "versions": versions(),
        "sections": {},
        "section_seconds": {},
    }
    for name in names:
        t0 = time.perf_counter()
        report["sections"][name] = _section(name).run(dev, quick=quick, tiny=tiny, seed=seed)
        report["section_seconds"][name] = time.perf_counter() - t0
    report["data_feed"] = data_feed(report["sections"])
    report["seconds"] = time.perf_counter() - start
    return report


def _rows(sections: dict[str, list[dict[str, Any]]], name: str) -> dict[str, dict[str, Any]]:
    return {row["case"]: row for row in sections.get(name, [])}


def data_feed(sections: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Loader rate next to the trainer's consumption rate (does the trainer wait on data?).

    Compares the VQ-VAE trainer's images/s with the bundle's options (``vqvae_trainer_bf16_cl_fused``) against the
    2D training-data rates of the ``pipeline`` section, and the prior trainer's sequences/s against the codes loader.

    Args:
        sections: the report's sections.

    Returns:
        ``{}`` when either section is missing, else the rates and ``keeps_up`` flags.
    """
    training, pipeline = _rows(sections, "training"), _rows(sections, "pipeline")
    if not training or not pipeline:
        return {}
    feed: dict[str, Any] = {}

    def compare(role: str, need: float) -> None:
        for case, row in pipeline.items():
            rate = row["results"].get("samples_per_s")
            if rate is not None and row["config"].get("role") == role:
                feed[f"{case}_samples_per_s"] = rate
                feed[f"{case}_keeps_up"] = rate >= need

    vq = training.get("vqvae_trainer_bf16_cl_fused")
    if vq is not None:
        feed["vqvae_trainer_images_per_s"] = vq["results"]["images_per_s"]
        compare("vqvae_2d_feed", feed["vqvae_trainer_images_per_s"])
    prior = training.get("prior_transformer_trainer_bf16")
    if prior is not None:
        tokens = max(1, prior["config"]["tokens_per_sequence"] - 1)
        feed["prior_trainer_sequences_per_s"] = prior["results"]["tokens_per_s"] / tokens
        compare("prior_feed", feed["prior_trainer_sequences_per_s"])
    return feed


def failed_checks(report: dict[str, Any]) -> list[str]:
    """``section/case`` of every row whose correctness check failed.

    Args:
        report: a report of :func:`run_benchmark`.

    Returns:
        the failed rows (empty when all passed).
    """
    return [
        f"{name}/{row['case']}"
        for name, rows in report["sections"].items()
        for row in rows
        if "check" in row and not row["check"].get("passed", False)
    ]


def format_report(report: dict[str, Any]) -> str:
    """The report as plain-text tables, one per section, with device and versions on top.

    Args:
        report: a report of :func:`run_benchmark`.

    Returns:
        the text.
    """
    dev = report["device"]
    lines = [
        f"date: {report['date']}  mode: {report['mode']}  seed: {report['seed']}  wall: {report['seconds']:.0f} s",
        f"device: {dev['device']}  cpu: {dev['cpu']} ({dev['cpu_count']} cores, {dev['torch_threads']} torch threads)"
        + (f"  gpu: {dev['gpu']}" if "gpu" in dev else ""),
        "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
    ]
    for name, rows in report["sections"].items():
        lines += ["", f"== {name} ({report['section_seconds'][name]:.0f} s)", _section(name).format_rows(rows)]
    if report.get("data_feed"):
        lines += ["", "== data feed (loader rate vs trainer consumption)"]
        lines += [f"{k}: {v:,.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in report["data_feed"].items()]
    return "\n".join(lines)
