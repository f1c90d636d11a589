"""Loading transforms built on :func:`brainvq_monai.data.image_io.read_image`."""

from __future__ import annotations

import copy
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import MetaKeys

from brainvq_monai.data.image_io import read_image

__all__ = ["FileCache", "ImageReadCache", "LoadBrainImage", "LoadBrainImaged"]


def _file_key(path: str) -> tuple:
    """Identity of a file's current content: real path, size and modification time (and those of an Analyze .img)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key: tuple = (real, st.st_size, st.st_mtime_ns)
    if real.lower().endswith(".hdr"):
        for img in (real[:-4] + ".img", real[:-4] + ".IMG"):
            if os.path.isfile(img):
                st_img = os.stat(img)
                key += (st_img.st_size, st_img.st_mtime_ns)
                break
    return key


class FileCache:
    """A bounded, thread-safe LRU cache of values computed from files, keyed by each file's identity.

    Entries are keyed by real path, size and modification time, so a file changed on disk is computed again; every hit
    returns ``copy_fn(value)``, so in-place operations downstream can never corrupt the cache. Concurrent requests for
    the same file (``CacheDataset``'s threads) compute it once: the others wait for that result. Files are only read,
    never written. In ``DataLoader`` worker processes each worker holds its own cache; pickling or deep-copying the
    cache gives an empty one of the same size.

    Args:
        max_items: number of files kept (least recently used dropped first); 0 disables caching.
    """

    def __init__(self, max_items: int) -> None:
        if int(max_items) < 0:
            raise ValueError(f"max_items must be >= 0, got {max_items}")
        self.max_items = int(max_items)
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._pending: dict[tuple, threading.Event] = {}
        self.hits = 0
        self.misses = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"max_items": self.max_items}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.max_items = int(state["max_items"])
        self._init_state()

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Drops every entry (and resets the hit/miss counters)."""
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def get(self, path: str | os.PathLike, compute: Callable[[str], Any], copy_fn: Callable[[Any], Any]) -> Any:
        """``copy_fn(compute(path))``, with ``compute`` run once per file version while it stays cached.

        Args:
            path: the file the value is computed from.
            compute: path -> value (its exceptions propagate and nothing is cached).
            copy_fn: value -> an independent copy, returned to the caller.

        Returns:
            a copy of the (cached) value, never shared with the cache or an earlier call.
        """
        path = os.fspath(path)
        if self.max_items == 0:
            return compute(path)
        try:
            key = _file_key(path)
        except OSError:
            return compute(path)  # missing/unreadable: compute raises its own one-line error
        while True:
            with self._lock:
                entry = self._items.get(key)
                if entry is not None:
                    self._items.move_to_end(key)
                    self.hits += 1
                    break
                event = self._pending.get(key)
                if event is None:  # this thread computes the value
                    event = self._pending[key] = threading.Event()
                    self.misses += 1
                    owner = True
                else:
                    owner = False
            if not owner:
                event.wait()
                continue  # the owner's result is cached now (or it failed: then this thread tries itself)
            try:
                entry = compute(path)  # private to the cache: callers get copies (below)
                with self._lock:
                    self._items[key] = entry
                    self._items.move_to_end(key)
                    while len(self._items) > self.max_items:
                        self._items.popitem(last=False)
            finally:
                with self._lock:
                    self._pending.pop(key, None)
                event.set()
            break
        return copy_fn(entry)


class ImageReadCache(FileCache):
    """A :class:`FileCache` of :func:`~brainvq_monai.data.image_io.read_image` results.

    Made for datalists that list one item per axial slice of a volume: the slices of one volume then decompress the
    file once instead of once per slice. Every hit returns fresh copies of (array, affine, meta).

    Args:
        max_items: number of files kept (least recently used dropped first); 0 disables caching.
    """

    @staticmethod
    def _fresh(entry: tuple[np.ndarray, np.ndarray, dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        data, affine, meta = entry
        return data.copy(), affine.copy(), copy.deepcopy(meta)

    def read(self, path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """:func:`~brainvq_monai.data.image_io.read_image` through the cache.

        Args:
            path: image file.

        Returns:
            ``(data, affine, meta)`` as :func:`read_image`, never shared with the cache or an earlier call.

        Raises:
            BrainVQInputError: as :func:`read_image` (failures are not cached).
        """
        return self.get(path, read_image, self._fresh)


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
        cache_volumes: keep the last ``cache_volumes`` files read in an :class:`ImageReadCache` (0: no cache). Worth
            it when one file is loaded many times in a row, as for datalists of axial slices of volumes
            (``brain_transforms`` turns it on for them); each copy of the transform (each ``DataLoader`` worker)
            holds its own cache, so memory is up to ``cache_volumes`` decoded files per worker.
    """

    def __init__(
        self, ensure_channel_first: bool = True, dtype: DtypeLike = np.float32, cache_volumes: int = 0
    ) -> None:
        self.ensure_channel_first = ensure_channel_first
        self.dtype = dtype
        self.read_cache = ImageReadCache(cache_volumes) if int(cache_volumes) > 0 else None

    def __call__(self, filename: str | os.PathLike) -> MetaTensor:
        """
        Args:
            filename: image path.

        Returns:
            the image as a ``MetaTensor`` carrying ``affine`` and the meta data of :func:`read_image`.
        """
        data, affine, meta = read_image(filename) if self.read_cache is None else self.read_cache.read(filename)
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
        cache_volumes: files kept in memory by the loader (see :class:`LoadBrainImage`); 0 disables the cache.
    """

    def __init__(
        self,
        keys: KeysCollection,
        ensure_channel_first: bool = True,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
        cache_volumes: int = 0,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadBrainImage(
            ensure_channel_first=ensure_channel_first, dtype=dtype, cache_volumes=cache_volumes
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
