"""Runs the benchmark sections into one report (device, threads, bf16 units, versions, date) and prints it as tables.

The run pins torch's intra-op threads (default 1; see :mod:`.hardware`), gives every section a time budget
(:data:`SECTION_BUDGET_S`, or ``--section-budget-s`` for all), and writes progress lines to stderr as it goes.
"""

from __future__ import annotations

import datetime
import importlib
import time
from collections.abc import Sequence
from typing import Any

import torch

from brainvq_monai.apps.benchmark import hardware as _hw
from brainvq_monai.apps.benchmark.budget import Budget, progress
from brainvq_monai.utils.environment import device_info, versions
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["SECTIONS", "SECTION_BUDGET_S", "data_feed", "failed_checks", "format_report", "run_benchmark"]

#: section name -> module under ``brainvq_monai.apps.benchmark``, in the order they run and print
SECTIONS = {
    "sampling": "sampling",
    "training": "training",
    "pipeline": "pipeline",
    "scale3d": "scale3d",
}

#: default time budget of each section in seconds, by ``(device type, mode)``. The CPU ``--quick`` budgets add up to
#: 235 s, so that the whole run stays under 5 minutes on a CPU three times slower than the 2-core Xeon they were
#: set on (where the run takes about 3 minutes); CUDA and full runs get room for the issue's sizes.
SECTION_BUDGET_S: dict[tuple[str, str], dict[str, float]] = {
    ("cpu", "quick"): {"sampling": 80.0, "training": 50.0, "pipeline": 45.0, "scale3d": 60.0},
    ("cpu", "full"): dict.fromkeys(SECTIONS, 600.0),
    ("cuda", "quick"): dict.fromkeys(SECTIONS, 150.0),
    ("cuda", "full"): dict.fromkeys(SECTIONS, 600.0),
    ("cpu", "tiny"): dict.fromkeys(SECTIONS, 120.0),
    ("cuda", "tiny"): dict.fromkeys(SECTIONS, 120.0),
}


def _section(name: str) -> Any:
    return importlib.import_module(f"brainvq_monai.apps.benchmark.{SECTIONS[name]}")


def _budgets(device: torch.device, mode: str, names: Sequence[str], section_budget_s: float | None) -> dict:
    if section_budget_s is not None and not section_budget_s > 0:
        raise BrainVQInputError("--section-budget-s", f"must be > 0 seconds, got {section_budget_s}")
    defaults = SECTION_BUDGET_S[(device.type, mode)]
    return {name: float(section_budget_s) if section_budget_s is not None else defaults[name] for name in names}


def _hardware(device: torch.device, threads: dict[str, int], cpuinfo: str | None) -> dict[str, Any]:
    text = _hw.read_cpuinfo() if cpuinfo is None else cpuinfo
    return {"cpu_model": _hw.cpu_model(text), "threads": threads, "bf16": _hw.bf16_support(device, text)}


def _run_section(
    name: str, dev: torch.device, mode: str, seed: int, seconds: float, bf16: dict[str, Any]
) -> tuple[list[dict[str, Any]], float]:
    budget = Budget(name, seconds)
    budget.log("start")
    rows = _section(name).run(dev, quick=mode == "quick", tiny=mode == "tiny", seed=seed, budget=budget, bf16=bf16)
    took = budget.elapsed()
    over = f", {took - seconds:.0f} s over budget" if took > seconds else ""
    budget.log(f"done: {len(rows)} rows in {took:.0f} s{over}")
    return rows, took


