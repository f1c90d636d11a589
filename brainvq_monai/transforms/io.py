"""Loading transforms built on :func:`brainvq_monai.data.image_io.read_image`."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import MetaKeys

from brainvq_monai.data.image_io import read_image

__all__ = ["LoadBrainImage", "LoadBrainImaged"]


class LoadBrainImage(Transform):
    """Load a 2D brain image (PNG/JPEG/BMP/TIFF) or volume (NIfTI/Analyze) as a one-channel ``MetaTensor``.

    Interchangeable with ``LoadImage(image_only=True, ensure_channel_first=True)`` for grayscale input: the same array
    layout (``(1, W, H)`` for 2D images, ``(1, X, Y, Z)`` for volumes), the same affine (identity for 2D images, the
    nibabel RAS affine for volumes), so ``Orientationd``, ``Spacingd`` and ``SaveImage`` work downstream. Unlike
    ``LoadImage`` it converts colour images to grayscale, squeezes singleton 4th axes, zeroes NaNs and turns every bad
    file into a one-line :class:`~brainvq_monai.utils.errors.BrainVQInputError`. Files are never modified.

    Args:
        ensure_channel_first: prepend a channel axis of size 1.
        dtype: output data type.
    """

    def __init__(self, ensure_channel_first: bool = True, dtype: DtypeLike = np.float32) -> None:
        self.ensure_channel_first = ensure_channel_first
        self.dtype = dtype

    def __call__(self, filename: str | os.PathLike) -> MetaTensor:
        """
        Args:
            filename: image path.

        Returns:
            the image as a ``MetaTensor`` carrying ``affine`` and the meta data of :func:`read_image`.
        """
        data, affine, meta = read_image(filename)
        meta = dict(meta)
        meta[MetaKeys.ORIGINAL_AFFINE] = affine.copy()
        if self.ensure_channel_first:
            data = data[None]
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0  # a later EnsureChannelFirst is then a no-op
        else:
            meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(meta["spatial_shape"])
        array = torch.from_numpy(np.ascontiguousarray(data.astype(self.dtype, copy=False)))
        return MetaTensor(array, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


class LoadBrainImaged(MapTransform):
    """Dictionary version of :class:`LoadBrainImage`: replaces each path under ``keys`` by the loaded image.

    Other keys (``label``, ``subject``, ``slice``, ...) are passed through untouched.

    Args:
        keys: keys holding image paths.
        ensure_channel_first: prepend a channel axis of size 1.
        dtype: output data type.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        ensure_channel_first: bool = True,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadBrainImage(ensure_channel_first=ensure_channel_first, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
