"""Fault-injection campaign over the bundles' training configs: interrupt, check, resume, compare.

For each bundle (2D, 3D) and trainer (VQ-VAE, transformer prior), with tiny CPU settings: an uninterrupted reference
run of ``python -m monai.bundle run``, then the same run interrupted ``kills`` times, each time at a seeded-random
point of a seeded-random kind, and resumed with ``--resume true`` until it ends. The kinds:

* ``sigkill``: ``SIGKILL`` (``kill -9``) at a random moment while the trainer runs;
* ``sigkill_at_iteration``: ``SIGKILL`` right after a random iteration of those left (``BRAINVQ_FAULT``);
* ``sigkill_in_save``: ``SIGKILL`` inside the next write of the last or the best checkpoint, before the rename or
  with the temporary file half-written (``BRAINVQ_FAULT``, :mod:`brainvq_monai.utils.faults`);
* ``sigterm`` / ``sigint``: the signal at a random moment; the run must save, print one line and exit 128 + signal.

After each interruption every checkpoint on disk must load (``weights_only``), and the iterations lost are measured
(progress the run had reached minus the progress in its last checkpoint). At the end the final and best weights are
compared with the reference's. The record (JSON) holds every interruption; :func:`render_campaign` makes the tables of
``docs/reliability.md`` from it.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from brainvq_monai.bundle.layout import AUTOENCODER_WEIGHTS, config_files
from brainvq_monai.bundle.tiny import tiny_overrides
from brainvq_monai.utils.io import atomic_write_json, load_torch_file, temp_files

__all__ = ["KINDS", "campaign_failures", "render_campaign", "run_campaign"]

KINDS = ("sigkill", "sigkill_at_iteration", "sigkill_in_save", "sigterm", "sigint")
_TRAINERS = {"vqvae": ("train_vqvae", "model_autoencoder"), "prior": ("train_prior", "model")}


def _overrides(dims: int, config: str, root: Path, data: Path, epochs: int) -> dict[str, Any]:
    """Tiny CPU settings (seconds per run) of a training config."""
    return tiny_overrides(dims, config, root, data, epochs=epochs)


def _command(dims: int, workflow: str, overrides: Mapping[str, Any]) -> list[str]:
    bundle = Path(__file__).resolve().parents[2] / "bundles" / f"brain_vqvae_{dims}d"
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(config_files(bundle, workflow))]
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


def _env(fault: str | None = None) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    if fault:
        env["BRAINVQ_FAULT"] = fault
    return env


def _iteration(path: Path) -> int:
    return int(load_torch_file(path)["meta"]["iteration"]) if path.is_file() else 0


def _all_load(models: Path) -> bool:
    try:
        for path in models.glob("*.pt"):
            load_torch_file(path)
    except Exception:  # noqa: BLE001 - recorded as a failure of the guarantee
        return False
    return True


def _weights(path: Path) -> dict[str, Any]:
    """The network weights of a last checkpoint (``{"model": ...}``) or of best weights (a plain state dict)."""
    data = load_torch_file(path)
    return data["model"] if "model" in data else data


def _same(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _reached(log: Path, trainer: str, epoch_length: int) -> int:
    """Iterations the run had reached by its last ``Epoch[k] Complete`` line (a lower bound)."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    epochs = [int(k) for k in re.findall(rf"{trainer} - INFO - Epoch\[(\d+)\] Complete", text)]
    return max(epochs, default=0) * epoch_length


def _train_seconds(stdout: str, trainer: str) -> float:
    """The trainer's own run time, from Ignite's "Engine run finished. Time taken: HH:MM:SS.mmm" line."""
    found = re.findall(rf"{trainer} - INFO - Engine run finished\. Time taken: (\d+):(\d+):([\d.]+)", stdout)
    if not found:
        return 1.0
    h, m, s = found[-1]
    return 3600 * int(h) + 60 * int(m) + float(s)


