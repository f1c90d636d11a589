"""The DCGAN loss on raw discriminator logits, numerically stable at any logit size."""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["LogisticAdversarialLoss"]


class LogisticAdversarialLoss(_Loss):
    """Non-saturating logistic GAN loss (Goodfellow et al. 2014; the DCGAN loss) on raw logits.

    ``softplus(-x)`` for maps that should be judged real and ``softplus(x)`` for fake ones, i.e. binary cross-entropy
    with logits. It has the call signature of MONAI's ``PatchAdversarialLoss`` so either can train the DCGAN prior,
    but unlike MONAI's ``"bce"`` criterion (a sigmoid, then ``BCELoss``, whose log is clamped at -100) its gradient
    does not vanish when the discriminator is very sure: a generator that falls far behind still learns.
    """

    def forward(  # type: ignore[override]
        self, input: torch.Tensor, target_is_real: bool, for_discriminator: bool = True
    ) -> torch.Tensor:
        """The loss of discriminator logits.

        Args:
            input: discriminator logits (any shape).
            target_is_real: whether the maps should be judged real (always ``True`` for the generator's loss).
            for_discriminator: unused (the generator's loss is the real-target loss of its maps), kept for the
                ``PatchAdversarialLoss`` signature.

        Returns:
            the mean loss.
        """
        logits = input.float()
        return F.softplus(-logits).mean() if target_is_real else F.softplus(logits).mean()
