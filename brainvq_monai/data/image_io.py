"""Robust, read-only loading of brain images: 2D slices (PNG/JPEG/BMP/TIFF) and volumes (NIfTI, Analyze).

Every failure is a :class:`~brainvq_monai.utils.errors.BrainVQInputError` whose message is one line naming the file
and the reason (never a PIL or nibabel traceback). Nothing here ever writes to the user's data folder.

Array conventions (chosen so that this loader is interchangeable with ``monai.transforms.LoadImage``):

- 2D images are returned as ``(W, H)``: ``data[x, y]`` where ``x`` is the column (left to right) and ``y`` the row
  (top to bottom), exactly what MONAI's ``PILReader`` returns; the affine is the 4x4 identity, as MONAI gives for
  PIL images. To hand such an array back to PIL use ``Image.fromarray(data.T)``.
- Volumes are returned as stored on disk ``(X, Y, Z)`` with the nibabel (RAS world) affine, as MONAI's
  ``NibabelReader`` does; :func:`read_canonical_volume` reorients them to RAS (``nibabel.as_closest_canonical``,
  which gives the same array as ``monai.transforms.Orientation(axcodes="RAS")``).
- Partially NaN volumes are accepted: NaN (and +/-inf) voxels are replaced by 0 (recorded as ``meta["nan_voxels"]``).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from brainvq_monai.utils.errors import BrainVQInputError

__all__ = [
    "IMAGE_2D_SUFFIXES",
    "VOLUME_SUFFIXES",
    "image_kind",
    "read_image",
    "read_canonical_volume",
    "validate_image",
    "brain_axial_slices",
    "robust_max",
]

IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img")

_MAX_REASON = 120


def _lower_name(path: str | os.PathLike) -> str:
    return Path(path).name.lower()


def image_kind(path: str | os.PathLike) -> str | None:
    """Classify a file name as a 2D image, a volume, or not an image (judged by name only; nothing is read).

    Hidden files (``.DS_Store``, macOS ``._*`` resource forks) and unknown suffixes (``.txt``, ``Thumbs.db``) are not
    images. An Analyze pair is listed once, through its ``.hdr``: ``.hdr`` is a volume, ``.img`` is never listed
    on its own (it is the data half of the pair; a ``.img`` without a ``.hdr`` is not a readable image).

    Args:
        path: file path or name.

    Returns:
        ``"2d"``, ``"volume"`` or ``None``.
    """
    name = _lower_name(path)
    if not name or name.startswith("."):
        return None
    if name.endswith(IMAGE_2D_SUFFIXES):
        return "2d"
    if name.endswith((".nii", ".nii.gz", ".hdr")):
        return "volume"
    return None


def _short(exc: BaseException, path: str) -> str:
    """A short, single-line, path-free description of an exception."""
    text = " ".join(str(exc).split())
    for p in {path, os.path.abspath(path), Path(path).name}:
        if p:
            text = text.replace(f"'{p}'", "file").replace(p, "file")
    if not text:
        text = type(exc).__name__
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return text


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise BrainVQInputError(path, "file not found")
    if not os.path.isfile(path):
        raise BrainVQInputError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise BrainVQInputError(path, "empty file (0 bytes)")


def _read_2d(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            n_frames = getattr(img, "n_frames", 1)
            if n_frames > 1:
                raise BrainVQInputError(path, f"multi-page image with {n_frames} frames; expected a single 2D image")
            img.load()  # truncated / corrupted data fail here, inside the try
            mode = img.mode
            if mode in ("L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
                arr = np.asarray(img)
            else:  # RGB, RGBA, P, PA, LA, CMYK, YCbCr, 1, ...: ITU-R 601-2 luminance
                arr = np.asarray(img.convert("L"))
            fmt = img.format
    except BrainVQInputError:
        raise
    except UnidentifiedImageError:
        raise BrainVQInputError(path, "cannot read: not a recognised image file") from None
    except Image.DecompressionBombError as e:
        raise BrainVQInputError(path, f"cannot read: {_short(e, path)}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, zlib.error, IndexError, TypeError) as e:
        raise BrainVQInputError(path, f"cannot read: {_short(e, path)}") from None
    if arr.ndim != 2:
        raise BrainVQInputError(path, f"cannot read: unexpected pixel array of shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise BrainVQInputError(path, "empty image (0 pixels)")
    data = np.ascontiguousarray(arr.astype(np.float32).T)  # (H, W) -> (W, H), MONAI PILReader convention
    meta = {"format": str(fmt), "mode": mode, "width": int(arr.shape[1]), "height": int(arr.shape[0])}
    return data, meta


def _load_gz_nifti(path: str) -> Any:
    """Load a ``.nii.gz`` from one full, CRC-checked decompression (nibabel alone stops reading before the gzip
    trailer, so a corrupted stream could decode to garbage silently)."""
    import gzip

    import nibabel as nib

    with open(path, "rb") as f:
        raw = gzip.decompress(f.read())
    if len(raw) < 4:
        raise ValueError("not a NIfTI file (too short)")
    sizeof_hdr = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")}
    if 540 in sizeof_hdr:
        return nib.Nifti2Image.from_bytes(raw)
    if 348 in sizeof_hdr:
        return nib.Nifti1Image.from_bytes(raw)
    raise ValueError("not a NIfTI file (bad header size)")


def _read_volume(path: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    import nibabel as nib

    lower = path.lower()
    if lower.endswith(".hdr") and not (os.path.isfile(path[:-4] + ".img") or os.path.isfile(path[:-4] + ".IMG")):
        raise BrainVQInputError(path, "Analyze header without its .img data file")
    if lower.endswith(".img") and not (os.path.isfile(path[:-4] + ".hdr") or os.path.isfile(path[:-4] + ".HDR")):
        raise BrainVQInputError(path, ".img without its .hdr header (not an Analyze pair)")
    try:
        img = _load_gz_nifti(path) if lower.endswith(".gz") else nib.load(path, mmap=False)
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in img.header.get_zooms())
        # read everything (catches truncated/corrupted data), applying scl_slope/scl_inter
        data = np.asarray(img.dataobj, dtype=np.float32)
    except BrainVQInputError:
        raise
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError) as e:
        raise BrainVQInputError(path, f"cannot read: {_short(e, path)}") from None
    except (OSError, EOFError, ValueError, zlib.error, MemoryError, TypeError, IndexError, KeyError) as e:
        raise BrainVQInputError(path, f"cannot read: {_short(e, path)}") from None
    if data.ndim > 3:
        extra = data.shape[3:]
        if int(np.prod(extra)) == 1:
            data = data.reshape(data.shape[:3])
        elif data.ndim == 4:
            raise BrainVQInputError(path, f"4D series with {extra[0]} volumes; expected a 3D volume")
        else:
            raise BrainVQInputError(path, f"{data.ndim}D image of shape {tuple(data.shape)}; expected a 3D volume")
    if data.ndim < 3:
        raise BrainVQInputError(path, f"{data.ndim}D image of shape {tuple(data.shape)}; expected a 3D volume")
    if data.size == 0:
        raise BrainVQInputError(path, f"empty volume of shape {tuple(data.shape)}")
    if not np.isfinite(affine).all():
        raise BrainVQInputError(path, "cannot read: non-finite affine in the header")
    # NIfTI layout, as MONAI's NibabelReader: pixdim[1:4] are the voxel sizes (MONAI transforms update it in place)
    pixdim = np.ones(8, dtype=np.float32)
    pixdim[1 : 1 + min(len(zooms), 7)] = zooms[:7]
    meta = {"ndim_on_disk": len(shape), "pixdim": pixdim, "space": "RAS"}
    return data, affine, meta


def read_image(path: str | os.PathLike, allow_constant: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a 2D image or a 3D volume fully, read-only, as float32 without a channel axis.

    2D images (PIL): colour/palette/alpha images become grayscale luminance; 16-bit PNGs keep their range.
    Volumes (nibabel: ``.nii``, ``.nii.gz``, Analyze ``.hdr``/``.img``): trailing singleton axes are squeezed;
    NaN/inf voxels are set to 0. See the module docstring for the axis conventions.

    Args:
        path: image file.
        allow_constant: accept an image whose voxels are all equal (refused by default: a training input with
            nothing to learn is a user error; a generated sample that came out blank is a result to show).

    Returns:
        ``(data, affine, meta)``: float32 array ``(W, H)`` for 2D images or ``(X, Y, Z)`` for volumes; 4x4 float64
        affine (identity for 2D images); meta dict with at least ``filename_or_obj``, ``original_shape``, ``kind``
        (``"2d"`` or ``"volume"``), ``spatial_shape`` and, for volumes, ``pixdim`` (8 values in the NIfTI
        layout, as MONAI's ``NibabelReader``: ``pixdim[1:4]`` are the voxel sizes in mm).

    Raises:
        BrainVQInputError: missing, unreadable, truncated, non-image, 4D, all-NaN or constant input (one-line message
            naming the file).
    """
    path = os.fspath(path)
    name = _lower_name(path)
    if name.endswith(IMAGE_2D_SUFFIXES):
        kind = "2d"
    elif name.endswith(VOLUME_SUFFIXES):
        kind = "volume"
    else:
        _check_file(path)
        raise BrainVQInputError(path, "not an image file (expected one of: png, jpg, jpeg, bmp, tif, nii, nii.gz, hdr)")
    _check_file(path)
    if kind == "2d":
        data, meta = _read_2d(path)
        affine = np.eye(4, dtype=np.float64)
        nan_voxels = 0
    else:
        data, affine, meta = _read_volume(path)
        finite = np.isfinite(data)
        nan_voxels = int(data.size - np.count_nonzero(finite))
        if nan_voxels == data.size:
            raise BrainVQInputError(path, "all voxels are NaN")
        if nan_voxels:
            data = np.where(finite, data, np.float32(0.0))
    lo, hi = float(data.min()), float(data.max())
    if lo == hi and not allow_constant:
        raise BrainVQInputError(path, f"constant image (all voxels = {lo:g}); nothing to learn")
    meta.update(
        {
            "filename_or_obj": path,
            "kind": kind,
            "original_shape": tuple(int(s) for s in data.shape),
            "spatial_shape": tuple(int(s) for s in data.shape),
            "nan_voxels": nan_voxels,
        }
    )
    return np.ascontiguousarray(data, dtype=np.float32), affine, meta


