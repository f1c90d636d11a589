"""Codebook usage over a whole epoch, as Ignite metrics.

Per-batch perplexity understates collapse (a batch sees few codes) and overstates it for small batches; these
metrics accumulate a histogram of code indices over every iteration of an epoch (summed over ranks under DDP)
and report the perplexity ``exp(H(p))`` of that histogram and the number of codes used at least once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from brainvq_monai.networks.layers.quantizer import codebook_perplexity

__all__ = ["CodebookHistogram", "CodebookPerplexity", "CodesUsed", "histogram_perplexity"]


def histogram_perplexity(counts: torch.Tensor) -> torch.Tensor:
    """Perplexity ``exp(-sum p log p)`` of a histogram of code counts, in float64 for epoch-sized counts.

    The same quantity as :func:`brainvq_monai.networks.layers.codebook_perplexity` (which the quantizer uses per
    batch); this is that function on a float64 histogram.

    Args:
        counts: ``(K,)`` non-negative counts.

    Returns:
        scalar tensor; 1 for a single used code, ``K`` for uniform usage, 0 for an empty histogram.
    """
    return codebook_perplexity(torch.as_tensor(counts).double())


class CodebookHistogram(Metric):
    """Accumulates a histogram of VQ code indices over an epoch.

    Args:
        num_embeddings: codebook size ``K``.
        output_transform: maps ``engine.state.output`` to a long tensor of code indices (any shape).
        device: where the histogram lives.
    """

    def __init__(
        self,
        num_embeddings: int,
        output_transform: Callable = lambda out: out["indices"],
        device: str | torch.device = "cpu",
    ) -> None:
        if num_embeddings < 1:
            raise ValueError(f"num_embeddings: must be >= 1, got {num_embeddings}")
        self.num_embeddings = int(num_embeddings)
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._counts = torch.zeros(self.num_embeddings, dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: torch.Tensor) -> None:
        idx = torch.as_tensor(output).detach().reshape(-1).long().to(self._device)
        if idx.numel() and (idx.min() < 0 or idx.max() >= self.num_embeddings):
            raise ValueError(f"code indices must lie in [0, {self.num_embeddings - 1}]")
        self._counts += torch.bincount(idx, minlength=self.num_embeddings).double()

    @sync_all_reduce("_counts")
    def compute(self) -> torch.Tensor:
        """Returns the ``(K,)`` histogram accumulated since the last reset (summed over ranks)."""
        return self._counts.clone()


class CodebookPerplexity(CodebookHistogram):
    """Perplexity of the code histogram accumulated over the epoch (``K`` means uniform use of all codes)."""

    def compute(self) -> float:  # type: ignore[override]
        return float(histogram_perplexity(super().compute()))


class CodesUsed(CodebookHistogram):
    """Number of distinct codes used at least once over the epoch."""

    def compute(self) -> float:  # type: ignore[override]
        return float((super().compute() > 0).sum())
