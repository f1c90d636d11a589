"""Batched indexing of CodesDataset and codes_dataloader (one gather per batch, no per-item collation)."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader

from brainvq_monai.data.codes import CodesDataset, codes_dataloader
from brainvq_monai.engines.utils import prepare_codes
from brainvq_monai.utils.errors import BrainVQInputError


def _dataset(n: int = 10, labels: bool = True) -> CodesDataset:
    g = torch.Generator().manual_seed(0)
    encoded = {"codes": torch.randint(0, 32, (n, 4, 5), generator=g), "subjects": [f"sub-{i}" for i in range(n)]}
    if labels:
        encoded["labels"] = torch.arange(n) % 2
    return CodesDataset(encoded)


def test_single_item_unchanged():
    ds = _dataset()
    item = ds[3]
    assert item["codes"].shape == (4, 5) and item["codes"].dtype == torch.long
    assert item["subject"] == "sub-3" and item["label"].ndim == 0 and int(item["label"]) == 1
    assert torch.equal(ds[torch.tensor(3)]["codes"], item["codes"])


@pytest.mark.parametrize("index", [[4, 0, 7], torch.tensor([4, 0, 7]), (4, 0, 7)])
def test_batched_indexing(index):
    ds = _dataset()
    batch = ds[index]
    assert batch["codes"].shape == (3, 4, 5) and batch["codes"].dtype == torch.long
    assert torch.equal(batch["codes"], torch.stack([ds.codes[i] for i in (4, 0, 7)]))
    assert batch["label"].tolist() == [0, 0, 1] and batch["label"].dtype == torch.long
    assert batch["subject"] == ["sub-4", "sub-0", "sub-7"]
    assert ds[1:4]["subject"] == ["sub-1", "sub-2", "sub-3"]
    with pytest.raises(IndexError):
        ds[[0, 10]]
    with pytest.raises(BrainVQInputError):
        ds[torch.zeros(2, 2, dtype=torch.long)]


@pytest.mark.parametrize("labels", [True, False])
def test_same_batches_as_monai_dataloader(labels):
    ds = _dataset(labels=labels)
    ours = list(codes_dataloader(ds, batch_size=4, shuffle=False))
    ref = list(DataLoader(ds, batch_size=4, shuffle=False))
    assert len(ours) == len(ref) == 3
    for a, b in zip(ours, ref):
        assert set(a) == set(b)
        assert torch.equal(a["codes"], b["codes"]) and a["codes"].dtype == b["codes"].dtype
        assert a["subject"] == list(b["subject"])
        if labels:
            assert torch.equal(a["label"], b["label"]) and a["label"].dtype == b["label"].dtype
        codes, lab = prepare_codes(a, torch.device("cpu"))
        ref_codes, ref_lab = prepare_codes(b, torch.device("cpu"))
        assert torch.equal(codes, ref_codes) and (lab is None) == (ref_lab is None) == (not labels)


def test_len_shuffle_and_reproducibility():
    ds = _dataset(10)
    assert len(codes_dataloader(ds, 4, drop_last=False)) == 3
    assert len(codes_dataloader(ds, 4, drop_last=True)) == 2
    assert [len(b["subject"]) for b in codes_dataloader(ds, 4, drop_last=True)] == [4, 4]
    run1 = [s for b in codes_dataloader(ds, 3, generator=torch.Generator().manual_seed(1)) for s in b["subject"]]
    run2 = [s for b in codes_dataloader(ds, 3, generator=torch.Generator().manual_seed(1)) for s in b["subject"]]
    assert run1 == run2 and sorted(run1) == sorted(ds.subjects) and run1 != ds.subjects
    with pytest.raises(BrainVQInputError, match="batch_size"):
        codes_dataloader(ds, 0)


def test_to_device_keeps_batches():
    ds = _dataset().to("cpu")
    assert ds.device == torch.device("cpu")
    assert ds.to(torch.device("meta")).codes.is_meta and ds.labels.is_meta


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_resident_codes():
    ds = _dataset()
    cpu_batch = ds[[1, 2, 3]]
    ds.to("cuda")
    batch = next(iter(codes_dataloader(ds, 3, shuffle=False)))
    assert batch["codes"].is_cuda and batch["label"].is_cuda
    codes, labels = prepare_codes(batch, torch.device("cuda"))
    assert codes.data_ptr() == batch["codes"].data_ptr()  # nothing copied
    assert torch.equal(ds[[1, 2, 3]]["codes"].cpu(), cpu_batch["codes"])


def test_codes_dataloader_batches_a_given_sampler_for_ddp():
    from monai.data import DistributedSampler

    ds = CodesDataset({"codes": torch.arange(10 * 4).reshape(10, 2, 2), "labels": torch.arange(10) % 2})
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=False, even_divisible=True)
        loader = codes_dataloader(ds, batch_size=2, shuffle=False, sampler=sampler)
        assert len(loader) == 3
        seen += [int(i) for batch in loader for i in batch["codes"][:, 0, 0] // 4]
    assert sorted(seen) == list(range(10))  # the two ranks split the data between them
    with pytest.raises(BrainVQInputError, match="shuffle"):
        codes_dataloader(ds, batch_size=2, shuffle=True, sampler=sampler)