def _interrupt(
    kind: str,
    args: list[str],
    root: Path,
    last: Path,
    best: Path,
    rng: random.Random,
    trainer: str,
    seconds_left: float,
    iterations_left: int,
) -> dict[str, Any]:
    """One interrupted run (a signal at a uniform moment of the training time left); returns what happened."""
    log, err = root / "stdout.txt", root / "stderr.txt"
    fault = None
    if kind == "sigkill_in_save":
        target = rng.choice([last.name, best.name])
        point = rng.choice(["atomic_write", "atomic_write_partial"])
        fault = f"{point}@{target}:{rng.randint(1, 3)}"
    elif kind == "sigkill_at_iteration":
        fault = f"iteration:{rng.randint(1, max(1, iterations_left - 1))}"
    before = _iteration(last)
    start = time.time()
    with open(log, "w") as out, open(err, "w") as errors:
        proc = subprocess.Popen(args, stdout=out, stderr=errors, env=_env(fault), cwd=str(Path.cwd()))
        if kind not in ("sigkill_in_save", "sigkill_at_iteration"):
            started = f"{trainer} - INFO - Engine run"
            while proc.poll() is None and started not in log.read_text(errors="replace"):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.05, 0.5) * seconds_left)  # the reference's pace; a loaded machine is slower
            if proc.poll() is None:
                proc.send_signal({"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[kind])
        proc.wait(timeout=900)
    after = _iteration(last)
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", err.read_text(errors="replace")) if ln.strip()]
    return {
        "kind": kind,
        "fault": fault,
        "exit_status": proc.returncode,
        "seconds": round(time.time() - start, 1),
        "checkpoint_iteration_before": before,
        "checkpoint_iteration_after": after,
        "last_stderr_line": lines[-1] if lines else "",
        "traceback_printed": "Traceback" in log.read_text(errors="replace") + err.read_text(errors="replace"),
        "all_checkpoints_load": _all_load(last.parent),
    }


def _case(d: int, name: str, out_path: Path, data: Path, kills: int, epochs: int, rng: random.Random) -> dict[str, Any]:
    """One case of the campaign: the reference run, then ``kills`` interruptions and resumes until the run ends."""
    reference = out_path / f"reference_{d}d"
    config, stem = _TRAINERS[name]
    trainer = "VQVAETrainer" if name == "vqvae" else "PriorTrainer"
    t0 = time.time()
    ref = subprocess.run(
        _command(d, config, _overrides(d, config, reference, data, epochs)),
        capture_output=True, text=True, env=_env(), timeout=1800,
    )  # fmt: skip
    if ref.returncode != 0:
        raise RuntimeError(f"reference {d}D {name} failed:\n{ref.stderr[-2000:]}")
    ref_seconds = round(time.time() - t0, 1)
    train_seconds = _train_seconds(ref.stdout, trainer)
    root = out_path / f"faulty_{d}d_{name}"
    (root / "models").mkdir(parents=True, exist_ok=True)
    if name == "prior":
        import shutil

        shutil.copy2(reference / "models" / AUTOENCODER_WEIGHTS, root / "models" / AUTOENCODER_WEIGHTS)
    last, best = root / "models" / f"{stem}_last.pt", root / "models" / f"{stem}.pt"
    epoch_length = int(load_torch_file(reference / "models" / f"{stem}_last.pt")["meta"]["epoch_length"])
    events = []
    finished = False
    for _ in range(kills):
        over = {**_overrides(d, config, root, data, epochs), "resume": "true" if last.is_file() else "false"}
        iterations_left = epochs * epoch_length - _iteration(last)
        left = train_seconds * iterations_left / (epochs * epoch_length)
        event = _interrupt(
            rng.choice(KINDS), _command(d, config, over), root, last, best, rng, trainer, left, iterations_left
        )
        event["reached_iteration"] = max(
            _reached(root / "stdout.txt", trainer, epoch_length), event["checkpoint_iteration_after"]
        )
        event["lost_iterations"] = event["reached_iteration"] - event["checkpoint_iteration_after"]
        events.append(event)
        # the run ended before the signal came (it then lands while the process exits, see the docs)
        event["finished_before_signal"] = event["checkpoint_iteration_after"] == epochs * epoch_length
        if event["exit_status"] == 0 or event["finished_before_signal"]:
            finished = True
            break
    resumes = 0
    while not finished:
        over = {**_overrides(d, config, root, data, epochs), "resume": "true" if last.is_file() else "false"}
        proc = subprocess.run(_command(d, config, over), capture_output=True, text=True, env=_env(), timeout=1800)
        resumes += 1
        finished = proc.returncode == 0
        if resumes > 3 and not finished:
            raise RuntimeError(f"{d}D {name}: resume failed:\n{proc.stderr[-2000:]}")
    return {
        "bundle": f"{d}D",
        "trainer": name,
        "epoch_length": epoch_length,
        "iterations": epochs * epoch_length,
        "reference_seconds": ref_seconds,
        "reference_train_seconds": round(train_seconds, 2),
        "interruptions": events,
        "final_weights_equal": _same(last, reference / "models" / f"{stem}_last.pt"),
        "best_weights_equal": _same(best, reference / "models" / f"{stem}.pt"),
        "temporary_files_left": len(temp_files(last)) + len(temp_files(best)),
    }


def run_campaign(
    out: str | os.PathLike,
    dims: Sequence[int] = (2, 3),
    trainers: Sequence[str] = ("vqvae", "prior"),
    kills: int = 5,
    epochs: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Runs the campaign (see the module docstring) and writes ``out/fault_injection.json``.

    Args:
        out: working folder (the demo cohort, one run folder per case).
        dims: bundles (2 and/or 3).
        trainers: ``"vqvae"`` and/or ``"prior"``.
        kills: interruptions per case (fewer when the run ends first).
        epochs: epochs of each run.
        seed: seed of the random choices (kinds, moments, faults).

    Returns:
        the record.
    """
    from brainvq_monai.data.demo import make_demo_cohort
    from brainvq_monai.utils.environment import device_info, versions

    out_path = Path(os.path.abspath(os.fspath(out)))
    data = out_path / "data"
    if not (data / "demo_cohort.json").is_file():
        make_demo_cohort(data, subjects=8, seed=3, slices_per_subject=4, workers=1)
    rng = random.Random(seed)
    record: dict[str, Any] = {
        "settings": {"dims": list(dims), "trainers": list(trainers), "kills": kills, "epochs": epochs, "seed": seed},
        "versions": versions(),
        "device": device_info("cpu"),
        "cases": [],
    }
    for d in dims:
        for name in trainers:
            record["cases"].append(_case(d, name, out_path, data, kills, epochs, rng))
            atomic_write_json(out_path / "fault_injection.json", record)
    return record


def campaign_failures(record: Mapping[str, Any]) -> list[str]:
    """The cases of a campaign whose guarantees failed: weights unlike the reference's, or a checkpoint that does not
    load after an interruption.

    Args:
        record: from :func:`run_campaign`.

    Returns:
        ``"<bundle> <trainer>"`` of each failed case (empty when every case passed).
    """
    return [
        f"{case['bundle']} {case['trainer']}"
        for case in record["cases"]
        if not (
            case["final_weights_equal"]
            and case["best_weights_equal"]
            and all(ev["all_checkpoints_load"] for ev in case["interruptions"])
        )
    ]


def render_campaign(record: Mapping[str, Any]) -> str:
    """Markdown tables of a campaign record: one row per interruption, one per case.

    Args:
        record: from :func:`run_campaign`.

    Returns:
        the Markdown text.
    """
    rows = [
        "| bundle | trainer | kind | fault | exit | checkpoint iteration before -> after | reached | lost | all load | last stderr line |",
        "|---|---|---|---|---:|---|---:|---:|---|---|",
    ]
    for case in record["cases"]:
        for ev in case["interruptions"]:
            line = ev["last_stderr_line"] if ev["exit_status"] >= 0 else ""  # killed by the signal: no line
            line = (line[:90] + "...") if len(line) > 90 else line
            if ev.get("finished_before_signal"):
                line = "(the run had finished; the signal came while the process exited)"
            rows.append(
                f"| {case['bundle']} | {case['trainer']} | {ev['kind']} | {ev['fault'] or ''} | {ev['exit_status']} | "
                f"{ev['checkpoint_iteration_before']} -> {ev['checkpoint_iteration_after']} | {ev['reached_iteration']} | "
                f"{ev['lost_iterations']} | {'yes' if ev['all_checkpoints_load'] else 'NO'} | {line} |"
            )
    rows += [
        "",
        "| bundle | trainer | iterations (epoch length) | interruptions | final weights = reference | best weights = reference | temporary files left |",
        "|---|---|---|---:|---|---|---:|",
    ]
    for case in record["cases"]:
        rows.append(
            f"| {case['bundle']} | {case['trainer']} | {case['iterations']} ({case['epoch_length']}) | "
            f"{len(case['interruptions'])} | {'yes' if case['final_weights_equal'] else 'NO'} | "
            f"{'yes' if case['best_weights_equal'] else 'NO'} | {case['temporary_files_left']} |"
        )
    return "\n".join(rows) + "\n"
