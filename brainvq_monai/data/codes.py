"""Datasets of cached VQ-VAE code maps for prior training."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["CodesDataset"]


class CodesDataset(Dataset):
    """Cached code maps (from ``AutoregressivePriorInferer.encode_dataset``) as a dataset of dicts.

    Items are ``{"codes": (*latent) long, "subject": str}`` plus ``"label"`` (long scalar) when labels are known.

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

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"codes": self.codes[index], "subject": self.subjects[index]}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Spatial shape of the code maps."""
        return tuple(self.codes.shape[1:])
