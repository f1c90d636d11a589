"""The volume read cache of LoadBrainImage(d): one file read per volume for datalists of axial slices."""

from __future__ import annotations

import copy
import os
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset

import brainvq_monai.transforms.io as io_module
from brainvq_monai.transforms.io import ImageReadCache, LoadBrainImage, LoadBrainImaged
from brainvq_monai.transforms.memo import MemoizedTransformd
from brainvq_monai.transforms.pipeline import SLICE_READ_CACHE, brain_transforms
from brainvq_monai.utils.errors import BrainVQInputError


def _volume(path, seed: int = 0, shape=(20, 24, 12)) -> str:
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, dtype=np.int16)
    data[3:-3, 4:-4, 2:-2] = rng.integers(100, 1000, size=(shape[0] - 6, shape[1] - 8, shape[2] - 4))
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.2, 1.5, 1.0])), path)
    return os.fspath(path)


@pytest.fixture
def count_reads(monkeypatch):
    calls: list[str] = []
    real = io_module.read_image

    def counting(path):
        calls.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(io_module, "read_image", counting)
    return calls


def test_slices_of_one_volume_read_the_file_once(tmp_path, count_reads):
    path = _volume(tmp_path / "sub-1.nii.gz")
    before = (os.path.getmtime(path), open(path, "rb").read())
    items = [{"image": path, "slice": k, "subject": "1"} for k in range(2, 10)]
    cached = brain_transforms(2, (16, 16), train=False, from_volume_slices=True)
    out_cached = [cached(dict(it))["image"] for it in items]
    assert len(count_reads) == 1
    plain = brain_transforms(2, (16, 16), train=False, from_volume_slices=True, read_cache=0)
    out_plain = [plain(dict(it))["image"] for it in items]
    assert len(count_reads) == 1 + len(items)
    for a, b in zip(out_cached, out_plain):
        assert torch.equal(a.as_tensor(), b.as_tensor()) and torch.equal(a.affine, b.affine)
    assert len({float(o.sum()) for o in out_cached}) > 1  # different slices indeed
    assert (os.path.getmtime(path), open(path, "rb").read()) == before  # the file is never written


def test_cache_is_off_by_default_except_for_slices(tmp_path):
    assert LoadBrainImage().read_cache is None
    assert brain_transforms(3, (8, 8, 8), train=False).transforms[0].loader.read_cache is None
    first = brain_transforms(2, (8, 8), train=True, from_volume_slices=True).transforms[0]
    assert isinstance(first, MemoizedTransformd) and first.cache.max_items == SLICE_READ_CACHE
    assert isinstance(
        brain_transforms(2, (8, 8), False, from_volume_slices=True, read_cache=0).transforms[0], LoadBrainImaged
    )
    with pytest.raises(BrainVQInputError, match="read_cache"):
        brain_transforms(2, (8, 8), train=False, from_volume_slices=True, read_cache=-1)


def test_hits_are_fresh_copies(tmp_path, count_reads):
    path = _volume(tmp_path / "a.nii.gz")
    cache = ImageReadCache(2)
    data, affine, meta = cache.read(path)
    reference = data.copy()
    data[:] = -1.0  # downstream in-place ops
    affine[:] = 0.0
    meta["pixdim"][1] = 99.0
    data2, affine2, meta2 = cache.read(path)
    assert np.array_equal(data2, reference) and affine2[0, 0] == 1.0 and meta2["pixdim"][1] == 1.0
    assert len(count_reads) == 1 and (cache.hits, cache.misses) == (1, 1)
    # through the transform: the returned tensor does not share memory with the cache
    loader = LoadBrainImage(cache_volumes=2)
    first = loader(path)
    first.zero_()
    assert torch.equal(loader(path).as_tensor()[0], torch.from_numpy(reference))


def test_changed_file_is_read_again_and_lru_bound(tmp_path, count_reads):
    a, b = _volume(tmp_path / "a.nii.gz", 0), _volume(tmp_path / "b.nii.gz", 1)
    cache = ImageReadCache(1)
    cache.read(a)
    cache.read(a)
    assert len(count_reads) == 1
    cache.read(b)  # evicts a
    cache.read(a)
    assert len(count_reads) == 3 and len(cache) == 1
    _volume(a, seed=5)
    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks
    new, _, _ = cache.read(a)
    assert len(count_reads) == 4
    assert np.array_equal(new, np.asarray(nib.load(a).dataobj, dtype=np.float32))
    with pytest.raises(BrainVQInputError, match="not found"):
        cache.read(tmp_path / "missing.nii.gz")
    assert ImageReadCache(0).read(a)[0].shape == (20, 24, 12) and len(count_reads) == 6  # size 0: no caching


def test_concurrent_requests_read_once(tmp_path, monkeypatch):
    path = _volume(tmp_path / "a.nii.gz")
    calls = []
    real = io_module.read_image
    lock = threading.Lock()

    def slow(p):
        with lock:
            calls.append(p)
        time.sleep(0.2)
        return real(p)

    monkeypatch.setattr(io_module, "read_image", slow)
    cache = ImageReadCache(2)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: cache.read(path)[0], range(6)))
    assert len(calls) == 1
    assert all(np.array_equal(r, results[0]) for r in results)
    assert len({r.__array_interface__["data"][0] for r in results}) == 6  # six distinct arrays


def test_pickle_copy_and_cache_dataset(tmp_path, count_reads):
    path = _volume(tmp_path / "a.nii.gz")
    cache = ImageReadCache(3)
    cache.read(path)
    for clone in (pickle.loads(pickle.dumps(cache)), copy.deepcopy(cache)):
        assert clone.max_items == 3 and len(clone) == 0
        assert np.array_equal(clone.read(path)[0], cache.read(path)[0])
    count_reads.clear()
    xform = brain_transforms(2, (16, 16), train=True, from_volume_slices=True)
    items = [{"image": path, "slice": k} for k in range(2, 10)]
    ds = CacheDataset(items, xform, num_workers=2, progress=False)
    assert len(count_reads) == 1  # two caching threads, one read
    assert ds[0]["image"].shape == (1, 16, 16)


def test_memoized_volume_steps_run_once_per_volume_and_hand_out_copies(tmp_path):
    paths = [_volume(tmp_path / f"sub-{i}.nii.gz", seed=i) for i in range(2)]
    calls: list[str] = []
    load = LoadBrainImaged("image")

    def volume_steps(d):
        calls.append(d["image"])
        out = load(d)
        out["image"] = out["image"] * 2.0
        return out

    memo = MemoizedTransformd("image", volume_steps, max_files=1)
    first = memo({"image": paths[0], "slice": 3})
    assert first["slice"] == 3 and first["image"].affine.shape == (4, 4)
    reference = first["image"].clone()
    first["image"].fill_(-1.0)  # a later in-place step must not reach the cache
    again = memo({"image": paths[0], "slice": 4})
    assert torch.equal(again["image"], reference) and len(calls) == 1
    memo({"image": paths[1]})  # max_files=1: evicts the first volume
    memo({"image": paths[0]})
    assert calls == [paths[0], paths[1], paths[0]]
    with pytest.raises(TypeError, match="file path"):
        memo({"image": torch.zeros(2)})
