"""How far generated code maps are from real ones: the validation metric of priors without a likelihood."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

__all__ = ["CodeMapDivergence", "jensen_shannon_bits"]


def jensen_shannon_bits(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence in bits (0: equal, 1: disjoint) between histograms along the last dimension.

    Args:
        p: ``(..., K)`` non-negative counts (normalised here; an all-zero row counts as uniform).
        q: ``(..., K)`` non-negative counts, same shape.

    Returns:
        ``(...)`` divergences in ``[0, 1]``.
    """

    def normalise(h: torch.Tensor) -> torch.Tensor:
        total = h.sum(-1, keepdim=True)
        return torch.where(total > 0, h / total.clamp_min(1e-30), torch.full_like(h, 1.0 / h.shape[-1]))

    p, q = normalise(p.double()), normalise(q.double())
    m = (p + q) / 2

    def kl(a: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (a.clamp_min(1e-300) / m.clamp_min(1e-300)).log(), a.new_zeros(())).sum(-1)

    return ((kl(p) + kl(q)) / (2 * math.log(2.0))).clamp(0, 1)


class CodeMapDivergence(Metric):
    """Mean Jensen-Shannon divergence (bits) between code histograms of generated and real maps, region by region.

    The code map is cut into ``regions`` x ... x ``regions`` boxes; in each box the histogram of codes over the
    epoch's generated maps is compared with that of the real maps, and the divergences are averaged. So the metric
    sees both which codes are used (a collapsed generator uses few) and where (background codes at the border,
    tissue codes inside), which a single histogram would not. 0 means identical statistics; lower is better.
    It is the key validation metric of the DCGAN prior, which has no likelihood.

    Args:
        num_embeddings: codebook size ``K``.
        regions: boxes per axis (1: one histogram of the whole map).
        output_transform: ``engine.state.output`` -> ``(generated codes, real codes)``, each ``(B, *S)`` long.
        device: where the histograms live.
    """

    def __init__(
        self,
        num_embeddings: int,
        regions: int = 4,
        output_transform: Callable = lambda out: (out["pred"], out["image"]),
        device: str | torch.device = "cpu",
    ) -> None:
        if int(num_embeddings) < 2:
            raise ValueError(f"num_embeddings: must be >= 2, got {num_embeddings}")
        if int(regions) < 1:
            raise ValueError(f"regions: must be >= 1, got {regions}")
        self.num_embeddings, self.regions = int(num_embeddings), int(regions)
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._fake: torch.Tensor | None = None
        self._real: torch.Tensor | None = None

    def _region_index(self, shape: Sequence[int]) -> torch.Tensor:
        """Region number of every position of a ``shape`` code map, flattened row-major."""
        axes = [torch.arange(s, device=self._device) * min(self.regions, s) // s for s in shape]
        grids = torch.meshgrid(*axes, indexing="ij")
        index = torch.zeros_like(grids[0])
        for g, s in zip(grids, shape):
            index = index * min(self.regions, s) + g
        return index.reshape(-1)

    def _histogram(self, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.as_tensor(codes).detach().long().to(self._device)
        region = self._region_index(codes.shape[1:])
        num_regions = int(region.max()) + 1
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.num_embeddings):
            raise ValueError(f"code indices must lie in [0, {self.num_embeddings - 1}]")
        flat = (region[None] * self.num_embeddings + codes.reshape(codes.shape[0], -1)).reshape(-1)
        counts = torch.bincount(flat, minlength=num_regions * self.num_embeddings)
        return counts.double().reshape(num_regions, self.num_embeddings)

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        fake, real = (self._histogram(x) for x in output)
        self._fake = fake if self._fake is None else self._fake + fake
        self._real = real if self._real is None else self._real + real

    @sync_all_reduce("_fake", "_real")
    def compute(self) -> float:
        if self._fake is None or self._real is None:
            raise RuntimeError("CodeMapDivergence must have at least one batch before it can be computed")
        return float(jensen_shannon_bits(self._fake, self._real).mean())
