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
    make_demo_cohort(root, subjects=8, seed=3, slices_per_subject=4, workers=1)
    return root


@pytest.fixture
def tiny_vqvae():
    """Factory of a seeded tiny VQ-VAE (channels 4/8, two stride-2 levels, 8 codes of dim 4), 2D or 3D.

    ``cls`` is :class:`~brainvq_monai.networks.nets.BrainVQVAE` by default, or MONAI's ``VQVAE``.
    """
    from brainvq_monai.networks.nets import BrainVQVAE

    def make(spatial_dims: int = 2, cls: type = BrainVQVAE, **kwargs) -> torch.nn.Module:
        torch.manual_seed(0)
        return cls(
            spatial_dims,
            1,
            1,
            channels=(4, 8),
            num_res_channels=(4, 8),
            num_res_layers=1,
            num_embeddings=8,
            embedding_dim=4,
            downsample_parameters=((2, 4, 1, 1),) * 2,
            upsample_parameters=((2, 4, 1, 1, 0),) * 2,
            **kwargs,
        )

    return make
