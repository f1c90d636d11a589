"""Shared helpers of the bundle tests: tiny overrides, in-process runs through ``ConfigWorkflow`` and
``python -m monai.bundle run`` subprocesses (with this checkout first on ``PYTHONPATH``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO
from monai.bundle import ConfigWorkflow

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
    "val_interval",
)
TRAIN_IDS += ("train#dataset", "train#trainer", "train#trainer#max_epochs", "train#handlers", "train#inferer")
TRAIN_IDS += ("validate#evaluator", "validate#handlers")


def run_workflow(dims: int, config: str, overrides: dict) -> ConfigWorkflow:
    """Runs a config through ``ConfigWorkflow``; training configs are first checked as MONAI "train" workflows."""
    cfg = BUNDLES[dims] / "configs"
    is_train = config.startswith("train")
    workflow = ConfigWorkflow(
        config_file=str(cfg / config),
        meta_file=str(cfg / "metadata.json"),
        logging_file=str(cfg / "logging.conf"),
        workflow_type="train" if is_train else None,
        **overrides,
    )
    workflow.initialize()
    if is_train:
        assert not workflow.check_properties()  # None or [] : no required property missing
        for config_id in TRAIN_IDS:
            assert config_id in workflow.parser, f"{config}: no {config_id}"
    workflow.run()
    workflow.finalize()
    return workflow


def run_cli(dims: int, config: str, overrides: dict, launcher: tuple = (sys.executable, "-m")) -> None:
    cfg = BUNDLES[dims] / "configs"
    args = [*launcher, "monai.bundle", "run", "--config_file", str(cfg / config)]
    for k, v in overrides.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    proc = subprocess.run(args, capture_output=True, text=True, env=subprocess_env(), cwd=str(REPO), timeout=600)
    assert proc.returncode == 0, f"{config} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a subprocess: one thread, no warnings, this checkout first on ``PYTHONPATH``."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": path, **extra}


def cli_args(dims: int, config: str, overrides: dict) -> list[str]:
    """``python -m monai.bundle run`` arguments for a config of a bundle with ``overrides``."""
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLES[dims] / "configs" / config)]
    for k, v in overrides.items():
        args += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    return args
