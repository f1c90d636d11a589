"""Spatial transforms: axial-slice extraction from volumes and aspect-preserving resize + pad (any spatial dims)."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import MapTransform, Orientation, Resize, ResizeWithPadOrCrop, Transform
from monai.utils.type_conversion import convert_to_tensor

from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["ExtractAxialSlice", "ExtractAxialSliced", "ResizeToFit", "ResizeToFitd"]

logger = logging.getLogger(__name__)


def _source(img: Any) -> str:
    if isinstance(img, MetaTensor):
        return str(img.meta.get("filename_or_obj", "image"))
    return "image"


class ExtractAxialSlice(Transform):
    """Take axial slice ``k`` of a channel-first volume as a 2D image oriented like the PNG/JPEG slices.

    The volume is brought to RAS first (a no-op after ``Orientationd(axcodes="RAS")``; volumes given as plain tensors
    are assumed RAS), so ``k`` indexes the inferior-to-superior axis exactly as
    :func:`brainvq_monai.data.image_io.brain_axial_slices` and ``nibabel.as_closest_canonical(img).get_fdata()[..., k]``.
    The RAS slice ``s[x, y]`` (x: patient left to right, y: posterior to anterior) is flipped along both axes so
    that, in the ``(W, H)`` layout of 2D images (``data[column, row]``, as ``LoadImage``/``PILReader`` return),
    anterior is the top row and the patient's right is the image's left column: the radiological convention of
    the OASIS/ADNI slice files and of ``brainvq demo-data``.
    The output affine maps the 2D voxel grid into the slice's world (RAS, mm) coordinates.

    Args:
        check_orientation: reorient non-RAS ``MetaTensor`` volumes to RAS before slicing.
    """

    def __init__(self, check_orientation: bool = True) -> None:
        self.check_orientation = check_orientation

    def __call__(self, img: NdarrayOrTensor, index: int) -> torch.Tensor:
        """
        Args:
            img: channel-first volume ``(C, X, Y, Z)``.
            index: axial slice index along the (RAS) last axis.

        Returns:
            the slice ``(C, X, Y)`` (``MetaTensor`` in, ``MetaTensor`` out).
        """
        img = convert_to_tensor(img, track_meta=True)
        where = _source(img)
        if img.ndim != 4:
            raise BrainVQInputError(where, f"expected a channel-first 3D volume, got shape {tuple(img.shape)}")
        if isinstance(img, MetaTensor) and self.check_orientation:
            codes = nib.orientations.aff2axcodes(img.affine.numpy())
            if tuple(codes) != ("R", "A", "S"):
                img = Orientation(axcodes="RAS", labels=None)(img)
        depth = int(img.shape[-1])
        try:
            k = int(index)
        except (TypeError, ValueError):
            raise BrainVQInputError(where, f"slice index {index!r} is not an integer") from None
        if not 0 <= k < depth:
            raise BrainVQInputError(where, f"slice {k} out of range for a volume with {depth} axial slices")
        plain = img.as_tensor() if isinstance(img, MetaTensor) else img
        out = torch.flip(plain[..., k], dims=(-2, -1)).contiguous()
        if not isinstance(img, MetaTensor):
            return out
        width, height = int(img.shape[-3]), int(img.shape[-2])
        # 2D voxel (x, y) -> volume voxel (width - 1 - x, height - 1 - y, k); the third column keeps the slice normal
        to_volume = torch.tensor(
            [
                [-1.0, 0.0, 0.0, width - 1.0],
                [0.0, -1.0, 0.0, height - 1.0],
                [0.0, 0.0, 1.0, float(k)],
                [0.0, 0.0, 0.0, 1.0],
            ],
            dtype=torch.float64,
        )
        affine = img.affine.to(torch.float64) @ to_volume
        meta = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in img.meta.items() if k != "affine"}
        meta["spatial_shape"] = np.asarray(out.shape[1:])
        meta["slice_index"] = k
        return MetaTensor(out, affine=affine, meta=meta)


class ExtractAxialSliced(MapTransform):
    """Dictionary version of :class:`ExtractAxialSlice`: the slice index is read from ``d[slice_key]``.

    Args:
        keys: keys of the volumes to slice.
        slice_key: key holding the axial slice index (left untouched).
        check_orientation: reorient non-RAS volumes to RAS before slicing.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        slice_key: str = "slice",
        check_orientation: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.slice_key = slice_key
        self.extractor = ExtractAxialSlice(check_orientation=check_orientation)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.slice_key not in d:
                raise BrainVQInputError(_source(d[key]), f"item has no {self.slice_key!r} slice index")
            index = d[self.slice_key]
            if isinstance(index, (torch.Tensor, np.ndarray)):
                index = index.reshape(-1)[0].item()
            d[key] = self.extractor(d[key], index)
        return d


