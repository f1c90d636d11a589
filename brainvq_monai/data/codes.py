"""Cached VQ-VAE code maps for prior training.

Their file format (:func:`save_codes`, :func:`load_codes`; the inferers re-export both), a dataset of code maps
(:class:`CodesDataset`) and a loader that batches it without collation (:func:`codes_dataloader`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.io import atomic_torch_save, load_torch_file

__all__ = ["CodesDataset", "codes_dataloader", "load_codes", "save_codes"]

_CODE_KEYS = ("codes", "labels", "subjects")


def save_codes(encoded: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Saves the output of ``AutoregressivePriorInferer.encode_dataset`` with ``torch.save``, atomically.

    Args:
        encoded: dict with ``codes`` (long ``(N, *latent)``), ``labels`` (long ``(N,)`` or ``None``) and
            ``subjects`` (list of ``N`` strings).
        path: destination file (parent folders are created).

    Raises:
        BrainVQInputError: if ``encoded`` is not a valid code dict.
    """
    _check_codes(encoded, "encoded")
    atomic_torch_save({k: encoded[k] for k in _CODE_KEYS}, path)


def load_codes(path: str | os.PathLike) -> dict[str, Any]:
    """Loads cached code maps written by :func:`save_codes` (``weights_only`` unpickling).

    Args:
        path: the code file.

    Returns:
        the dict ``{"codes", "labels", "subjects"}``.

    Raises:
        BrainVQInputError: if the file is missing or does not hold a valid code dict.
    """
    path = os.fspath(path)
    encoded = load_torch_file(path, "code file")
    _check_codes(encoded, path)
    return dict(encoded)


def _check_codes(encoded: Any, where: str) -> None:
    """Raises a :class:`BrainVQInputError` naming ``where`` unless ``encoded`` is a valid code dict."""
    if not isinstance(encoded, Mapping) or any(k not in encoded for k in _CODE_KEYS):
        raise BrainVQInputError(where, f"expected a dict with keys {list(_CODE_KEYS)}")
    codes, labels, subjects = (encoded[k] for k in _CODE_KEYS)
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.dim() < 2:
        raise BrainVQInputError(where, "'codes' must be an integer tensor (N, *latent)")
    n = codes.shape[0]
    if labels is not None and (not isinstance(labels, torch.Tensor) or labels.shape != (n,)):
        raise BrainVQInputError(where, f"'labels' must be None or a tensor of shape ({n},)")
    if not isinstance(subjects, (list, tuple)) or len(subjects) != n:
        raise BrainVQInputError(where, f"'subjects' must be a list of {n} names")


