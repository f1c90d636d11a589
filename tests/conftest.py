"""Shared fixtures: one tiny demo cohort per test session, and a single torch thread.

Tiny tensors gain nothing from intra-op threads, and with two threads on a busy 2-core machine every small op
waits on the other core (tests and CI share it with the subprocesses some tests start).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # for subprocesses (monai.bundle run, torchrun)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory) -> Path:
    """A small demo cohort (8 subjects, 4 slices) in all three layouts, made once per session."""
    from brainvq_monai.data.demo import make_demo_cohort

    root = tmp_path_factory.mktemp("demo_cohort")
    make_demo_cohort(root, subjects=8, seed=3, slices_per_subject=4, slice_spacing=1, workers=1)
    return root


#: the demo settings of the session's tiny demo run (32x32, 16 codes, 2 epochs each): seconds on a CPU
TINY_DEMO = {
    "spatial_size": [32, 32],
    "num_embeddings": 16,
    "embedding_dim": 8,
    "batch_size": 8,
    "vqvae_channels": [8, 16],
    "vqvae_epochs": 2,
    "prior_epochs": 2,
    "prior_val_interval": 1,
    "num_samples": 3,
    "transformer": {"attn_layers_dim": 16, "attn_layers_depth": 1, "attn_layers_heads": 2},
    "report_generation": False,  # the demo's closing report without generation metrics (tested on their own)
    # the session cohort's own layout, so that a demo run on it reuses it instead of making another in its place
    "slices_per_subject": 4,
    "slice_spacing": 1,
}


@pytest.fixture(scope="session")
def tiny_demo_run(tmp_path_factory, demo_cohort) -> Path:
    """One tiny ``brainvq demo`` run of the session's cohort, shared by the report, run-loader and generation
    tests. Tests that change files other than their own outputs work on a copy (:func:`copy_run`)."""
    from brainvq_monai.apps.demo import run_demo

    out = tmp_path_factory.mktemp("tiny_demo_run") / "run"
    out.mkdir()
    (out / "data").symlink_to(demo_cohort, target_is_directory=True)  # the demo reuses it: same cohort settings
    before = sorted(p.name for p in demo_cohort.rglob("*") if p.is_file())
    run_demo(out, subjects=8, seed=3, settings=TINY_DEMO)
    assert sorted(p.name for p in demo_cohort.rglob("*") if p.is_file()) == before, "the demo rewrote the cohort"
    return out


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of a run folder (its data link kept as a link), which reads its own files (see ``load_run``)."""
    import shutil

    shutil.copytree(run, dest, symlinks=True, ignore=shutil.ignore_patterns("tensorboard", "codes"))
    return dest


@pytest.fixture(scope="session")
def bundle_run(tmp_path_factory, demo_cohort):
    """``bundle_run(dims, data_format)``: a tiny bundle folder trained in place (train_vqvae, train_prior,
    evaluate, inference; its run in ``runs/``), made once per session and kind, shared by the run-loader, report
    and anomaly tests (each writes its own outputs there: ``report*``, ``anomaly/``)."""
    from bundle_helpers import run_workflow, tiny

    runs: dict[tuple[int, str], Path] = {}

    def get(dims: int, data_format: str) -> Path:
        if (dims, data_format) not in runs:
            root = tmp_path_factory.mktemp(f"bundle_run_{dims}d_{data_format}")
            over = {"data_format": data_format, **({"conditional": False} if data_format == "oasis" else {})}
            for workflow in ("train_vqvae", "train_prior", "evaluate", "inference"):
                run_workflow(dims, workflow, {**tiny(dims, workflow, root, demo_cohort), **over})
            runs[(dims, data_format)] = root
        return runs[(dims, data_format)]

    return get


def make_tiny_vqvae(
    spatial_dims: int = 2,
    cls: type | None = None,
    levels: int = 2,
    num_embeddings: int = 8,
    embedding_dim: int = 4,
    **kwargs,
) -> torch.nn.Module:
    """A seeded tiny VQ-VAE: channels 4 (/8), ``levels`` stride-2 levels, ``num_embeddings`` codes of
    ``embedding_dim``; :class:`~brainvq_monai.networks.nets.BrainVQVAE` by default, or ``cls`` (MONAI's ``VQVAE``)."""
    from brainvq_monai.networks.nets import BrainVQVAE

    torch.manual_seed(0)
    channels = (4, 8)[:levels]
    return (cls or BrainVQVAE)(
        spatial_dims,
        1,
        1,
        channels=channels,
        num_res_channels=channels,
        num_res_layers=1,
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        downsample_parameters=((2, 4, 1, 1),) * levels,
        upsample_parameters=((2, 4, 1, 1, 0),) * levels,
        **kwargs,
    )


@pytest.fixture
def tiny_vqvae():
    """Factory of :func:`make_tiny_vqvae` (channels 4/8, two stride-2 levels, 8 codes of dim 4), 2D or 3D."""
    return make_tiny_vqvae
