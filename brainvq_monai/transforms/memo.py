"""``MemoizedTransformd``: a deterministic per-file pipeline run once per file, for datalists of many items per file."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from brainvq_monai.transforms.io import FileCache

__all__ = ["MemoizedTransformd"]


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value  # MetaTensor.clone copies its meta data too


class MemoizedTransformd(MapTransform):
    """Applies a deterministic ``transform`` to the file under each key, once per file (LRU, keyed by file identity).

    Made for datalists of axial slices of volumes, where every slice item names the same volume: the volume-level
    steps (reading and decompressing the file, reorienting it, computing robust intensity percentiles over the whole
    volume) then run once per volume instead of once per slice. Each item gets its own copy of the result
    (``MetaTensor.clone``: data, affine and applied operations), so later in-place steps cannot corrupt the cache; a
    file changed on disk is processed again. Files are never modified.

    Args:
        keys: keys holding file paths.
        transform: a deterministic dictionary transform of ``{key: path}`` (e.g. ``Compose([LoadBrainImaged,
            Orientationd, ScaleIntensityRobustd])``); only ``transform({key: path})[key]`` is kept.
        max_files: files kept (least recently used dropped first); 0 runs ``transform`` every time.
        allow_missing_keys: do not raise if a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        transform: Callable[[Mapping[Hashable, Any]], Mapping[Hashable, Any]],
        max_files: int = 4,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = transform
        self.cache = FileCache(max_files)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """
        Args:
            data: an item whose ``keys`` hold file paths.

        Returns:
            the item with each path replaced by the (memoized) transform result.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"MemoizedTransformd: '{key}' must be a file path, got {type(path).__name__}")
            d[key] = self.cache.get(path, lambda p, k=key: self.transform({k: p})[k], _copy)
        return d
