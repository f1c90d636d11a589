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
