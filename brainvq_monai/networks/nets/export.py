"""Export adaptor for priors: ``monai.bundle ckpt_export`` traces with a random float input of a given shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from brainvq_monai.networks.nets.prior import AutoregressivePrior

__all__ = ["PriorExportWrapper"]


class PriorExportWrapper(nn.Module):
    """Float code map in, causal logits out: a prior as ``ckpt_export --use_trace`` can trace it.

    ``ckpt_export`` feeds ``torch.rand(input_shape)``; the codes are rounded and clamped to ``[0, K)``. Weights load
    through :meth:`load_state_dict` straight into the wrapped prior, so the prior's own checkpoints (``prior_*.pt``)
    are used as they are.

    Args:
        prior: the prior (its forward is traced for an unconditional call).
    """

    def __init__(self, prior: AutoregressivePrior) -> None:
        super().__init__()
        self.prior = prior

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, *S)`` of a code map ``(B, *S)`` given as any numeric tensor.

        Args:
            codes: code indices, float or integer.

        Returns:
            the prior's logits.
        """
        return self.prior(codes.round().long().clamp(0, self.prior.num_embeddings - 1))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Loads a checkpoint of the wrapped prior (keys without the ``prior.`` prefix)."""
        return self.prior.load_state_dict(state_dict, strict=strict, assign=assign)
