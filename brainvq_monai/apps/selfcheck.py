"""``brainvq selfcheck --device cuda``: every GPU-specific path of the toolkit in one short, time-bounded run.

The steps run in this order, each one a subprocess with its own timeout; the whole run is bounded by ``total_s``
(default 480 s: a step gets at most what is left of it):

=====================  ================================================================  ==============
step                   what it runs                                                      timeout (s)
=====================  ================================================================  ==============
``environment``        CUDA probe: GPU, driver, CUDA / cuDNN versions; bf16 autocast,    60
                       channels-last conv, causal SDPA and a fused Adam step on the GPU
``pytest_cuda``        ``pytest -m gpu``: every CUDA-only test (on a GPU none may skip)  150
``demo_data``          the demo cohort the bundle trains on (60 subjects)                90
``train_vqvae``        2D bundle at 128x128 (its default), bf16 + channels-last + fused  ``train_s`` + 90
                       Adam, for ``train_s`` seconds: images/s, final losses
``train_prior``        plain transformer prior on the cached codes (fused AdamW, bf16,   ``train_s`` + 90
                       CUDA-graph previews): sequences/s, validation NLL
``evaluate``           test SSIM / PSNR / codes used and prior NLL (``metrics.json``)    90
``inference``          samples with the CUDA-graph sampler (``use_cuda_graph``)          90
``benchmark_<name>``   ``brainvq benchmark --device cuda --sections <name>``, one per   75 / 90 / 60 / 75
                       section (sampling, training, pipeline, scale3d)
=====================  ================================================================  ==============

A failed capture of the CUDA graph is an error in every step (``PYTHONWARNINGS``), not a silent fallback to eager
decoding. The run stops at the first step that fails, times out or does not fit in what is left of ``total_s``
(``keep_going`` runs on what does not depend on it), and names that step in one line. The result files
``selfcheck.json`` and ``selfcheck.md`` (environment, every figure, each step's status, duration and command, and
the tables to paste into ``docs/benchmarks.md`` and ``docs/quality.md``) are rewritten after every step, so what
ran is kept whatever happens next; each step's output is in ``logs/<step>.log``.

``dry_run`` runs on a CPU and runs nothing heavy: it resolves every step (the collection of ``pytest -m gpu``, the
bundle configs parsed with the self-check's overrides and their networks built, the benchmark command lines parsed
by the ``brainvq`` parser, the CUDA probe's code on the CPU) and writes the result files marked as a dry run.

Exit status of ``brainvq selfcheck``: 0 every step passed (or resolved, with ``--dry-run``); 1 a step failed;
2 bad input; :data:`EXIT_NO_CUDA` (3) CUDA is not available (nothing is run or written).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from brainvq_monai.utils.errors import BrainVQError, BrainVQInputError
from brainvq_monai.utils.format import fmt
from brainvq_monai.utils.io import atomic_write_json, atomic_write_text

__all__ = [
    "EXIT_NO_CUDA",
    "RESULT_JSON",
    "RESULT_MARKDOWN",
    "SelfCheckSettings",
    "SelfCheckUnavailable",
    "Step",
    "StepResult",
    "cuda_probe",
    "make_cohort",
    "plan_steps",
    "render_markdown",
    "run_selfcheck",
    "run_step",
]

EXIT_NO_CUDA = 3
"""Exit status of ``brainvq selfcheck`` when CUDA is not available (distinct from 1, a failed step, and 2)."""
RESULT_JSON = "selfcheck.json"
RESULT_MARKDOWN = "selfcheck.md"

BUNDLE = "brain_vqvae_2d"
#: the marker the CUDA-only tests carry (registered in pyproject.toml); the self-check runs ``pytest -m gpu``
CUDA_MARKER = "gpu"
#: default timeouts (seconds) of the steps that do not depend on ``train_s``
TIMEOUTS = {"environment": 60.0, "pytest_cuda": 150.0, "demo_data": 90.0, "evaluate": 90.0, "inference": 90.0}
#: added to ``train_s`` for a training step: start-up, caching the data or the codes, validation of the last epoch
TRAIN_OVERHEAD_S = 90.0
BENCHMARK_TIMEOUTS = {"sampling": 75.0, "training": 90.0, "pipeline": 60.0, "scale3d": 75.0}  # training: compile
#: the per-section time budget option of ``brainvq benchmark``, passed when the installed CLI has it
BUDGET_OPTION = "--section-budget-s"
#: seconds of a section's timeout not given to its ``--section-budget-s`` (start-up, writing the report)
BUDGET_MARGIN_S = 25.0
#: seconds kept back from ``total_s`` for writing the results; a step is not started with less than MIN_STEP_S
RESERVE_S, MIN_STEP_S = 5.0, 10.0
#: a failed CUDA-graph capture warns and falls back to eager decoding; in the self-check it is an error
GRAPH_FALLBACK_IS_ERROR = "error:CUDA graph capture failed"
_COHORT_SLICES = 20  # the demo cohort's default slices per subject: what ``create_demo_data`` itself would make


class SelfCheckUnavailable(BrainVQError):
    """The self-check cannot run here (no CUDA); ``brainvq selfcheck`` exits with :data:`EXIT_NO_CUDA`."""

    exit_code = EXIT_NO_CUDA


@dataclass(frozen=True)
class SelfCheckSettings:
    """What one self-check runs and where it writes.

    Args:
        out: result folder: ``selfcheck.json``, ``selfcheck.md``, ``logs/``, ``benchmark/``, ``samples/``.
        work: working folder (demo cohort, bundle run, checkpoints); default ``out/work``.
        device: ``"cuda"`` or ``"cuda:N"`` (``"cpu"`` only with ``tiny``).
        total_s: bound of the whole run in seconds.
        train_s: time budget of each bundle training step (``time_budget_s``).
        subjects: demo cohort size.
        steps: run only these steps (default: all, in order).
        timeouts: ``{step: seconds}`` replacing default timeouts.
        keep_going: after a failure, still run the steps that do not depend on the failed one.
        dry_run: resolve every step on the CPU, run nothing heavy.
        tiny: the test suite's sizes (32 px, tiny networks, ``benchmark --tiny``); allows ``device="cpu"``.
        command: the command line, recorded in the results.
    """

    out: Path
    work: Path | None = None
    device: str = "cuda"
    total_s: float = 480.0
    train_s: float = 25.0
    subjects: int = 60
    steps: tuple[str, ...] | None = None
    timeouts: Mapping[str, float] = field(default_factory=dict)
    keep_going: bool = False
    dry_run: bool = False
    tiny: bool = False
    command: str = ""

    @property
    def work_dir(self) -> Path:
        """The working folder (``work`` or ``out/work``)."""
        return Path(self.work) if self.work is not None else Path(self.out) / "work"

    @property
    def run_dir(self) -> Path:
        """The bundle run folder (``output_dir``; checkpoints in ``models/``)."""
        return self.work_dir / "bundle_2d"

    @property
    def data_dir(self) -> Path:
        """The demo cohort (``dataset_dir``)."""
        return self.work_dir / "demo_data"


#: ``collect(step, settings, log_text) -> (figures, problem)``: reads a finished step's figures; a problem fails it
Collector = Callable[["Step", SelfCheckSettings, str], tuple[dict[str, Any], "str | None"]]
#: ``resolve(step, settings) -> details``: the dry run's check of a step; raises on a problem
Resolver = Callable[["Step", SelfCheckSettings], dict[str, Any]]


@dataclass(frozen=True)
class Step:
    """One step of the self-check: a command line with a timeout.

    Args:
        name: step name (``--steps``, ``--step-timeout``, the results).
        what: one line saying what it checks.
        argv: the command.
        timeout_s: its own timeout.
        needs: steps whose outputs it reads (with ``keep_going`` it does not run after one of them failed).
        env: extra environment variables.
        collect: reads the figures of a finished run (see :data:`Collector`).
        resolve: the dry run's check (see :data:`Resolver`).
        info: static facts recorded with it (e.g. the bundle overrides).
    """

    name: str
    what: str
    argv: tuple[str, ...]
    timeout_s: float
    needs: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    collect: Collector | None = None
    resolve: Resolver | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class StepResult:
    """The outcome of one step.

    Args:
        name: the step.
        status: ``passed``, ``failed``, ``timeout``, ``not_run`` or (dry run) ``resolved``.
        seconds: how long it ran.
        timeout_s: the timeout it ran under.
        returncode: the command's exit status (``None``: not run, or killed at the timeout).
        detail: one line: the figures' summary, or why it failed.
        figures: what it measured.
        log: its log file.
    """

    name: str
    status: str
    seconds: float = 0.0
    timeout_s: float | None = None
    returncode: int | None = None
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    log: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the step passed (or resolved)."""
        return self.status in ("passed", "resolved")