def run_benchmark(
    device: str | torch.device = "cpu",
    quick: bool = False,
    tiny: bool = False,
    seed: int = 0,
    sections: Sequence[str] | None = None,
    threads: int = 1,
    section_budget_s: float | None = None,
    cpuinfo: str | None = None,
) -> dict[str, Any]:
    """Runs the benchmark sections and returns the report.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"``).
        quick: smaller CPU sizes (the whole run in a few minutes on two cores).
        tiny: test-suite sizes (seconds).
        seed: seed of weights, data and samplers.
        sections: the sections to run (default: all of :data:`SECTIONS`).
        threads: torch intra-op threads during the run (``0``: torch's default); restored afterwards.
        section_budget_s: the time budget of every section (default: :data:`SECTION_BUDGET_S`).
        cpuinfo: ``/proc/cpuinfo`` text to detect bf16 units from (default: this machine's; tests pass fakes).

    Returns:
        ``{"date", "mode", "seed", "device", "hardware", "threads", "versions", "seconds", "sections": {name: rows},
        "section_seconds", "section_budget_s", "over_budget", "data_feed"}``.

    Raises:
        BrainVQInputError: unknown section, bad threads or budget, or CUDA requested without CUDA.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BrainVQInputError("--device", "cuda requested but CUDA is not available")
    names = list(sections) if sections else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise BrainVQInputError("--sections", f"unknown {unknown}; choose from {list(SECTIONS)}")
    mode = "tiny" if tiny else ("quick" if quick else "full")
    budgets = _budgets(dev, mode, names, section_budget_s)
    start = time.perf_counter()
    with _hw.pinned_threads(threads) as thread_record:
        hardware = _hardware(dev, thread_record, cpuinfo)
        report: dict[str, Any] = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "mode": mode,
            "seed": seed,
            "device": device_info(dev),
            "hardware": hardware,
            "threads": thread_record,
            "versions": versions(),
            "sections": {},
            "section_seconds": {},
            "section_budget_s": budgets,
        }
        bf16 = hardware["bf16"]
        progress(
            f"{mode} run on {dev} ({hardware['cpu_model']}), {thread_record['torch_threads']} torch thread(s), "
            f"bf16 rows {'on' if bf16['usable'] else 'off: ' + str(bf16['reason'])}; sections {', '.join(names)}"
        )
        for name in names:
            report["sections"][name], report["section_seconds"][name] = _run_section(
                name, dev, mode, seed, budgets[name], bf16
            )
    report["over_budget"] = [n for n in names if report["section_seconds"][n] > budgets[n]]
    report["data_feed"] = data_feed(report["sections"])
    report["seconds"] = time.perf_counter() - start
    progress(f"finished in {report['seconds']:.0f} s")
    return report


def _rows(sections: dict[str, list[dict[str, Any]]], name: str) -> dict[str, dict[str, Any]]:
    return {row["case"]: row for row in sections.get(name, [])}


def data_feed(sections: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Loader rate next to the trainer's consumption rate (does the trainer wait on data?).

    Compares the VQ-VAE trainer's images/s with the bundle's options (``vqvae_trainer_bf16_cl_fused``, or
    ``vqvae_trainer_fp32`` where bf16 rows were skipped) against the 2D training-data rates of the ``pipeline``
    section, and the prior trainer's sequences/s (bf16, else fp32) against the codes loader.

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

    vq = _measured(training, ("vqvae_trainer_bf16_cl_fused", "vqvae_trainer_fp32"), "images_per_s")
    if vq is not None:
        feed["vqvae_trainer_case"] = vq["case"]
        feed["vqvae_trainer_images_per_s"] = vq["results"]["images_per_s"]
        compare("vqvae_2d_feed", feed["vqvae_trainer_images_per_s"])
    prior = _measured(training, ("prior_transformer_trainer_bf16", "prior_transformer_trainer_fp32"), "tokens_per_s")
    if prior is not None:
        tokens = max(1, prior["config"]["tokens_per_sequence"] - 1)
        feed["prior_trainer_case"] = prior["case"]
        feed["prior_trainer_sequences_per_s"] = prior["results"]["tokens_per_s"] / tokens
        compare("prior_feed", feed["prior_trainer_sequences_per_s"])
    return feed


def _measured(rows: dict[str, dict[str, Any]], cases: Sequence[str], key: str) -> dict[str, Any] | None:
    """The first of ``cases`` whose ``key`` was measured (bf16 rows are skipped on CPUs without bf16 units)."""
    for case in cases:
        row = rows.get(case)
        if row is not None and row["results"].get(key) is not None:
            return row
    return None


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
    dev, hw = report["device"], report.get("hardware", {})
    threads = report.get("threads", {"torch_threads": dev.get("torch_threads"), "interop_threads": "?"})
    bf16 = hw.get("bf16", {})
    lines = [
        f"date: {report['date']}  mode: {report['mode']}  seed: {report['seed']}  wall: {report['seconds']:.0f} s",
        f"device: {dev['device']}  cpu: {dev['cpu']} ({dev['cpu_count']} cores)"
        + (f"  gpu: {dev['gpu']}" if "gpu" in dev else ""),
        f"torch threads: {threads['torch_threads']} intra-op, {threads['interop_threads']} inter-op"
        + ("" if "requested" not in threads else f" (--threads {threads['requested']})"),
        "bf16 units: "
        + ("yes" if bf16.get("usable") else f"no ({bf16.get('reason')})")
        + (f"  [{bf16['how']}]" if "how" in bf16 else ""),
        "versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
    ]
    budgets = report.get("section_budget_s", {})
    for name, rows in report["sections"].items():
        took = report["section_seconds"][name]
        limit = f" of {budgets[name]:.0f} s budget" if name in budgets else ""
        lines += ["", f"== {name} ({took:.0f} s{limit})", _section(name).format_rows(rows)]
    if report.get("data_feed"):
        lines += ["", "== data feed (loader rate vs trainer consumption)"]
        lines += [f"{k}: {v:,.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in report["data_feed"].items()]
    return "\n".join(lines)
