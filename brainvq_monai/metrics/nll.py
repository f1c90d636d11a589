"""Negative log-likelihood of a prior over code maps, as an Ignite metric."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

__all__ = ["PriorNLL"]


class PriorNLL(Metric):
    """Mean negative log-likelihood of the prior over all tokens of an epoch.

    Args:
        unit: ``"nats_per_token"`` (mean NLL per latent token, natural log) or ``"bits_per_dim"``: total NLL in bits
            divided by the number of image dimensions (pixels or voxels) the tokens stand for, the usual figure for
            likelihood models of images; it needs ``dims_per_token``.
        dims_per_token: image pixels (voxels) per latent token, e.g. 16 for 4x4 downsampling in 2D.
        output_transform: maps ``engine.state.output`` to a float tensor of per-token NLL in nats (any shape).
        device: where the accumulators live.
    """

    def __init__(
        self,
        unit: str = "nats_per_token",
        dims_per_token: float = 1.0,
        output_transform: Callable = lambda out: out["nll"],
        device: str | torch.device = "cpu",
    ) -> None:
        if unit not in ("nats_per_token", "bits_per_dim"):
            raise ValueError(f"unit: must be 'nats_per_token' or 'bits_per_dim', got {unit!r}")
        if dims_per_token <= 0:
            raise ValueError(f"dims_per_token: must be > 0, got {dims_per_token}")
        self.unit = unit
        self.dims_per_token = float(dims_per_token)
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.zeros((), dtype=torch.float64, device=self._device)
        self._count = torch.zeros((), dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: torch.Tensor) -> None:
        nll = torch.as_tensor(output).detach().double().to(self._device)
        self._sum += nll.sum()
        self._count += nll.numel()

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        if self._count <= 0:
            raise RuntimeError("PriorNLL must have at least one token before it can be computed")
        nats = float(self._sum / self._count)
        if self.unit == "nats_per_token":
            return nats
        return nats / math.log(2.0) / self.dims_per_token
