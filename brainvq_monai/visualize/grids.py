"""Image grids for TensorBoard, reports and sample files (2D images, or the mid-axial slice of volumes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["to_display_slice", "display_plane", "tile_grid"]


def to_display_slice(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A 2D float array, rows first, to display one image as a viewer shows it.

    Follows the MONAI / :class:`~brainvq_monai.transforms.LoadBrainImage` array convention: a 2D image is
    ``(C, W, H)`` (column index first, as MONAI's ``PILReader`` returns it), so it is transposed for display; a volume
    is ``(C, X, Y, Z)`` in RAS, of which the mid-axial slice is shown radiologically, anterior at the top (as
    :class:`~brainvq_monai.transforms.ExtractAxialSlice` and of the OASIS/ADNI slice files).

    Args:
        image: channel-first 2D image or 3D volume (a leading batch axis of size 1 is also accepted).

    Returns:
        ``(rows, columns)`` float32 array.
    """
    arr = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if arr.ndim == 5 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 4:  # (C, X, Y, Z) RAS: mid-axial slice, radiological (anterior up, patient's right on the left)
        arr = np.flip(arr[0, :, :, arr.shape[-1] // 2], (0, 1))
    elif arr.ndim == 3:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"image: cannot display an array of shape {arr.shape}")
    return np.ascontiguousarray(arr.T, dtype=np.float32)


def tile_grid(
    rows: Sequence[Sequence[torch.Tensor | np.ndarray]],
    value_range: tuple[float, float] | None = (0.0, 1.0),
    pad: int = 2,
) -> np.ndarray:
    """Tiles images into a grid: ``rows[i][j]`` is shown at row ``i``, column ``j``.

    Args:
        rows: images (any form accepted by :func:`to_display_slice`); each cell is padded to the largest cell.
        value_range: clip to this range and scale to [0, 1]; ``None``: min-max scale the whole grid.
        pad: pixels of white space between cells.

    Returns:
        ``(H, W)`` float32 array in [0, 1].
    """
    cells = [[to_display_slice(img) for img in row] for row in rows]
    if not cells or not any(cells):
        raise ValueError("rows: no images to tile")
    h = max(c.shape[0] for row in cells for c in row)
    w = max(c.shape[1] for row in cells for c in row)
    ncols = max(len(row) for row in cells)
    grid = np.ones((len(cells) * (h + pad) - pad, ncols * (w + pad) - pad), dtype=np.float32)
    lo, hi = (
        value_range
        if value_range is not None
        else (min(c.min() for r in cells for c in r), max(c.max() for r in cells for c in r))
    )
    scale = (hi - lo) if hi > lo else 1.0
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            y, x = i * (h + pad), j * (w + pad)
            grid[y : y + cell.shape[0], x : x + cell.shape[1]] = np.clip((cell - lo) / scale, 0.0, 1.0)
    return grid


def display_plane(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """The 2D channel-first image ``(1, W, H)`` that displays as ``image`` does (:func:`to_display_slice`).

    A 2D image keeps its first channel; a volume becomes its mid-axial slice, oriented as displayed. Figures of 2D
    and 3D runs can so store and draw the same small arrays.

    Args:
        image: channel-first 2D image or 3D volume (see :func:`to_display_slice`).

    Returns:
        ``(1, W, H)`` float32 array with ``to_display_slice(display_plane(image)) == to_display_slice(image)``.
    """
    return np.ascontiguousarray(to_display_slice(image).T[None])
