"""Sampling a trained prior to image files (the ``inference.json`` workflow, from Python)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["centred_affine", "reference_affine"]


def reference_affine(item: Mapping[str, Any], transform: Any) -> np.ndarray | None:
    """The voxel-to-world affine of a preprocessed training image (so generated volumes share its grid).

    Args:
        item: a datalist item.
        transform: the deterministic preprocessing.

    Returns:
        the 4x4 affine, or ``None`` when the image carries none.
    """
    data = transform(dict(item))
    affine = getattr(data["image"], "affine", None)
    return None if affine is None else np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)


def centred_affine(pixdim: Sequence[float], spatial_size: Sequence[int]) -> np.ndarray:
    """A RAS voxel-to-world affine with spacing ``pixdim`` whose grid centre is the world origin.

    The grid of generated volumes when no training image is at hand (an exported bundle samples without data):
    the preprocessing reorients to RAS, resamples to ``pixdim`` and centres the brain in ``spatial_size``.

    Args:
        pixdim: voxel spacing in mm.
        spatial_size: the volume's shape.

    Returns:
        the 4x4 affine.
    """
    spacing = np.asarray([float(p) for p in pixdim], dtype=np.float64)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -spacing * (np.asarray([int(s) for s in spatial_size], dtype=np.float64) - 1) / 2
    return affine
