"""Writing generated images: PNG for 2D slices, NIfTI (with an affine) for volumes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["save_image"]


def save_image(
    image: torch.Tensor | np.ndarray, path: str | os.PathLike, affine: np.ndarray | torch.Tensor | None = None
) -> Path:
    """Saves one channel-first image in [0, 1]: a 2D ``(1, W, H)`` image as 8-bit PNG, a volume as NIfTI.

    2D arrays follow the MONAI/``LoadBrainImage`` convention (column index first), so a written PNG reads back as
    the same array. Volumes are written as float32 NIfTI with ``affine`` (identity if not given).

    Args:
        image: ``(1, W, H)`` or ``(1, X, Y, Z)`` in [0, 1] (clipped).
        path: destination ``.png`` or ``.nii``/``.nii.gz`` file; folders are created.
        affine: 4x4 voxel-to-world affine of a volume.

    Returns:
        the path written.
    """
    arr = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if arr.ndim not in (3, 4) or arr.shape[0] != 1:
        raise ValueError(f"image: expected (1, W, H) or (1, X, Y, Z), got shape {arr.shape}")
    arr = np.clip(arr[0], 0.0, 1.0)
    out = Path(os.fspath(path))
    out.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 2:
        from PIL import Image

        Image.fromarray(np.round(arr.T * 255).astype(np.uint8), mode="L").save(out)
    else:
        import nibabel as nib

        aff = np.eye(4) if affine is None else np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)
        nib.save(nib.Nifti1Image(arr.astype(np.float32), aff), str(out))
    return out
