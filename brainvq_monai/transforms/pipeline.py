"""``brain_transforms``: the one MONAI pre-processing pipeline for 2D slices, axial slices of volumes and 3D volumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
from brainvq_monai.transforms.memo import MemoizedTransformd
from brainvq_monai.transforms.spatial import ExtractAxialSliced, ResizeToFitd
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["BRAIN_AUGMENT", "BrainAugmentParams", "SLICE_READ_CACHE", "brain_transforms"]

#: prepared volumes kept in memory by the axial-slice pipeline (the slices of one volume read and prepare it once).
SLICE_READ_CACHE = 4


@dataclass(frozen=True)
class BrainAugmentParams:
    """The training augmentation, shared by :func:`brain_transforms` (per-sample MONAI transforms on the CPU) and
    :class:`~brainvq_monai.transforms.batch.RandBrainAugment` (batched, on the training device).

    Each step is applied to a sample independently with its probability; ranges are sampled uniformly.

    Attributes:
        affine_prob: probability of the random affine (rotation and scaling about the centre, bilinear, zero pad).
        rotate_range: maximum rotation in radians, per rotation axis (1 axis in 2D, 3 in 3D).
        scale_range: maximum relative scaling per spatial axis (factor ``1 + U(-r, r)``).
        contrast_prob: probability of the gamma contrast change (MONAI ``RandAdjustContrast``).
        gamma_range: range of the gamma exponent.
        bias_prob: probability of the multiplicative bias field (MONAI ``RandBiasField``).
        bias_coeff_range: range of the Legendre coefficients of the log bias field.
        bias_degree: maximum total degree of the log bias field polynomial.
        noise_prob: probability of additive Gaussian noise (MONAI ``RandGaussianNoise``).
        noise_std: noise standard deviation (the maximum when ``noise_sample_std``).
        noise_sample_std: draw each sample's noise std from ``U(0, noise_std)`` (MONAI's default).
        clip_range: intensity range the output is clipped to.
    """

    affine_prob: float = 0.5
    rotate_range: float = 0.1
    scale_range: float = 0.05
    contrast_prob: float = 0.3
    gamma_range: tuple[float, float] = (0.8, 1.25)
    bias_prob: float = 0.3
    bias_coeff_range: tuple[float, float] = (0.0, 0.05)
    bias_degree: int = 3
    noise_prob: float = 0.2
    noise_std: float = 0.01
    noise_sample_std: bool = True
    clip_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("affine_prob", "contrast_prob", "bias_prob", "noise_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise BrainVQInputError(name, f"must be a probability in [0, 1], got {value}")
        for name in ("rotate_range", "scale_range", "noise_std"):
            if getattr(self, name) < 0:
                raise BrainVQInputError(name, f"must be >= 0, got {getattr(self, name)}")
        if self.scale_range >= 1:
            raise BrainVQInputError("scale_range", f"must be < 1 (scale factors stay positive), got {self.scale_range}")
        for name in ("gamma_range", "bias_coeff_range", "clip_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise BrainVQInputError(name, f"needs low <= high, got ({lo}, {hi})")
        if self.gamma_range[0] <= 0:
            raise BrainVQInputError("gamma_range", f"gamma must be positive, got {self.gamma_range}")
        if self.bias_degree < 1:
            raise BrainVQInputError("bias_degree", f"must be >= 1, got {self.bias_degree}")


#: the default training augmentation of the toolkit.
BRAIN_AUGMENT = BrainAugmentParams()


def brain_transforms(
    spatial_dims: int,
    spatial_size: Sequence[int],
    train: bool,
    keys: Sequence[str] = ("image",),
    from_volume_slices: bool = False,
    pixdim: Sequence[float] | None = None,
    augment: bool | None = None,
    slice_key: str = "slice",
    augment_params: BrainAugmentParams | None = None,
    read_cache: int | None = None,
) -> Compose:
    """Build the pre-processing pipeline; every item comes out float32 in [0, 1] of shape ``(1, *spatial_size)``.

    Steps (volume-only steps are skipped for 2D image files):

    1. :class:`LoadBrainImaged` (grayscale, channel first, ``MetaTensor``); for volume slices steps 1-3 run once per
       volume through :class:`~brainvq_monai.transforms.memo.MemoizedTransformd`, which keeps the last
       ``read_cache`` prepared volumes in memory;
    2. volumes: ``Orientationd`` to RAS, then ``Spacingd(pixdim)`` when ``pixdim`` is given (for volume slices
       the in-plane ``Spacingd`` runs after slicing, so slice indices refer to the RAS grid of the file, as
       :func:`brainvq_monai.data.image_io.brain_axial_slices` lists them);
    3. intensity to [0, 1] with :class:`ScaleIntensityRobustd`: robust 0.5/99.5 percentiles of the non-zero voxels
       for volumes (the whole volume, so slices of one subject share one scale), min-max for 2D image files;
    4. ``from_volume_slices``: :class:`ExtractAxialSliced` at ``d[slice_key]``; 3D volumes: ``CropForegroundd``
       (voxels > 0.05, margin 2);
    5. :class:`ResizeToFitd`: aspect-preserving resize + zero pad to ``spatial_size`` (mixed sizes logged once);
    6. training augmentation (``augment_params``, by default :data:`BRAIN_AUGMENT`: small affine, contrast/gamma,
       bias field, noise) followed by a clip to ``clip_range`` ([0, 1]). To run it batched on the GPU instead,
       build the pipeline with ``augment=False`` and give the trainer a
       :class:`~brainvq_monai.transforms.batch.AugmentedPrepareBatch`;
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
        augment_params: the augmentation; ``None`` means :data:`BRAIN_AUGMENT`.
        read_cache: prepared volumes kept in memory for volume slices (read, reoriented and intensity-scaled once per
            volume); ``None`` means :data:`SLICE_READ_CACHE` for ``from_volume_slices``; 0: every slice prepares
            its whole volume again. Ignored otherwise.

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
    params = BRAIN_AUGMENT if augment_params is None else augment_params
    if read_cache is None:
        read_cache = SLICE_READ_CACHE if from_volume_slices else 0
    if int(read_cache) < 0:
        raise BrainVQInputError("read_cache", f"must be >= 0 volumes, got {read_cache}")

    xforms: list = [LoadBrainImaged(keys, ensure_channel_first=True)]
    if volumes:
        xforms.append(Orientationd(keys, axcodes="RAS", labels=None))
        if pixdim is not None and not from_volume_slices:
            xforms.append(Spacingd(keys, pixdim=pixdim, mode="bilinear", dtype=torch.float32))
        xforms.append(ScaleIntensityRobustd(keys, lower=0.5, upper=99.5, nonzero=True, clip=True))
    else:
        xforms.append(ScaleIntensityRobustd(keys, lower=0.0, upper=100.0, nonzero=False, clip=True))
    if from_volume_slices:
        if int(read_cache) > 0:  # the volume-level steps above, once per volume instead of once per slice
            xforms = [MemoizedTransformd(keys, Compose(xforms), max_files=int(read_cache))]
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
                prob=params.affine_prob,
                rotate_range=(params.rotate_range,) * n_angles,
                scale_range=(params.scale_range,) * spatial_dims,
                mode="bilinear",
                padding_mode="zeros",
            ),
            RandAdjustContrastd(keys, prob=params.contrast_prob, gamma=params.gamma_range),
            RandBiasFieldd(keys, prob=params.bias_prob, coeff_range=params.bias_coeff_range, degree=params.bias_degree),
            RandGaussianNoised(keys, prob=params.noise_prob, std=params.noise_std, sample_std=params.noise_sample_std),
        ]
    xforms += [ClipIntensityd(keys, *params.clip_range), EnsureTyped(keys, dtype=torch.float32, track_meta=True)]
    return Compose(xforms)
