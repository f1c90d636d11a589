"""Shared helpers of the bundle tests: tiny overrides, in-process runs through ``ConfigWorkflow`` and
``python -m monai.bundle run`` subprocesses (with this checkout first on ``PYTHONPATH``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from monai.bundle import ConfigWorkflow

from brainvq_monai.bundle.layout import config_files
from brainvq_monai.bundle.tiny import tiny_overrides

BUNDLES = {2: REPO / "bundles" / "brain_vqvae_2d", 3: REPO / "bundles" / "brain_vqvae_3d"}
tiny = tiny_overrides

TRAIN_IDS = (
    "bundle_root",
    "device",
    "dataset_dir",
    "datalist",
    "output_dir",
    "ckpt_dir",
    "network_def",
    "autoencoder_def",
    "prior_def",
    "val_interval",
)
TRAIN_IDS += ("train#dataset", "train#trainer", "train#trainer#max_epochs", "train#handlers", "train#inferer")
TRAIN_IDS += ("validate#evaluator", "validate#handlers")


def run_workflow(dims: int, config: str, overrides: dict) -> ConfigWorkflow:
    """Runs a workflow (``configs/common.json`` + its overlay) through ``ConfigWorkflow``; training workflows are
    checked as MONAI "train" workflows, the others (evaluation, sampling, anomaly maps) as "infer" workflows, after
    ``initialize``."""
    cfg = BUNDLES[dims] / "configs"
    workflow = config.removesuffix(".json")
    kind = "train" if workflow.startswith("train") else "infer"
    run = ConfigWorkflow(
        config_file=config_files(BUNDLES[dims], workflow),
        meta_file=str(cfg / "metadata.json"),
        logging_file=str(cfg / "logging.conf"),
        workflow_type=kind,
        **overrides,
    )
    run.initialize()
    assert run.check_properties() == [], f"{workflow}: missing properties {run.check_properties()}"
    if kind == "train":
        for config_id in TRAIN_IDS:
            assert config_id in run.parser, f"{workflow}: no {config_id}"
    run.run()
    run.finalize()
    return run


def run_cli(dims: int, config: str, overrides: dict, launcher: tuple = (sys.executable, "-m")) -> None:
    args = [*launcher, *cli_args(dims, config, overrides)[2:]]
    proc = subprocess.run(args, capture_output=True, text=True, env=subprocess_env(), cwd=str(REPO), timeout=600)
    assert proc.returncode == 0, f"{config} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess: one thread, no warnings, this checkout first on ``PYTHONPATH``."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": path, **extra}


def cli_args(dims: int, config: str, overrides: dict) -> list[str]:
    """``python -m monai.bundle run`` arguments for a workflow of a bundle (its config list) with ``overrides``."""
    files = config_files(BUNDLES[dims], config)
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(files)]
    for k, v in overrides.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    return args


class ForkServer:
    """``python -m monai.bundle`` command lines run in forked children of one warmed-up interpreter
    (``tests/bundle_forkserver.py``): a run costs its own work, not seconds of importing torch and MONAI."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "bundle_forkserver.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
            cwd=str(REPO),
        )
        assert json.loads(self.proc.stdout.readline())["ready"]
        self.count = 0

    def run(self, args: list[str], env: dict | None = None) -> tuple[int, str, str]:
        self.count += 1
        out, err = self.folder / f"{self.count}.out", self.folder / f"{self.count}.err"
        request = {
            "args": args[3:],
            "env": env or {},
            "stdout": str(out),
            "stderr": str(err),
        }  # after "-m monai.bundle"
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        rc = json.loads(self.proc.stdout.readline())["rc"]
        return rc, out.read_text(), err.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
