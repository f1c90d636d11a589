"""Intensity transforms: robust scaling to [0, 1] and clipping, identical for 2D slices and 3D volumes."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils.type_conversion import convert_to_tensor

__all__ = ["ScaleIntensityRobust", "ScaleIntensityRobustd", "ClipIntensity", "ClipIntensityd", "ThresholdForeground"]


class ScaleIntensityRobust(Transform):
    """Map the ``lower``/``upper`` percentiles of an image to 0 and 1, optionally clipping to [0, 1].

    ``lower=0, upper=100, nonzero=False`` is plain min-max scaling (used for 2D slices); ``lower=0.5,
    upper=99.5, nonzero=True`` is the robust scaling used for volumes (percentiles over non-zero voxels, so the
    background does not count). A constant image gives zeros, never NaN. Works for any number of spatial dims.

    Args:
        lower: lower percentile in [0, 100].
        upper: upper percentile in [0, 100], greater than ``lower``.
        nonzero: compute the percentiles over non-zero voxels only (all voxels when none is non-zero).
        clip: clip the result to [0, 1].
        channel_wise: scale each channel separately.
    """

    def __init__(
        self,
        lower: float = 0.5,
        upper: float = 99.5,
        nonzero: bool = True,
        clip: bool = True,
        channel_wise: bool = True,
    ) -> None:
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        self.lower = lower
        self.upper = upper
        self.nonzero = nonzero
        self.clip = clip
        self.channel_wise = channel_wise

    def _bounds(self, x: torch.Tensor) -> tuple[float, float]:
        values = x.detach().reshape(-1).float().cpu().numpy()
        if self.nonzero:
            nz = values[values != 0]
            values = nz if nz.size else values
        lo, hi = (float(v) for v in np.percentile(values, [self.lower, self.upper]))
        if hi <= lo:  # e.g. mostly constant foreground: fall back to the full range
            lo, hi = float(values.min()), float(values.max())
        return lo, hi

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self._bounds(x)
        if hi <= lo:
            return torch.zeros_like(x)
        out = (x - lo) / (hi - lo)
        return out.clamp(0.0, 1.0) if self.clip else out

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        """
        Args:
            img: channel-first image ``(C, *spatial)``.

        Returns:
            the scaled image (a ``MetaTensor`` stays a ``MetaTensor``), floating point.
        """
        x = convert_to_tensor(img, track_meta=True)
        if not torch.is_floating_point(x):
            x = x.float()
        if self.channel_wise:
            return torch.stack([self._scale(c) for c in x]) if x.shape[0] > 1 else self._scale(x)
        return self._scale(x)


class ScaleIntensityRobustd(MapTransform):
    """Dictionary version of :class:`ScaleIntensityRobust`.

    Args:
        keys: keys of the images to scale.
        lower: lower percentile.
        upper: upper percentile.
        nonzero: percentiles over non-zero voxels only.
        clip: clip to [0, 1].
        channel_wise: scale each channel separately.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 0.5,
        upper: float = 99.5,
        nonzero: bool = True,
        clip: bool = True,
        channel_wise: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.scaler = ScaleIntensityRobust(lower, upper, nonzero, clip, channel_wise)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key])
        return d


class ClipIntensity(Transform):
    """Clip intensities to ``[minv, maxv]`` (default [0, 1]), keeping the type (``MetaTensor`` stays one).

    Args:
        minv: lower bound.
        maxv: upper bound.
    """

    def __init__(self, minv: float = 0.0, maxv: float = 1.0) -> None:
        self.minv = minv
        self.maxv = maxv

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        return convert_to_tensor(img, track_meta=True).clamp(self.minv, self.maxv)


class ClipIntensityd(MapTransform):
    """Dictionary version of :class:`ClipIntensity`.

    Args:
        keys: keys of the images to clip.
        minv: lower bound.
        maxv: upper bound.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self, keys: KeysCollection, minv: float = 0.0, maxv: float = 1.0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.clipper = ClipIntensity(minv, maxv)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.clipper(d[key])
        return d


class ThresholdForeground:
    """Picklable foreground selector for ``CropForegroundd(select_fn=...)``: ``img > threshold``.

    Args:
        threshold: intensity above which a voxel is foreground (on images scaled to [0, 1]).
    """

    def __init__(self, threshold: float = 0.05) -> None:
        self.threshold = threshold

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return img > self.threshold