#: ``runner(step, timeout_s, settings) -> result``: runs one step (default :func:`run_step`; the tests fake it)
Runner = Callable[[Step, float, SelfCheckSettings], StepResult]


# ---------------------------------------------------------------------------------------------------- environment
def _driver_version() -> str | None:
    """The NVIDIA driver version (``nvidia-smi``, else ``/proc/driver/nvidia/version``), or ``None``."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    with contextlib.suppress(OSError):
        match = re.search(r"Kernel Module\s+(\S+)", Path("/proc/driver/nvidia/version").read_text())
        if match:
            return match[1]
    return None


def _gpu_facts(dev: Any) -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(dev)
    return {
        "gpu": props.name,
        "gpu_count": torch.cuda.device_count(),
        "compute_capability": f"{props.major}.{props.minor}",
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "bf16_supported": bool(torch.cuda.is_bf16_supported()),
        "flash_sdp_enabled": bool(torch.backends.cuda.flash_sdp_enabled()),
        "driver": _driver_version(),
    }


def cuda_probe(device: str = "cuda") -> dict[str, Any]:
    """The device and the first CUDA paths: bf16 autocast of a channels-last conv, causal SDPA, a fused Adam step.

    Args:
        device: ``"cuda"`` (``"cuda:N"``) on the GPU machine; ``"cpu"`` in the dry run and the tests.

    Returns:
        versions (torch, CUDA runtime, cuDNN), the GPU (name, count, compute capability, memory, driver, bf16 and
        flash-attention support) and ``smoke``.

    Raises:
        SelfCheckUnavailable: CUDA requested but not available.
    """
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SelfCheckUnavailable(f"selfcheck: CUDA is not available in this process ({no_cuda_reason()})")
    info: dict[str, Any] = {
        "device": str(dev),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if dev.type == "cuda":
        info.update(_gpu_facts(dev))
    conv = torch.nn.Conv2d(4, 8, 3, padding=1).to(dev, memory_format=torch.channels_last)
    opt = torch.optim.Adam(conv.parameters(), lr=1e-3, fused=True)
    x = torch.randn(2, 4, 16, 16, device=dev).contiguous(memory_format=torch.channels_last)
    q = torch.randn(2, 4, 64, 32, device=dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        y = conv(x)
        att = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    (y.float().square().mean() + att.float().mean()).backward()
    opt.step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    info["summary"] = f"bf16 autocast ({y.dtype}), channels-last conv, causal SDPA, fused Adam step: ok on {dev}"
    if dev.type == "cuda":
        info["summary"] += f" ({info['gpu']}, driver {info['driver']}, CUDA {info['cuda_runtime']})"
    return info


def no_cuda_reason() -> str:
    """Why CUDA is not available here, in a few words."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    return "no GPU is visible (CUDA_VISIBLE_DEVICES, driver)"


def _versions() -> dict[str, Any]:
    from brainvq_monai.utils.environment import versions

    return {**versions(), "platform": platform.platform()}


# ---------------------------------------------------------------------------------------------------- demo cohort
def make_cohort(folder: str | os.PathLike, subjects: int, seed: int = 0) -> str:
    """The demo cohort the bundle's ``create_demo_data`` would make, made with more workers (or kept when there).

    Args:
        folder: ``dataset_dir``.
        subjects: number of subjects.
        seed: the cohort's seed.

    Returns:
        what was done, in one line.
    """
    from brainvq_monai.data.demo import make_demo_cohort

    marker = Path(folder) / "demo_cohort.json"
    with contextlib.suppress(OSError, json.JSONDecodeError):
        meta = json.loads(marker.read_text())
        wanted = {"subjects": subjects, "seed": seed, "slices_per_subject": _COHORT_SLICES}
        if meta.get("complete") and all(meta.get(k) == v for k, v in wanted.items()):
            return f"demo cohort kept: {folder} ({subjects} subjects)"
    workers = max(1, min(8, os.cpu_count() or 1, subjects))
    make_demo_cohort(folder, subjects=subjects, seed=seed, workers=workers)
    return f"demo cohort made: {folder} ({subjects} subjects, {workers} workers)"


# ---------------------------------------------------------------------------------------------------- log parsing
_EPOCH_TIME = re.compile(
    r"ignite\.engine\.engine\.(\w+) - INFO - Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d+):(\d+(?:\.\d+)?)"
)
_EPOCH_METRICS = re.compile(r"Epoch\[(\d+)\] Metrics -- (.*)$")
_PAIR = re.compile(r"(\w+): (-?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf))")


def epoch_times(log: str) -> dict[str, dict[int, float]]:
    """Ignite's ``Epoch[N] Complete. Time taken`` lines: ``{engine class: {epoch: seconds}}``."""
    out: dict[str, dict[int, float]] = {}
    for engine, epoch, h, m, s in _EPOCH_TIME.findall(log):
        out.setdefault(engine, {})[int(epoch)] = int(h) * 3600 + int(m) * 60 + float(s)
    return out


def epoch_metrics(log: str) -> dict[str, list[float]]:
    """MONAI's ``Epoch[N] Metrics -- name: value ...`` lines: ``{name: [value per logged epoch]}``."""
    out: dict[str, list[float]] = {}
    for line in log.splitlines():
        match = _EPOCH_METRICS.search(line)
        if match:
            for name, value in _PAIR.findall(match[2]):
                out.setdefault(name, []).append(float(value))
    return out


