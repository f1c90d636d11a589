"""Datasets and loaders of cached VQ-VAE code maps for prior training."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["CodesDataset", "codes_dataloader"]


class CodesDataset(Dataset):
    """Cached code maps (from ``AutoregressivePriorInferer.encode_dataset``) as a dataset of dicts.

    Items are ``{"codes": (*latent) long, "subject": str}`` plus ``"label"`` (long scalar) when labels are known.
    Indexing with a sequence or 1-D tensor of indices returns the whole batch at once, as collation would build it:
    ``{"codes": (B, *latent) long, "subject": [str] * B}`` plus ``"label"`` ``(B,)`` long. Code maps are small
    (a 32x32 map is 8 KiB), so the whole cache can sit on the training device: see :meth:`to` and
    :func:`codes_dataloader`.

    Args:
        encoded: the dict ``{"codes", "labels", "subjects"}`` or the path of a file written by ``save_codes``.
    """

    def __init__(self, encoded: Mapping[str, Any] | str | os.PathLike) -> None:
        if not isinstance(encoded, Mapping):
            from brainvq_monai.inferers.prior_inferer import load_codes

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
    ``label`` ``(B,)`` long when known, ``subject`` a list of str), so :func:`brainvq_monai.engines.utils.prepare_codes`
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