class CodesDataset(Dataset):
    """Cached code maps (from ``AutoregressivePriorInferer.encode_dataset``) as a dataset of dicts.

    Items are ``{"codes": (*latent) long, "subject": str}`` plus ``"label"`` (long scalar) when labels are known.
    Indexing with a sequence or 1-D tensor of indices returns the whole batch at once, as collation would build it:
    ``{"codes": (B, *latent) long, "subject": [str] * B}`` plus ``"label"`` ``(B,)`` long. Code maps are small
    (a 32x32 map is 8 KiB), so the whole cache can sit on the training device: see :meth:`to` and
    :func:`codes_dataloader`.

    Args:
        encoded: the dict ``{"codes", "labels", "subjects"}`` or the path of a file written by :func:`save_codes`.
    """

    def __init__(self, encoded: Mapping[str, Any] | str | os.PathLike) -> None:
        if not isinstance(encoded, Mapping):
            encoded = load_codes(encoded)
        self.codes: torch.Tensor = torch.as_tensor(encoded["codes"]).long()
        labels = encoded.get("labels")
        self.labels: torch.Tensor | None = None if labels is None else torch.as_tensor(labels).long()
        self.subjects: list[str] = list(encoded.get("subjects") or [str(i) for i in range(len(self.codes))])

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def __getitem__(self, index: int | Sequence[int] | torch.Tensor | np.ndarray | slice) -> dict[str, Any]:
        """
        Args:
            index: one index (an item) or a sequence / 1-D tensor / array / slice of indices (a batch).

        Returns:
            the item, or the batch dict with stacked ``codes`` and ``label`` and the list of ``subject``.
        """
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        if isinstance(index, (torch.Tensor, np.ndarray)) and index.ndim == 0:
            index = int(index)
        if isinstance(index, (int, np.integer)):
            item: dict[str, Any] = {"codes": self.codes[index], "subject": self.subjects[index]}
            if self.labels is not None:
                item["label"] = self.labels[index]
            return item
        idx = torch.as_tensor(index if isinstance(index, (torch.Tensor, np.ndarray)) else list(index), dtype=torch.long)
        if idx.ndim != 1:
            raise BrainVQInputError("CodesDataset index", f"need one index or a 1-D batch of indices, got {idx.shape}")
        idx_list = idx.tolist()
        n = len(self)
        if any(not -n <= i < n for i in idx_list):
            raise IndexError(f"CodesDataset index out of range for {n} code maps")
        if self.codes.device.type == "cuda":  # pinned + non_blocking: a pageable copy would wait for the GPU queue
            idx = idx.pin_memory().to(self.codes.device, non_blocking=True)
        else:
            idx = idx.to(self.codes.device)
        batch: dict[str, Any] = {"codes": self.codes[idx], "subject": [self.subjects[i] for i in idx_list]}
        if self.labels is not None:
            batch["label"] = self.labels[idx]
        return batch

    def to(self, device: torch.device | str) -> CodesDataset:
        """Moves the codes (and labels) to ``device`` once, in place; batches are then gathered there.

        Args:
            device: target device.

        Returns:
            this dataset.
        """
        self.codes = self.codes.to(device)
        if self.labels is not None:
            self.labels = self.labels.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """Where the codes are."""
        return self.codes.device

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Spatial shape of the code maps."""
        return tuple(self.codes.shape[1:])


def _identity(batch: Any) -> Any:
    return batch


def codes_dataloader(
    dataset: CodesDataset,
    batch_size: int,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A ``DataLoader`` whose batches are single indexing ops of a :class:`CodesDataset` (no per-item collation).

    Built with ``batch_size=None`` and a ``BatchSampler``: each batch is ``dataset[indices]``, with the same keys,
    dtypes and shapes as ``monai.data.DataLoader(dataset, batch_size)`` gives (``codes`` ``(B, *latent)`` long,
    ``label`` ``(B,)`` long when known, ``subject`` a list of str), so :func:`brainvq_monai.data.batch.prepare_codes`
    consumes it unchanged. It runs in the main process (no workers: a gather is faster than inter-process transfer);
    after ``dataset.to("cuda")`` batches are gathered on the GPU and ``prepare_codes`` moves nothing.

    Args:
        dataset: the code maps.
        batch_size: samples per batch (>= 1).
        shuffle: reshuffle every epoch.
        drop_last: drop the last incomplete batch.
        generator: CPU generator of the shuffling, for reproducible epochs.
        sampler: an index sampler to batch instead (e.g. MONAI's ``DistributedSampler`` for multi-GPU training;
            it does its own shuffling, so ``shuffle`` must then be False).

    Returns:
        the loader; ``len(loader)`` is the number of batches per epoch.

    Raises:
        BrainVQInputError: a batch size below 1, or ``shuffle`` together with a ``sampler``.
    """
    if int(batch_size) < 1:
        raise BrainVQInputError("batch_size", f"must be >= 1, got {batch_size}")
    if sampler is not None and shuffle:
        raise BrainVQInputError("shuffle", "must be False when a sampler is given (the sampler shuffles)")
    if sampler is None:
        sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    batches = BatchSampler(sampler, batch_size=int(batch_size), drop_last=drop_last)
    return DataLoader(dataset, batch_size=None, sampler=batches, collate_fn=_identity, num_workers=0)