def training_rate(log: str, items_per_epoch: int) -> dict[str, Any]:
    """Items per second of the training loop: epochs after the first, the validation run inside each left out.

    Args:
        log: the training step's log.
        items_per_epoch: training items one epoch takes (images, or code maps for a prior).

    Returns:
        ``{"epochs", "items_per_s", "steady_epochs", "first_epoch_s"}`` (``items_per_s`` ``None`` without timings).
    """
    times = epoch_times(log)
    trainer = next((t for name, t in times.items() if name.endswith("Trainer")), {})
    evaluator = next((t for name, t in times.items() if name.endswith("Evaluator")), {})
    loop = {e: max(trainer[e] - evaluator.get(e, 0.0), 1e-9) for e in trainer}
    epochs = sorted(loop)
    steady = epochs[1:] or epochs
    rate = items_per_epoch * len(steady) / sum(loop[e] for e in steady) if steady else None
    return {
        "epochs": epochs[-1] if epochs else 0,
        "items_per_s": rate,
        "steady_epochs": len(steady),
        "first_epoch_s": loop[epochs[0]] if epochs else None,
    }


def _last_error(log: str) -> str:
    """The line of a log that says why it failed: the last ``error`` line, else the last line."""
    lines = [ln.strip() for ln in log.replace("\r", "\n").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "brainvq: error:" in ln:
            return ln[ln.index("brainvq: error:") + len("brainvq: error:") :].strip()[:300]
    for ln in reversed(lines):
        if re.search(r"\b(\w+Error|Exception|FAILED|failed)\b", ln):
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


# ---------------------------------------------------------------------------------------------------- steps
def _python(*args: str) -> tuple[str, ...]:
    return (sys.executable, *args)


def source_root() -> Path:
    """The folder holding the ``brainvq_monai`` package in use (a source checkout has ``tests/`` there)."""
    import brainvq_monai

    return Path(brainvq_monai.__file__).resolve().parents[1]


def _environment_step(s: SelfCheckSettings) -> Step:
    code = f"import json; from brainvq_monai.apps.selfcheck import cuda_probe; print(json.dumps(cuda_probe({_probe_device(s)!r})))"
    return Step(
        "environment",
        "CUDA probe: GPU, driver, CUDA/cuDNN; bf16 autocast, channels-last conv, causal SDPA, fused Adam step",
        _python("-c", code),
        TIMEOUTS["environment"],
        collect=_collect_environment,
        resolve=lambda step, settings: cuda_probe("cpu"),
    )


def _probe_device(s: SelfCheckSettings) -> str:
    return "cpu" if s.device == "cpu" else "cuda"  # cuda:N is cuda:0 of the subprocess (CUDA_VISIBLE_DEVICES)


def _collect_environment(step: Step, s: SelfCheckSettings, log: str) -> tuple[dict[str, Any], str | None]:
    for line in reversed(log.splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            probe = json.loads(line)
            if isinstance(probe, dict):
                return probe, None
    return {}, "the CUDA probe printed no result"


def _pytest_step(s: SelfCheckSettings) -> Step:
    junit = Path(s.out) / "logs" / "pytest_cuda.xml"
    argv = _python("-m", "pytest", "-m", CUDA_MARKER, "-q", "-ra", "-p", "no:cacheprovider", "tests")
    return Step(
        "pytest_cuda",
        f"pytest -m {CUDA_MARKER}: every CUDA-only test of tests/",
        (*argv, f"--junitxml={junit}"),
        TIMEOUTS["pytest_cuda"],
        collect=_collect_pytest,
        resolve=_resolve_pytest,
        info={"junit": str(junit)},
    )


def _junit_cases(path: Path) -> dict[str, str]:
    """``{test id: passed | failed | skipped}`` of a JUnit XML report."""
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            cases[name] = "failed"
        elif case.find("skipped") is not None:
            cases[name] = "skipped"
        else:
            cases[name] = "passed"
    return cases


def _collect_pytest(step: Step, s: SelfCheckSettings, log: str) -> tuple[dict[str, Any], str | None]:
    junit = Path(step.info["junit"])
    if not junit.is_file():
        return {}, "pytest wrote no report"
    cases = _junit_cases(junit)
    counts = {k: sum(v == k for v in cases.values()) for k in ("passed", "failed", "skipped")}
    figures = {"tests": cases, **counts, "summary": ", ".join(f"{v} {k}" for k, v in counts.items())}
    if not cases:
        return figures, f"no test carries the {CUDA_MARKER} marker"
    if counts["failed"]:
        return figures, f"failed: {', '.join(k for k, v in cases.items() if v == 'failed')}"
    if counts["skipped"] and s.device != "cpu":
        return figures, f"skipped on a CUDA machine: {', '.join(k for k, v in cases.items() if v == 'skipped')}"
    return figures, None


def _resolve_pytest(step: Step, s: SelfCheckSettings) -> dict[str, Any]:
    tests = source_root() / "tests"
    if not tests.is_dir():
        raise BrainVQInputError(tests, "not found: the self-check runs the test suite of a source checkout")
    argv = _python("-m", "pytest", "-m", CUDA_MARKER, "--collect-only", "-q", "-p", "no:cacheprovider", "tests")
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=str(source_root()), env=_env(s), timeout=120)
    ids = [ln.strip() for ln in proc.stdout.splitlines() if "::" in ln]
    if proc.returncode != 0 or not ids:
        raise BrainVQError(f"pytest -m {CUDA_MARKER} --collect-only: {_last_error(proc.stdout + proc.stderr)}")
    return {"collected": ids, "summary": f"{len(ids)} tests collected"}


def _demo_data_step(s: SelfCheckSettings) -> Step:
    code = (
        "from brainvq_monai.apps.selfcheck import make_cohort; "
        f"print(make_cohort({str(s.data_dir)!r}, {int(s.subjects)}))"
    )
    return Step(
        "demo_data",
        f"the demo cohort ({s.subjects} subjects) the bundle trains on",
        _python("-c", code),
        TIMEOUTS["demo_data"],
        collect=lambda step, settings, log: ({"summary": _last_line(log)}, None),
        resolve=_resolve_demo_data,
    )


def _last_line(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _resolve_demo_data(step: Step, s: SelfCheckSettings) -> dict[str, Any]:
    from brainvq_monai.data.demo import validate_demo_settings

    validate_demo_settings(s.subjects, 0, _COHORT_SLICES)
    return {"summary": f"{s.subjects} subjects in {s.data_dir}"}


def bundle_overrides(s: SelfCheckSettings, workflow: str) -> dict[str, Any]:
    """The 2D bundle's overrides of a self-check workflow: its defaults (128x128), bf16, channels-last, the fused
    optimizers of its configs, a plain transformer prior with the CUDA-graph sampler, ``train_s`` per training run.

    Args:
        s: the settings.
        workflow: ``train_vqvae``, ``train_prior``, ``evaluate`` or ``inference``.

    Returns:
        ``{config ID: value}``.
    """
    from brainvq_monai.bundle.layout import PRIOR_ID
    from brainvq_monai.bundle.utils import default_bundle_root

    run, gpu = s.run_dir, s.device != "cpu"
    over: dict[str, Any] = {}
    if s.tiny:
        from brainvq_monai.bundle.tiny import tiny_overrides

        over = tiny_overrides(2, workflow, run, s.data_dir, epochs=3)
        prior = over.pop(f"{PRIOR_ID}#transformer")
        over.update({f"{PRIOR_ID}#transformer#{k}": v for k, v in prior.items()})
    over.update(
        {
            "bundle_root": default_bundle_root(BUNDLE),
            "output_dir": str(run),
            "ckpt_dir": str(run / "models"),
            "dataset_dir": str(s.data_dir),
            "data_format": "adni",
            "create_demo_data": True,
            "demo_subjects": int(s.subjects),
            "seed": 0,
            "device": "$torch.device('cuda:0')" if gpu else "$torch.device('cpu')",  # no silent CPU fallback
            "amp": gpu,
            "channels_last": gpu,
            "compile": False,
            "prior": "transformer",
            f"{PRIOR_ID}#transformer#block_size": 1,  # the plain transformer: the one with the CUDA-graph sampler
            f"{PRIOR_ID}#transformer#use_cuda_graph": True,
        }
    )
    if workflow.startswith("train"):
        over.update(
            {"max_epochs": 3 if s.tiny else 100, "time_budget_s": float(s.train_s), "time_budget_clock": "wall"}
        )
    return over


def _cli_value(value: Any) -> str:
    """An override value as ``python -m monai.bundle run`` (Fire) reads it back: text as is, else a literal."""
    return value if isinstance(value, str) else repr(value)


def bundle_argv(workflow: str, overrides: Mapping[str, Any]) -> tuple[str, ...]:
    """``python -m monai.bundle run`` of a workflow of the 2D bundle with ``overrides``.

    Args:
        workflow: a workflow of :data:`brainvq_monai.bundle.layout.WORKFLOWS`.
        overrides: ``{config ID: value}``.

    Returns:
        the command line.
    """
    from brainvq_monai.bundle.layout import config_files
    from brainvq_monai.bundle.utils import default_bundle_root

    root = Path(default_bundle_root(BUNDLE))
    argv = ["-m", "monai.bundle", "run", "--config_file", json.dumps(config_files(root, workflow))]
    argv += ["--meta_file", str(root / "configs" / "metadata.json")]
    argv += ["--logging_file", str(root / "configs" / "logging.conf")]
    for key, value in overrides.items():
        argv += [f"--{key}", _cli_value(value)]
    return _python(*argv)


_BUNDLE_STEPS = {
    "train_vqvae": ("train the VQ-VAE: {size}, {precision}, fused Adam, {t:.0f} s budget", ()),
    "train_prior": (
        "train the transformer prior on cached codes: {precision}, fused AdamW, {t:.0f} s budget",
        ("train_vqvae",),
    ),
    "evaluate": ("evaluate on the test split: SSIM, PSNR, codes used, prior NLL", ("train_prior",)),
    "inference": ("sample with the CUDA-graph sampler (use_cuda_graph)", ("train_prior",)),
}


def _bundle_steps(s: SelfCheckSettings) -> list[Step]:
    steps = []
    size = [32, 32] if s.tiny else _bundle_default("spatial_size")
    precision = "bf16, channels-last" if s.device != "cpu" else "fp32 (CPU)"
    for workflow, (what, needs) in _BUNDLE_STEPS.items():
        over = bundle_overrides(s, workflow)
        training = workflow.startswith("train")
        steps.append(
            Step(
                workflow,
                what.format(t=s.train_s, size="x".join(map(str, size)), precision=precision),
                bundle_argv(workflow, over),
                float(s.train_s) + TRAIN_OVERHEAD_S if training else TIMEOUTS[workflow],
                needs=("demo_data", *needs),
                env={"TQDM_DISABLE": "1"},
                collect=_BUNDLE_COLLECTORS[workflow],
                resolve=_resolve_bundle,
                info={"workflow": workflow, "overrides": over},
            )
        )
    return steps


def _training_items(s: SelfCheckSettings, over: Mapping[str, Any]) -> int:
    """Training items one epoch takes (the datalist's training split; ``drop_last`` when it has more than a batch)."""
    datalist = s.run_dir / f"datalist_{over.get('data_format', 'adni')}.json"
    with contextlib.suppress(OSError, json.JSONDecodeError, KeyError):
        n = len(json.loads(datalist.read_text())["training"])
        batch = int(over.get("batch_size") or _bundle_default("batch_size"))
        return n // batch * batch if n > batch else n
    return 0


def _bundle_default(config_id: str) -> Any:
    from brainvq_monai.bundle.layout import read_bundle_config
    from brainvq_monai.bundle.utils import default_bundle_root

    return read_bundle_config(default_bundle_root(BUNDLE), "train_vqvae")[config_id]


def _first_last(values: Sequence[float] | None) -> dict[str, float] | None:
    return {"first": values[0], "last": values[-1]} if values else None


def _collect_train(step: Step, s: SelfCheckSettings, log: str, weights: str) -> tuple[dict[str, Any], str | None]:
    over = step.info["overrides"]
    items = _training_items(s, over)
    rate = training_rate(log, items)
    metrics = epoch_metrics(log)
    figures: dict[str, Any] = {**rate, "items_per_epoch": items, "time_budget_s": over.get("time_budget_s")}
    figures["num_embeddings"] = over.get("num_embeddings") or _bundle_default("num_embeddings")
    figures["spatial_size"] = over.get("spatial_size") or _bundle_default("spatial_size")
    figures["metrics"] = {k: _first_last(v) for k, v in metrics.items()}
    if not rate["epochs"]:
        return figures, "no training epoch completed"
    if not (s.run_dir / "models" / weights).is_file():
        return figures, f"no checkpoint models/{weights}"
    return figures, None


def _collect_vqvae(step: Step, s: SelfCheckSettings, log: str) -> tuple[dict[str, Any], str | None]:
    figures, problem = _collect_train(step, s, log, "model_autoencoder.pt")
    figures["images_per_s"] = figures.pop("items_per_s")
    m = figures["metrics"]
    figures["summary"] = (
        f"{figures['epochs']} epochs, {fmt(figures['images_per_s'], 1)} img/s, "
        f"train loss {fmt((m.get('train_loss') or {}).get('last'), 4)}, val SSIM {fmt((m.get('val_ssim') or {}).get('last'))}"
    )
    return figures, problem


def _recorded_prior(s: SelfCheckSettings) -> dict[str, Any]:
    """The transformer options the run recorded (``run_settings.json``): what the prior was really built with."""
    with contextlib.suppress(OSError, json.JSONDecodeError, AttributeError):
        record = json.loads((s.run_dir / "run_settings.json").read_text())
        return dict(record.get("prior_def", {}).get("transformer") or {})
    return {}


def _collect_prior(step: Step, s: SelfCheckSettings, log: str) -> tuple[dict[str, Any], str | None]:
    figures, problem = _collect_train(step, s, log, "model.pt")
    built = _recorded_prior(s)
    figures["prior_options"] = built
    if problem is None and not (built.get("use_cuda_graph") is True and built.get("block_size") == 1):
        problem = f"run_settings.json: the prior was not built as a plain transformer with use_cuda_graph ({built})"
    figures["sequences_per_s"] = figures.pop("items_per_s")
    tokens = _latent_tokens(step.info["overrides"])
    figures["tokens_per_s"] = (
        None if figures["sequences_per_s"] is None or not tokens else figures["sequences_per_s"] * tokens
    )
    val = figures["metrics"].get("val_nll")
    figures["summary"] = (
        f"{figures['epochs']} epochs, {fmt(figures['sequences_per_s'], 1)} seq/s, "
        f"train loss {fmt((figures['metrics'].get('train_loss') or {}).get('last'), 4)}, "
        f"val NLL {fmt((val or {}).get('first'))} -> {fmt((val or {}).get('last'))}"
    )
    return figures, problem


def _latent_tokens(over: Mapping[str, Any]) -> int | None:
    """Code-map positions per sequence: the spatial size over the VQ-VAE's stride-2 levels (2 by default)."""
    size = over.get("spatial_size") or _bundle_default("spatial_size")
    levels = len(over.get("autoencoder_def#channels") or _bundle_default("autoencoder_def#channels"))
    count = 1
    for n in size:
        count *= int(n) // 2**levels
    return count or None


def _collect_evaluate(step: Step, s: SelfCheckSettings, log: str) -> tuple[dict[str, Any], str | None]:
    path = s.run_dir / "metrics.json"
    with contextlib.suppress(OSError, json.JSONDecodeError):
        data = json.loads(path.read_text())
        rec = dict((data.get("reconstruction") or {}).get("metrics", {}))
        prior = dict((data.get("prior") or {}).get("metrics", {}))
        figures = {"reconstruction": rec, "prior": prior}
        figures["summary"] = (
            f"test SSIM {fmt(rec.get('test_ssim'))}, PSNR {fmt(rec.get('test_psnr'), 2)} dB, "
            f"codes used {fmt(rec.get('test_codes_used'), 0)}, NLL {fmt(prior.get('test_nll'))} nats/token"
        )
        return figures, None if rec and prior else "metrics.json lacks the reconstruction or prior section"
    return {}, f"no {path.name} written"


def _collect_inference(step: Step, s: SelfCheckSettings, log: str) -> tuple[dict[str, Any], str | None]:
    samples = s.run_dir / "samples"
    files = sorted(p for p in samples.glob("*") if p.is_file()) if samples.is_dir() else []
    if not files:
        return {}, "no samples written"
    copy = Path(s.out) / "samples"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(samples, copy)
    images = [p for p in files if p.name.startswith("sample_")]
    return {
        "files": len(files),
        "images": len(images),
        "copied_to": str(copy),
        "summary": f"{len(images)} samples",
    }, None


_BUNDLE_COLLECTORS: dict[str, Collector] = {
    "train_vqvae": _collect_vqvae,
    "train_prior": _collect_prior,
    "evaluate": _collect_evaluate,
    "inference": _collect_inference,
}


def _resolve_bundle(step: Step, s: SelfCheckSettings) -> dict[str, Any]:
    """Parses the workflow's configs with the overrides and builds what needs no data: the device, the checks, the
    VQ-VAE and the prior (on the CPU)."""
    from brainvq_monai.bundle.layout import read_bundle_config
    from brainvq_monai.bundle.utils import default_bundle_root

    workflow, over = step.info["workflow"], step.info["overrides"]
    parser = read_bundle_config(default_bundle_root(BUNDLE), workflow)
    for key, value in over.items():
        parent = key.rsplit("#", 1)[0]
        if key not in parser and not ("#" in key and isinstance(parser.get(parent), dict)):
            raise BrainVQInputError(key, f"not a config ID of {BUNDLE}/{workflow}")
        parser[key] = value
    ids = ["device", "model_check", "latent_shape", "autoencoder_def", "prior_def"]
    ids += (
        ["training_check"] if workflow.startswith("train") else (["sampling_check"] if workflow == "inference" else [])
    )
    built = {i: parser.get_parsed_content(i) for i in ids}
    prior = built["prior_def"]
    if type(prior).__name__ != "TransformerPrior" or not getattr(prior, "use_cuda_graph", False):
        raise BrainVQError(
            f"{workflow}: prior_def builds {type(prior).__name__}, not a TransformerPrior with use_cuda_graph"
        )
    return {
        "spatial_size": list(parser["spatial_size"]),
        "latent_shape": list(built["latent_shape"]),
        "prior": type(prior).__name__,
        "summary": f"{parser['spatial_size']} -> latent {list(built['latent_shape'])}, {type(prior).__name__}",
    }


def _benchmark_steps(s: SelfCheckSettings, parser: argparse.ArgumentParser) -> list[Step]:
    from brainvq_monai.apps.benchmark import SECTIONS

    budget = has_option(parser, "benchmark", BUDGET_OPTION)
    steps = []
    for name in SECTIONS:
        timeout = BENCHMARK_TIMEOUTS.get(name, 75.0)
        report = Path(s.out) / "benchmark" / f"{name}.json"
        args = ["benchmark", "--device", _probe_device(s), "--sections", name, "--json", str(report)]
        args += ["--tiny", "--threads", "1"] if s.tiny else []
        args += [BUDGET_OPTION, f"{max(timeout - BUDGET_MARGIN_S, 10.0):g}"] if budget else []
        steps.append(
            Step(
                f"benchmark_{name}",
                f"brainvq benchmark --sections {name}" + (" (tiny)" if s.tiny else " at the GPU sizes"),
                _python("-m", "brainvq_monai.cli", *args),
                timeout,
                collect=_collect_benchmark,
                resolve=lambda step, settings, p=parser: _resolve_benchmark(step, p),
                info={"section": name, "report": str(report), "section_budget": budget, "args": tuple(args)},
            )
        )
    return steps


def has_option(parser: argparse.ArgumentParser, command: str, option: str) -> bool:
    """Whether sub-command ``command`` of ``parser`` takes ``option`` (e.g. ``--section-budget-s``).

    Args:
        parser: the ``brainvq`` parser.
        command: the sub-command.
        option: the option string (one taking a number).

    Returns:
        ``True`` when the option exists.
    """
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            _, extra = parser.parse_known_args([command, option, "1"])
        except SystemExit:
            return False
    return option not in extra


def _resolve_benchmark(step: Step, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Parses a benchmark step's command line with the ``brainvq`` parser (nothing runs)."""
    from brainvq_monai.apps.benchmark import SECTIONS

    args = list(step.info["args"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            ns = parser.parse_args(args)
        except SystemExit:
            raise BrainVQError(f"brainvq {shlex.join(args)}: {_last_line(err.getvalue())}") from None
    unknown = [n for n in ns.sections or [] if n not in SECTIONS]
    if unknown:
        raise BrainVQError(f"brainvq benchmark: unknown section {unknown}")
    budget = f"with {BUDGET_OPTION}" if step.info["section_budget"] else f"no {BUDGET_OPTION}: the timeout bounds it"
    return {"argv": args, "summary": f"brainvq {' '.join(args[:5])} parses ({budget})"}


def _collect_benchmark(step: Step, s: SelfCheckSettings, log: str) -> tuple[dict[str, Any], str | None]:
    path = Path(step.info["report"])
    with contextlib.suppress(OSError, json.JSONDecodeError):
        report = json.loads(path.read_text())
        rows = report.get("sections", {}).get(step.info["section"], [])
        failed = [r["case"] for r in rows if r.get("check") and not r["check"].get("passed", True)]
        missed = [r["case"] for r in rows if r.get("results", {}).get("meets_target") is False]
        figures = {"report": report, "table": _benchmark_table(log), "failed_checks": failed, "missed_targets": missed}
        figures["summary"] = f"{len(rows)} rows" + (f", targets missed: {', '.join(missed)}" if missed else "")
        return figures, (f"correctness checks failed: {', '.join(failed)}" if failed else None)
    return {"table": _benchmark_table(log)}, f"no report {path.name}"


def _benchmark_table(log: str) -> str:
    """The section's table as ``brainvq benchmark`` printed it (from its ``==`` heading on)."""
    lines = log.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("== ")), None)
    return "\n".join(lines[start:]).strip() if start is not None else ""


def plan_steps(settings: SelfCheckSettings, parser: argparse.ArgumentParser) -> list[Step]:
    """The steps of a self-check, in order, with their timeouts (``settings.timeouts`` applied).

    Args:
        settings: the settings (``steps`` selects a subset).
        parser: the ``brainvq`` parser (``brainvq_monai.cli.build_parser()``): the benchmark steps are its command
            lines, checked against it, and it tells whether ``brainvq benchmark`` has ``--section-budget-s``.

    Returns:
        the steps.

    Raises:
        BrainVQInputError: an unknown step name in ``steps`` or ``timeouts``, or a timeout that is not positive.
    """
    steps = [
        _environment_step(settings),
        _pytest_step(settings),
        _demo_data_step(settings),
        *_bundle_steps(settings),
        *_benchmark_steps(settings, parser),
    ]
    names = [st.name for st in steps]
    for option, chosen in (("--steps", settings.steps or ()), ("--step-timeout", settings.timeouts)):
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise BrainVQInputError(option, f"unknown step {unknown}; the steps are {', '.join(names)}")
    for name, seconds in settings.timeouts.items():
        if not float(seconds) > 0:
            raise BrainVQInputError("--step-timeout", f"{name}: must be a positive number of seconds, got {seconds}")
    steps = [replace(st, timeout_s=float(settings.timeouts.get(st.name, st.timeout_s))) for st in steps]
    return [st for st in steps if not settings.steps or st.name in settings.steps]


# ---------------------------------------------------------------------------------------------------- running
def _env(s: SelfCheckSettings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A step's environment: this package first on ``PYTHONPATH``, a failed CUDA-graph capture an error, the
    requested GPU as ``cuda:0``."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(source_root()), os.environ.get("PYTHONPATH", "")) if p)
    env["PYTHONWARNINGS"] = ",".join(p for p in (os.environ.get("PYTHONWARNINGS"), GRAPH_FALLBACK_IS_ERROR) if p)
    if s.device.startswith("cuda:"):
        env["CUDA_VISIBLE_DEVICES"] = s.device.split(":", 1)[1]
    if s.tiny:
        env["OMP_NUM_THREADS"] = "1"
    return env


def _stop(proc: subprocess.Popen) -> None:
    """Ends a step's process group (the step and the workers it started): SIGTERM, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_step(step: Step, timeout_s: float, settings: SelfCheckSettings) -> StepResult:
    """Runs a step as a subprocess (its own process group) with a timeout, its output in ``logs/<step>.log``, then
    reads its figures.

    Args:
        step: the step.
        timeout_s: the timeout (the step's own, or less when less is left of ``total_s``).
        settings: the settings.

    Returns:
        the result: ``passed``; ``failed`` (non-zero exit, or what it wrote shows a problem); ``timeout``.
    """
    log = Path(settings.out) / "logs" / f"{step.name}.log"
    start = time.monotonic()
    with open(log, "w") as f:
        f.write(f"$ {shlex.join(step.argv)}\n")
        f.flush()
        proc = subprocess.Popen(
            step.argv,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=str(source_root()),
            env=_env(settings, step.env),
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if proc.poll() is None:
                _stop(proc)
    seconds = time.monotonic() - start
    text = log.read_text(errors="replace")
    figures, problem = step.collect(step, settings, text) if step.collect else ({}, None)
    if problem is None and "CUDA graph capture failed" in text:  # also an error by PYTHONWARNINGS; never a pass
        problem = "CUDA graph capture failed (the sampler fell back to eager decoding)"
    result = StepResult(step.name, "passed", seconds, timeout_s, code, "", figures, str(log))
    if code is None:
        result.status, result.detail = "timeout", f"no result within {timeout_s:.0f} s (stopped); see {log}"
    elif code != 0:
        result.status, result.detail = "failed", f"exit {code}: {_last_error(text.split(chr(10), 1)[-1])}"
    elif problem:
        result.status, result.detail = "failed", problem
    else:
        result.detail = str(figures.get("summary", "ok"))
    return result


def _resolve_step(step: Step, settings: SelfCheckSettings) -> StepResult:
    """The dry run of a step: its resolver, or nothing to resolve."""
    start = time.monotonic()
    try:
        details = step.resolve(step, settings) if step.resolve else {}
    except Exception as err:  # noqa: BLE001 - any problem fails the step, named in one line
        detail = " ".join(str(err).split())[:300]
        return StepResult(step.name, "failed", time.monotonic() - start, step.timeout_s, detail=detail)
    result = StepResult(step.name, "resolved", time.monotonic() - start, step.timeout_s, figures=details)
    result.detail = str(details.get("summary", "resolved"))
    return result


def _check_device(settings: SelfCheckSettings) -> None:
    """Bad devices are bad input; CUDA requested where there is none is a refusal (:data:`EXIT_NO_CUDA`)."""
    device = settings.device
    if not re.fullmatch(r"cuda(:\d+)?|cpu", device):
        raise BrainVQInputError("--device", f"must be cuda or cuda:N, got {device!r}")
    if device == "cpu" and not settings.tiny:
        raise BrainVQInputError("--device", "the self-check checks the CUDA paths: use cuda (or --dry-run on a CPU)")
    if settings.total_s <= 0 or settings.train_s <= 0:
        raise BrainVQInputError("--total-s/--train-s", "must be positive numbers of seconds")
    if device == "cpu" or settings.dry_run:
        return
    import torch

    if not torch.cuda.is_available():
        raise SelfCheckUnavailable(f"selfcheck: CUDA is not available ({no_cuda_reason()}); nothing was run")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise BrainVQInputError("--device", f"{device}: only {torch.cuda.device_count()} GPU(s) visible")


def _skip_reason(
    step: Step, results: Mapping[str, StepResult], failed: bool, left: float, settings: SelfCheckSettings
) -> tuple[str | None, bool]:
    """Why a step does not run (``None``: it runs), and whether that fails the self-check (out of time)."""
    blocked = [n for n in step.needs if n in results and not results[n].ok]
    if blocked:
        return f"not run: needs {', '.join(blocked)}", False
    if failed and not settings.keep_going:
        return "not run: an earlier step failed", False
    if not settings.dry_run and left < min(step.timeout_s, MIN_STEP_S):
        return f"not run: the {settings.total_s:.0f} s total was spent ({max(left, 0.0):.0f} s left)", True
    return None, False


def _execute(
    steps: Sequence[Step], settings: SelfCheckSettings, runner: Runner, record: dict[str, Any]
) -> StepResult | None:
    """Runs (or, dry, resolves) the steps in order, saving the results after each; returns the first failure."""
    deadline = time.monotonic() + float(settings.total_s)
    results: dict[str, StepResult] = {}
    first: StepResult | None = None
    for i, step in enumerate(steps, 1):
        left = deadline - time.monotonic() - RESERVE_S
        reason, fails = _skip_reason(step, results, first is not None, left, settings)
        if reason:
            result = StepResult(step.name, "not_run", detail=reason)
        else:
            timeout = min(step.timeout_s, left)
            _say(
                f"[{i}/{len(steps)}] {step.name}: {step.what}"
                + ("" if settings.dry_run else f" (timeout {timeout:.0f} s)")
            )
            result = _resolve_step(step, settings) if settings.dry_run else runner(step, timeout, settings)
            fails = not result.ok
        _say(f"[{i}/{len(steps)}] {step.name}: {result.status} ({result.seconds:.0f} s): {result.detail}")
        if fails and first is None:
            first = result
        results[step.name] = result
        record["steps"][step.name].update(asdict(result))
        _save(record, settings)
    return first


def _say(msg: str) -> None:
    print(f"brainvq selfcheck: {msg}", file=sys.stderr, flush=True)


def _new_record(steps: Sequence[Step], settings: SelfCheckSettings) -> dict[str, Any]:
    env: dict[str, Any] = _versions()
    with contextlib.suppress(Exception):
        import torch

        env.update(cuda_runtime=torch.version.cuda, cuda_available=torch.cuda.is_available())
    return {
        "format": 1,
        "tool": "brainvq selfcheck",
        "dry_run": settings.dry_run,
        "tiny": settings.tiny,
        "status": "running",
        "failed_step": None,
        "message": "",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": settings.command,
        "seconds": 0.0,
        "settings": _settings_record(settings),
        "environment": env,
        "steps": {
            st.name: {"what": st.what, "command": shlex.join(st.argv), "status": "pending", "needs": list(st.needs)}
            for st in steps
        },
    }


def _settings_record(s: SelfCheckSettings) -> dict[str, Any]:
    out = {k: v for k, v in asdict(s).items() if k not in ("command",)}
    return json.loads(json.dumps(out, default=str))


def _save(record: dict[str, Any], settings: SelfCheckSettings) -> None:
    step = record["steps"].get("environment", {})
    if step.get("status") == "passed":
        record["environment"].update({k: v for k, v in step.get("figures", {}).items() if k != "summary"})
    out = Path(settings.out)
    atomic_write_json(out / RESULT_JSON, json.loads(json.dumps(record, default=str)))
    atomic_write_text(out / RESULT_MARKDOWN, render_markdown(record))


def run_selfcheck(
    settings: SelfCheckSettings, parser: argparse.ArgumentParser, runner: Runner | None = None
) -> dict[str, Any]:
    """Runs the self-check (or, with ``settings.dry_run``, resolves it) and writes ``selfcheck.json`` and
    ``selfcheck.md`` in ``settings.out`` (after every step).

    Args:
        settings: the settings.
        parser: the ``brainvq`` parser (see :func:`plan_steps`).
        runner: runs one step (default :func:`run_step`).

    Returns:
        the record (what ``selfcheck.json`` holds).

    Raises:
        SelfCheckUnavailable: CUDA requested but not available (nothing run or written).
        BrainVQInputError: bad settings.
        BrainVQError: a step failed, timed out or did not fit in ``total_s``; the message names it (the result
            files hold what ran).
    """
    _check_device(settings)
    settings = replace(settings, out=Path(settings.out).resolve(), work=settings.work_dir.resolve())
    steps = plan_steps(settings, parser)
    out = Path(settings.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "benchmark").mkdir(exist_ok=True)
    if not settings.dry_run:
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        if any(st.name == "train_vqvae" for st in steps):
            shutil.rmtree(settings.run_dir, ignore_errors=True)  # a fresh bundle run (checkpoints, code caches)
    if not settings.dry_run:
        _clear_outputs(steps, out)
    record = _new_record(steps, settings)
    start = time.monotonic()
    failure = _execute(steps, settings, runner or run_step, record)
    record["seconds"] = round(time.monotonic() - start, 1)
    record["status"] = "failed" if failure else ("resolved (dry run)" if settings.dry_run else "passed")
    record["failed_step"] = failure.name if failure else None
    record["message"] = _message(failure, settings)
    _save(record, settings)
    if failure:
        raise BrainVQError(record["message"])
    return record


def _clear_outputs(steps: Sequence[Step], out: Path) -> None:
    """Removes what an earlier self-check in ``out`` left for these steps (logs, reports, samples), so that a step
    that writes nothing is never read from a stale file."""
    for step in steps:
        stale = [
            out / "logs" / f"{step.name}.log",
            *(Path(step.info[k]) for k in ("junit", "report") if k in step.info),
        ]
        for path in stale:
            path.unlink(missing_ok=True)
        if step.name == "inference":
            shutil.rmtree(out / "samples", ignore_errors=True)


def _message(failure: StepResult | None, settings: SelfCheckSettings) -> str:
    where = f"results in {Path(settings.out) / RESULT_MARKDOWN}"
    if failure is None:
        what = "every step resolved (dry run)" if settings.dry_run else "every step passed"
        return f"selfcheck: {what}; {where}"
    detail = failure.detail.removeprefix("not run: ")
    return f"selfcheck: step {failure.name} {failure.status.replace('_', ' ')}: {detail}; {where}"


# ---------------------------------------------------------------------------------------------------- Markdown
def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return lines


def _md_environment(record: Mapping[str, Any]) -> list[str]:
    env = record["environment"]
    keys = ("gpu", "gpu_count", "compute_capability", "gpu_memory_gib", "driver", "cuda_runtime", "cudnn")
    keys += ("bf16_supported", "flash_sdp_enabled", "python", "torch", "monai", "numpy", "brainvq_monai", "platform")
    return ["## Environment", "", *_md_table(["", "value"], [(k, fmt(env.get(k))) for k in keys if k in env]), ""]


def _md_steps(record: Mapping[str, Any]) -> list[str]:
    rows = [
        (
            f"`{name}`",
            st.get("status"),
            fmt(st.get("seconds"), ".1f"),
            fmt(st.get("timeout_s"), ".0f"),
            st.get("detail", ""),
        )
        for name, st in record["steps"].items()
    ]
    cmds = [f"- `{name}`: `{st['command']}`" for name, st in record["steps"].items()]
    return [
        "## Steps",
        "",
        *_md_table(["step", "status", "seconds", "timeout s", "detail"], rows),
        "",
        "<details><summary>commands</summary>",
        "",
        *cmds,
        "",
        "</details>",
        "",
    ]


def _fig(record: Mapping[str, Any], step: str) -> dict[str, Any]:
    return dict(record["steps"].get(step, {}).get("figures") or {})


def _metric(figures: Mapping[str, Any], name: str, end: str = "last") -> Any:
    return (figures.get("metrics", {}).get(name) or {}).get(end)


def _md_bundle(record: Mapping[str, Any]) -> list[str]:
    vq, pr, ev = _fig(record, "train_vqvae"), _fig(record, "train_prior"), _fig(record, "evaluate")
    rec, nll = ev.get("reconstruction", {}), ev.get("prior", {})
    rows = [
        ("VQ-VAE epochs in the budget", fmt(vq.get("epochs")), f"{fmt(vq.get('time_budget_s'), 0)} s budget"),
        ("VQ-VAE training images/s", fmt(vq.get("images_per_s"), 1), "epochs after the first, validation excluded"),
        ("VQ-VAE final train loss", fmt(_metric(vq, "train_loss"), 4), ""),
        (
            "VQ-VAE val SSIM / PSNR (last epoch)",
            f"{fmt(_metric(vq, 'val_ssim'))} / {fmt(_metric(vq, 'val_psnr'), 2)}",
            "",
        ),
        ("prior epochs in the budget", fmt(pr.get("epochs")), f"{fmt(pr.get('time_budget_s'), 0)} s budget"),
        (
            "prior training sequences/s (tokens/s)",
            f"{fmt(pr.get('sequences_per_s'), 1)} ({fmt(pr.get('tokens_per_s'), ',.0f')})",
            "",
        ),
        ("prior final train loss", fmt(_metric(pr, "train_loss"), 4), ""),
        (
            "prior val NLL (nats/token), first -> last epoch",
            f"{fmt(_metric(pr, 'val_nll', 'first'))} -> {fmt(_metric(pr, 'val_nll'))}",
            "",
        ),
        (
            "test SSIM / PSNR (dB), whole image",
            f"{fmt(rec.get('test_ssim'))} / {fmt(rec.get('test_psnr'), 2)}",
            "evaluate.json",
        ),
        (
            "test codes used / perplexity",
            f"{fmt(rec.get('test_codes_used'), 0)} / {fmt(rec.get('test_perplexity'), 1)}",
            "",
        ),
        ("test NLL (nats/token)", fmt(nll.get("test_nll")), ""),
        ("samples (CUDA-graph sampler)", fmt(_fig(record, "inference").get("images")), "samples/"),
    ]
    size = "x".join(str(n) for n in vq.get("spatial_size") or ["?"])
    return [f"## 2D bundle at {size} on the demo cohort", "", *_md_table(["figure", "value", "note"], rows), ""]


def _md_paste(record: Mapping[str, Any]) -> list[str]:
    env, vq, pr = record["environment"], _fig(record, "train_vqvae"), _fig(record, "train_prior")
    rec = _fig(record, "evaluate").get("reconstruction", {})
    device = f"{env.get('gpu', 'GPU')}, driver {fmt(env.get('driver'))}, CUDA {fmt(env.get('cuda_runtime'))}"
    header = (
        f"GPU figures: measured {record['date'][:10]} on {device}, Python {env.get('python')}, torch {env.get('torch')}, "
        f"MONAI {env.get('monai')}, brainvq_monai {env.get('brainvq_monai')}, `brainvq selfcheck` ({fmt(record['seconds'], 0)} s)."
    )
    quality = (
        f"| GPU ({env.get('gpu', '')}), bf16 | {fmt(vq.get('time_budget_s'), 0)} s wall | "
        f"{fmt(vq.get('epochs'))} / {fmt(pr.get('epochs'))} | {fmt(rec.get('test_ssim'))} (whole image) | "
        f"{fmt(rec.get('test_psnr'), 2)} (whole image) | {fmt(rec.get('test_codes_used'), 0)} / {fmt(vq.get('num_embeddings'))} | "
        f"{fmt(_metric(pr, 'val_nll', 'first'), 2)} -> {fmt(_metric(pr, 'val_nll'), 2)} | - | - |"
    )
    lines = ["## To paste", "", "docs/benchmarks.md: this line next to the CPU figures line; the section tables below."]
    lines += ["", "```", header, "```", ""]
    lines += [
        "docs/quality.md, the GPU row of the 128x128 table. Differences from that table's CPU row: the prior is the "
        "plain transformer (the CUDA-graph sampler), not the block prior; SSIM and PSNR are `evaluate`'s whole-image "
        "figures, not brain-masked; FID and C2ST are not computed here (`brainvq ablation --bundle-row SECONDS`).",
    ]
    return [*lines, "", "```", quality, "```", ""]


def _md_benchmark(record: Mapping[str, Any]) -> list[str]:
    lines = ["## Benchmark sections", ""]
    for name, st in record["steps"].items():
        if name.startswith("benchmark_"):
            table = (st.get("figures") or {}).get("table") or f"({st.get('status')}: {st.get('detail', '')})"
            lines += [f"### {name.removeprefix('benchmark_')}", "", "```", table, "```", ""]
    return lines


def _md_pytest(record: Mapping[str, Any]) -> list[str]:
    st = record["steps"].get("pytest_cuda", {})
    tests = (st.get("figures") or {}).get("tests") or {
        t: "collected" for t in (st.get("figures") or {}).get("collected", [])
    }
    if not tests:
        return []
    return [f"## pytest -m {CUDA_MARKER}", "", *_md_table(["test", "result"], sorted(tests.items())), ""]


def render_markdown(record: Mapping[str, Any]) -> str:
    """The Markdown results page of a self-check record.

    Args:
        record: what :func:`run_selfcheck` returns (``selfcheck.json``).

    Returns:
        the page: status, environment, steps, bundle figures, the lines to paste, pytest results, benchmark tables.
    """
    kind = (
        " (DRY RUN: nothing was measured)" if record.get("dry_run") else (" (tiny, CPU)" if record.get("tiny") else "")
    )
    lines = [
        f"# brainvq GPU self-check{kind}",
        "",
        f"**{str(record['status']).upper()}**" + (f": {record['message']}" if record.get("message") else ""),
        "",
        f"{record['date']}, {fmt(record.get('seconds'), 0)} s of {fmt(record['settings'].get('total_s'), 0)} s; "
        f"`{record.get('command') or 'brainvq selfcheck'}`",
        "",
    ]
    lines += _md_environment(record) + _md_steps(record)
    if not record.get("dry_run"):
        lines += _md_bundle(record) + _md_paste(record)
    lines += _md_pytest(record) + _md_benchmark(record)
    return "\n".join(lines).rstrip() + "\n"
