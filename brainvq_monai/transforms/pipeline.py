"""``brain_transforms``: the one MONAI pre-processing pipeline for 2D slices, axial slices of volumes and 3D volumes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandGaussianNoised,
    Spacingd,
)

from brainvq_monai.transforms.intensity import ClipIntensityd, ScaleIntensityRobustd, ThresholdForeground
from brainvq_monai.transforms.io import LoadBrainImaged
from brainvq_monai.transforms.spatial import ExtractAxialSliced, ResizeToFitd
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["brain_transforms"]


def brain_transforms(
    spatial_dims: int,
    spatial_size: Sequence[int],
    train: bool,
    keys: Sequence[str] = ("image",),
    from_volume_slices: bool = False,
    pixdim: Sequence[float] | None = None,
    augment: bool | None = None,
    slice_key: str = "slice",
) -> Compose:
    """Build the pre-processing pipeline; every item comes out float32 in [0, 1] of shape ``(1, *spatial_size)``.

    Steps (volume-only steps are skipped for 2D image files):

    1. :class:`LoadBrainImaged` (grayscale, channel first, ``MetaTensor``);
    2. volumes: ``Orientationd`` to RAS, then ``Spacingd(pixdim)`` when ``pixdim`` is given (for volume slices
       the in-plane ``Spacingd`` runs after slicing, so slice indices refer to the RAS grid of the file, as
       :func:`brainvq_monai.data.image_io.brain_axial_slices` lists them);
    3. intensity to [0, 1] with :class:`ScaleIntensityRobustd`: robust 0.5/99.5 percentiles of the non-zero voxels
       for volumes (the whole volume, so slices of one subject share one scale), min-max for 2D image files;
    4. ``from_volume_slices``: :class:`ExtractAxialSliced` at ``d[slice_key]``; 3D volumes: ``CropForegroundd``
       (voxels > 0.05, margin 2);
    5. :class:`ResizeToFitd`: aspect-preserving resize + zero pad to ``spatial_size`` (mixed sizes logged once);
    6. training augmentation (small affine, contrast/gamma, bias field, noise) followed by a clip to [0, 1];
    7. ``EnsureTyped`` float32 (``MetaTensor`` kept, so the affine travels on).

    Other keys (``label``, ``subject``, ``slice``) pass through untouched.

    Args:
        spatial_dims: 2 (slices) or 3 (volumes) -- the dims of the output.
        spatial_size: output spatial size (``spatial_dims`` integers).
        train: training pipeline (augmentation on unless ``augment`` says otherwise).
        keys: keys of the image paths (intensity images).
        from_volume_slices: items are volumes plus an axial slice index (``spatial_dims`` must be 2).
        pixdim: resample volumes to these voxel sizes in mm (``spatial_dims`` values: 3 for volumes, 2 in-plane
            for volume slices); volumes only. The final size is still ``spatial_size`` (aspect-preserving fit).
        augment: force augmentation on/off; ``None`` means ``train``.
        slice_key: key of the slice index for ``from_volume_slices``.

    Returns:
        the ``Compose``.

    Raises:
        BrainVQInputError: inconsistent settings.
    """
    if spatial_dims not in (2, 3):
        raise BrainVQInputError("spatial_dims", f"must be 2 or 3, got {spatial_dims}")
    spatial_size = tuple(int(s) for s in spatial_size)
    if len(spatial_size) != spatial_dims or min(spatial_size) < 1:
        raise BrainVQInputError("spatial_size", f"needs {spatial_dims} positive integers, got {spatial_size}")
    if from_volume_slices and spatial_dims != 2:
        raise BrainVQInputError("from_volume_slices", "axial slices are 2D; use spatial_dims=2")
    volumes = spatial_dims == 3 or from_volume_slices
    if pixdim is not None:
        if not volumes:
            raise BrainVQInputError("pixdim", "resampling applies to volumes only (spatial_dims=3 or volume slices)")
        pixdim = tuple(float(p) for p in pixdim)
        if len(pixdim) != spatial_dims or min(pixdim) <= 0:
            raise BrainVQInputError("pixdim", f"needs {spatial_dims} positive voxel sizes in mm, got {pixdim}")
    keys = list(keys)
    augment = train if augment is None else augment

    xforms: list = [LoadBrainImaged(keys, ensure_channel_first=True)]
    if volumes:
        xforms.append(Orientationd(keys, axcodes="RAS", labels=None))
        if pixdim is not None and not from_volume_slices:
            xforms.append(Spacingd(keys, pixdim=pixdim, mode="bilinear", dtype=torch.float32))
        xforms.append(ScaleIntensityRobustd(keys, lower=0.5, upper=99.5, nonzero=True, clip=True))
    else:
        xforms.append(ScaleIntensityRobustd(keys, lower=0.0, upper=100.0, nonzero=False, clip=True))
    if from_volume_slices:
        xforms.append(ExtractAxialSliced(keys, slice_key=slice_key))
        if pixdim is not None:  # in-plane, after slicing, so that slice indices stay those of the stored grid
            xforms.append(Spacingd(keys, pixdim=pixdim, mode="bilinear", dtype=torch.float32))
    elif volumes:
        xforms.append(
            CropForegroundd(keys, source_key=keys[0], select_fn=ThresholdForeground(0.05), margin=2, allow_smaller=True)
        )
    xforms.append(ResizeToFitd(keys, spatial_size=spatial_size))
    if augment:
        n_angles = 1 if spatial_dims == 2 else 3
        xforms += [
            RandAffined(
                keys,
                prob=0.5,
                rotate_range=(0.1,) * n_angles,
                scale_range=(0.05,) * spatial_dims,
                mode="bilinear",
                padding_mode="zeros",
            ),
            RandAdjustContrastd(keys, prob=0.3, gamma=(0.8, 1.25)),
            RandBiasFieldd(keys, prob=0.3, coeff_range=(0.0, 0.05)),
            RandGaussianNoised(keys, prob=0.2, std=0.01),
        ]
    xforms += [ClipIntensityd(keys, 0.0, 1.0), EnsureTyped(keys, dtype=torch.float32, track_meta=True)]
    return Compose(xforms)