class ResizeToFit(Transform):
    """Resize an image to fit inside ``spatial_size`` keeping its aspect ratio, then zero-pad (centred) to it exactly.

    The aspect ratio is the physical one when the image is a ``MetaTensor`` and ``use_spacing`` (voxel sizes from
    the affine; identity affines, as for PNGs, give the pixel aspect ratio). The output grid is therefore isotropic.
    Works for any number of spatial dims: area averaging when shrinking (anti-aliased), linear interpolation when
    enlarging.

    A warning naming the file is logged once (per instance, i.e. per worker process) when an image's size differs
    from the first image seen: mixed input sizes are legitimate but worth knowing about.

    Args:
        spatial_size: output spatial size.
        use_spacing: keep the physical (rather than voxel) aspect ratio.
        anti_aliasing: area averaging when shrinking (otherwise linear interpolation throughout).
        warn_on_mixed_sizes: log a one-time warning when input sizes differ.
    """

    def __init__(
        self,
        spatial_size: Sequence[int],
        use_spacing: bool = True,
        anti_aliasing: bool = True,
        warn_on_mixed_sizes: bool = True,
    ) -> None:
        self.spatial_size = tuple(int(s) for s in spatial_size)
        if not self.spatial_size or min(self.spatial_size) < 1:
            raise BrainVQInputError("spatial_size", f"must be positive integers, got {tuple(spatial_size)}")
        self.use_spacing = use_spacing
        self.anti_aliasing = anti_aliasing
        self.warn_on_mixed_sizes = warn_on_mixed_sizes
        self._first_shape: tuple[int, ...] | None = None
        self._warned = False

    def fitted_size(self, shape: Sequence[int], spacing: Sequence[float] | None = None) -> tuple[int, ...]:
        """Size of the aspect-preserving resize of ``shape`` (voxel sizes ``spacing``) into ``spatial_size``."""
        extent = np.asarray(shape, dtype=np.float64) * (1.0 if spacing is None else np.asarray(spacing, np.float64))
        target = np.asarray(self.spatial_size, dtype=np.float64)
        scale = float(np.min(target / extent))
        size = np.clip(np.round(extent * scale), 1, target).astype(int)
        return tuple(int(s) for s in size)

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        """
        Args:
            img: channel-first image ``(C, *spatial)``.

        Returns:
            the image of shape ``(C, *spatial_size)``.
        """
        img = convert_to_tensor(img, track_meta=True)
        where = _source(img)
        shape = tuple(int(s) for s in img.shape[1:])
        sd = len(shape)
        if sd != len(self.spatial_size):
            raise BrainVQInputError(
                where,
                f"has {sd} spatial dims (shape {shape}); spatial_size {self.spatial_size} expects {len(self.spatial_size)}",
            )
        if self.warn_on_mixed_sizes:
            if self._first_shape is None:
                self._first_shape = shape
            elif shape != self._first_shape and not self._warned:
                self._warned = True
                logger.warning(
                    "%s: size %s differs from an earlier image's %s; mixed image sizes are resized to fit %s "
                    "keeping the aspect ratio (said once)",
                    where,
                    shape,
                    self._first_shape,
                    self.spatial_size,
                )
        spacing = None
        if self.use_spacing and isinstance(img, MetaTensor):
            spacing = affine_to_spacing(img.affine, r=sd).tolist()
        size = self.fitted_size(shape, spacing)
        if size != shape:
            shrinking = all(n <= o for n, o in zip(size, shape))
            if self.anti_aliasing and shrinking:
                mode = "area"  # box-filter average: anti-aliased, and no dark rim (unlike a zero-padded Gaussian)
            else:
                mode = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(sd, "nearest")
            img = Resize(size, mode=mode)(img)
        if tuple(img.shape[1:]) != self.spatial_size:
            img = ResizeWithPadOrCrop(self.spatial_size, method="symmetric", mode="constant")(img)
        return img


class ResizeToFitd(MapTransform):
    """Dictionary version of :class:`ResizeToFit`.

    Args:
        keys: keys of the images to resize.
        spatial_size: output spatial size.
        use_spacing: keep the physical aspect ratio.
        anti_aliasing: area averaging when shrinking.
        warn_on_mixed_sizes: log a one-time warning when input sizes differ.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        use_spacing: bool = True,
        anti_aliasing: bool = True,
        warn_on_mixed_sizes: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.resizer = ResizeToFit(spatial_size, use_spacing, anti_aliasing, warn_on_mixed_sizes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resizer(d[key])
        return d
