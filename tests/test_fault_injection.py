"""Fault injection: ``python -m monai.bundle run`` training runs killed with SIGKILL at random points (inside an
iteration, while writing a checkpoint, the cached codes or the datalist), stopped with SIGINT/SIGTERM, then resumed
with ``--resume true``, for the VQ-VAE and the prior of both bundles.

After every kill: each checkpoint on disk loads (``weights_only``), and at most the epoch in progress is lost. After
the last resume: the final and best weights are bit-for-bit those of an uninterrupted run (CPU, ``num_workers=0``).
The random points come from seeded generators, so a failure reproduces; ``BRAINVQ_FAULT`` (see
``brainvq_monai.utils.faults``) makes the process kill itself exactly there, as ``kill -9`` would.
"""

from __future__ import annotations

import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from bundle_helpers import ForkServer, cli_args, run_workflow, subprocess_env, tiny
from conftest import REPO

from brainvq_monai.utils.io import load_torch_file, temp_files

pytestmark = pytest.mark.slow

EPOCHS = 3
LAST = {"train_vqvae.json": "model_autoencoder_last.pt", "train_prior.json": "model_last.pt"}
BEST = {"train_vqvae.json": "model_autoencoder.pt", "train_prior.json": "model.pt"}


def _overrides(dims: int, config: str, root: Path, data: Path, epochs: int, **extra) -> dict:
    return {**tiny(dims, config, root, data, epochs=epochs), **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python -m monai.bundle run`` in forked children of one warmed-up interpreter (same exit statuses and
    signals as a fresh process; the fault point reads ``BRAINVQ_FAULT`` when it is reached)."""
    forks = ForkServer(tmp_path_factory.mktemp("fork_logs"))
    yield forks
    forks.close()


def _run(server, dims, config, root, data, epochs, fault=None, **extra) -> subprocess.CompletedProcess:
    args = cli_args(dims, config, _overrides(dims, config, root, data, epochs, **extra))
    rc, out, err = server.run(args, env={"BRAINVQ_FAULT": fault} if fault else {})
    return subprocess.CompletedProcess(args, rc, out, err)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    return lines[-1] if lines else ""


def _all_checkpoints_load(models: Path) -> dict[str, dict]:
    """Every checkpoint on disk loads (weights_only); returns the ``meta`` of the training checkpoints."""
    metas = {}
    for path in sorted(models.glob("*.pt")):
        ckpt = load_torch_file(path)
        # a last checkpoint holds {"model": ..., "meta": ...}; best weights are a plain state dict (zoo style)
        assert "model" in ckpt if path.stem.endswith("_last") else all(torch.is_tensor(v) for v in ckpt.values()), path
        if "meta" in ckpt:
            metas[path.name] = ckpt["meta"]
    return metas


def _weights(path: Path) -> dict:
    data = load_torch_file(path)
    return data["model"] if path.stem.endswith("_last") else data


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _reference(dims: int, root: Path, data: Path, epochs: int) -> Path:
    """Uninterrupted VQ-VAE and prior runs, in process."""
    run_workflow(dims, "train_vqvae.json", _overrides(dims, "train_vqvae.json", root, data, epochs))
    run_workflow(dims, "train_prior.json", _overrides(dims, "train_prior.json", root, data, epochs))
    return root / "models"


@pytest.mark.parametrize("dims", [2, 3])
def test_kill_9_at_random_points_then_resume(dims, demo_cohort, tmp_path, server):
    """Per trainer: a fresh run killed while writing a file (a random one of: the last checkpoint at a random save,
    half-written; the best checkpoint; the datalist; the cached codes), the next run killed after a random
    iteration (saving every iteration or only at epoch ends, at random), then a resume to the end."""
    reference = _reference(dims, tmp_path / "reference", demo_cohort, EPOCHS)
    epoch_length = load_torch_file(reference / "model_autoencoder_last.pt")["meta"]["epoch_length"]
    total = EPOCHS * epoch_length
    rng = random.Random(11_000 + dims)
    for config in ("train_vqvae.json", "train_prior.json"):
        root = tmp_path / config.split(".")[0]
        (root / "models").mkdir(parents=True)
        if config == "train_prior.json":
            shutil.copy2(reference / "model_autoencoder.pt", root / "models" / "model_autoencoder.pt")
        last, best = root / "models" / LAST[config], root / "models" / BEST[config]
        saves = [
            f"atomic_write@{LAST[config]}:{rng.randint(1, EPOCHS + 1)}",  # 1: at the start, then at each epoch end
            f"atomic_write_partial@{LAST[config]}:{rng.randint(2, EPOCHS + 1)}",
            f"atomic_write@{BEST[config]}:1",
            f"atomic_write@datalist_{'adni' if dims == 2 else 'nifti'}.json:1",
        ]
        if config == "train_prior.json":
            saves.append("atomic_write@training.pt:1")  # the cached codes
        fault = rng.choice(saves)
        proc = _run(
            server, dims, config, root, demo_cohort, EPOCHS, fault, checkpoint_every_iterations=rng.choice([0, 1])
        )
        assert proc.returncode == -signal.SIGKILL, f"{fault}: {proc.returncode}\n{proc.stderr[-2000:]}"
        _all_checkpoints_load(root / "models")
        done = load_torch_file(last)["meta"]["iteration"] if last.is_file() else 0
        kill_after = rng.randint(1, total - done - 1)
        every = rng.choice([0, 1])
        proc = _run(
            server,
            dims,
            config,
            root,
            demo_cohort,
            EPOCHS,
            f"iteration:{kill_after}",
            resume=last.is_file(),
            checkpoint_every_iterations=every,
        )
        assert proc.returncode == -signal.SIGKILL, f"iteration {kill_after}: {proc.returncode}\n{proc.stderr[-2000:]}"
        meta = _all_checkpoints_load(root / "models")[last.name]
        assert meta["iteration"] >= done + kill_after - epoch_length  # at most the epoch in progress is lost
        if every:
            assert meta["iteration"] == done + kill_after - 1  # killed before this iteration's save
        proc = _run(server, dims, config, root, demo_cohort, EPOCHS, resume=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stdout + proc.stderr
        _all_checkpoints_load(root / "models")
        assert not temp_files(last) and not temp_files(best)  # what the killed writers left is cleaned up
        what = f"{config}: {fault}, then iteration {kill_after} (every {every})"
        assert _same_weights(last, reference / LAST[config]), f"final weights differ after {what}"
        assert _same_weights(best, reference / BEST[config]), f"best weights differ after {what}"


def test_kill_9_at_a_random_moment_then_resume(demo_cohort, tmp_path, server):
    """A wall-clock kill, wherever it lands (loading, training, validating, writing)."""
    epochs = 15
    reference = tmp_path / "reference"
    run_workflow(2, "train_vqvae.json", _overrides(2, "train_vqvae.json", reference, demo_cohort, epochs))
    root = tmp_path / "run"
    last = root / "models" / "model_autoencoder_last.pt"
    args = cli_args(2, "train_vqvae.json", _overrides(2, "train_vqvae.json", root, demo_cohort, epochs))
    log = tmp_path / "stdout.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL, env=subprocess_env(), cwd=str(REPO))
        deadline = time.time() + 300
        while not last.is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(random.Random(7).uniform(0.0, 1.0))
        proc.kill()
        proc.wait()
    meta = _all_checkpoints_load(root / "models")["model_autoencoder_last.pt"]
    trainer_epochs = [int(m) for m in re.findall(r"VQVAETrainer - INFO - Epoch\[(\d+)\] Complete", log.read_text())]
    assert meta["epoch"] >= max(trainer_epochs, default=0), (meta, trainer_epochs)  # at most one epoch lost
    resumed = _run(server, 2, "train_vqvae.json", root, demo_cohort, epochs, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _same_weights(last, reference / "models" / "model_autoencoder_last.pt")


def test_sigint_and_sigterm_save_then_resume(demo_cohort, tmp_path, server):
    """Ctrl-C, then SIGTERM: each stops after the current iteration with the last checkpoint saved, one line on
    stderr and exit status 128 + signal; the run resumed to the end matches an uninterrupted one."""
    epochs = 12  # the signals come after 1-2 epochs of each run: ample time left
    reference = tmp_path / "reference"
    run_workflow(2, "train_vqvae.json", _overrides(2, "train_vqvae.json", reference, demo_cohort, epochs))
    root = tmp_path / "run"
    last = root / "models" / "model_autoencoder_last.pt"
    for signum, resume in ((signal.SIGINT, False), (signal.SIGTERM, True)):
        args = cli_args(
            2, "train_vqvae.json", _overrides(2, "train_vqvae.json", root, demo_cohort, epochs, resume=resume)
        )
        start = load_torch_file(last)["meta"]["iteration"] if resume else 0
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=str(REPO)
        )
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:  # until training has moved on from where it started
            if last.is_file() and load_torch_file(last)["meta"]["iteration"] >= start + 2:
                break
            time.sleep(0.05)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 128 + signum, stderr[-2000:]
        line = _last_line(stderr)
        meta = load_torch_file(last)["meta"]
        expected = f"brainvq: error: training stopped by {signum.name} at epoch {meta['iteration'] // meta['epoch_length'] + (0 if meta['epoch_complete'] else 1)}, iteration {meta['iteration']}; saved {last}; run the same command with --resume true to continue"
        assert line == expected
        assert "Traceback" not in stdout + stderr and meta["reason"] in ("signal", "epoch")
        _all_checkpoints_load(root / "models")
    proc = _run(server, 2, "train_vqvae.json", root, demo_cohort, epochs, resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _same_weights(last, reference / "models" / "model_autoencoder_last.pt")
    assert _same_weights(root / "models" / "model_autoencoder.pt", reference / "models" / "model_autoencoder.pt")