def _canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient ``data`` (spatial axes first) to RAS, as ``nibabel.as_closest_canonical``."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return data, affine
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape[:3])
    return np.ascontiguousarray(nib.orientations.apply_orientation(data, ornt)), new_affine


def read_canonical_volume(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a volume and reorient it to RAS (closest canonical orientation, as ``nibabel.as_closest_canonical``).

    The array matches ``Orientation(axcodes="RAS")`` applied to the output of :func:`read_image`; axial slice ``k``
    is ``data[..., k]``.

    Args:
        path: volume file (``.nii``, ``.nii.gz``, ``.hdr``).

    Returns:
        ``(data, affine, meta)`` as :func:`read_image`, in RAS orientation.

    Raises:
        BrainVQInputError: as :func:`read_image`, or when ``path`` is a 2D image.
    """
    data, affine, meta = read_image(path)
    if meta["kind"] != "volume":
        raise BrainVQInputError(path, "is a 2D image; expected a volume")
    data, affine = _canonical(data, affine)
    meta["spatial_shape"] = tuple(int(s) for s in data.shape)
    return data, affine, meta


def validate_image(path: str | os.PathLike) -> tuple[int, ...]:
    """Read a file fully (so that corruption is caught) and return its spatial shape.

    Args:
        path: image file.

    Returns:
        the spatial shape: ``(W, H)`` for 2D images (MONAI convention), ``(X, Y, Z)`` as stored for volumes.

    Raises:
        BrainVQInputError: if the file cannot be used (see :func:`read_image`).
    """
    data, _, _ = read_image(path)
    return tuple(int(s) for s in data.shape)


def robust_max(data: np.ndarray, percentile: float = 99.5) -> float:
    """The ``percentile`` of the non-zero voxels (of all voxels if none is non-zero).

    Args:
        data: image array.
        percentile: percentile in [0, 100].

    Returns:
        the robust maximum as a float.
    """
    values = data[data != 0]
    if values.size == 0:
        values = data.ravel()
    return float(np.percentile(values, percentile))


def brain_axial_slices(path: str | os.PathLike, min_fraction: float = 0.05, threshold: float = 0.1) -> list[int]:
    """Axial slices of a volume that hold brain.

    The volume is reoriented to RAS; slice ``k`` (along the last axis, inferior to superior) is kept when its
    foreground (voxels above ``threshold`` times the robust maximum) covers at least ``min_fraction`` of the slice
    area. Indices match :class:`brainvq_monai.transforms.ExtractAxialSliced` after ``Orientationd(axcodes="RAS")``.

    Args:
        path: volume file.
        min_fraction: minimum foreground fraction of the slice area.
        threshold: foreground threshold as a fraction of the robust (99.5th percentile) maximum.

    Returns:
        sorted slice indices.

    Raises:
        BrainVQInputError: unreadable volume (see :func:`read_image`).
    """
    data, _, _ = read_canonical_volume(path)
    rmax = robust_max(data)
    fg = data > threshold * rmax
    fraction = fg.reshape(-1, fg.shape[-1]).mean(axis=0)
    return [int(k) for k in np.flatnonzero(fraction >= min_fraction)]
