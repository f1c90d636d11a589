"""Reconstruction loss of a VQ-VAE: L1 plus optional SSIM and perceptual terms, one code path for 2D and 3D."""

from __future__ import annotations

import torch
from monai.losses import SSIMLoss
from torch import nn

from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["ReconstructionLoss", "perceptual_distance"]


def perceptual_distance(network: nn.Module, reconstruction: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """LPIPS-style distance in a frozen network's feature maps, without learned layer weights.

    At every resolution stage (``network.stage_activations``), each position's feature vector is scaled to unit
    length over channels (as LPIPS does) and the mean squared difference is taken; the stages are averaged.

    Args:
        network: a frozen network with ``stage_activations(x) -> list of (B, C_i, *S_i)`` (e.g.
            :class:`~brainvq_monai.networks.nets.BrainFeatureNet`).
        reconstruction: ``(B, C, *spatial)``, gradients flow through it.
        image: the target, same shape (no gradients).

    Returns:
        the scalar distance.
    """
    with torch.no_grad():
        targets = network.stage_activations(image)
    terms = []
    for a, b in zip(network.stage_activations(reconstruction), targets):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-6)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-6)
        terms.append((a - b).pow(2).sum(1).mean())
    return torch.stack(terms).mean()


class ReconstructionLoss(nn.Module):
    """``l1_weight * L1 + ssim_weight * (1 - SSIM) + perceptual_weight * perceptual distance``.

    L1 alone is minimised by a blurred reconstruction wherever the decoder is unsure; the SSIM term (MONAI's
    :class:`~monai.losses.SSIMLoss`, Gaussian window) rewards local contrast and structure, which is where the
    grey/white-matter boundary and the sulci live; the perceptual term (:func:`perceptual_distance`) compares feature
    maps of a frozen network trained in-house (no downloaded weights: MONAI's ``PerceptualLoss`` would fetch them).
    With ``ssim_weight=0`` and ``perceptual_weight=0`` this is ``torch.nn.L1Loss``.

    Args:
        spatial_dims: 2 or 3.
        l1_weight: weight of the mean absolute error.
        ssim_weight: weight of ``1 - SSIM``; 0 disables the term.
        data_range: intensity range of the images (they are scaled to [0, 1] by the bundle transforms).
        win_size: Gaussian window of the SSIM term (11 as MONAI's ``SSIMMetric``; use 7 for images under ~48 px).
        perceptual_weight: weight of the perceptual term; 0 disables it.
        perceptual_network: the frozen network of the perceptual term (required when its weight is positive; see
            :func:`brainvq_monai.bundle.perceptual_network`).
    """

    def __init__(
        self,
        spatial_dims: int,
        l1_weight: float = 1.0,
        ssim_weight: float = 0.0,
        data_range: float = 1.0,
        win_size: int = 11,
        perceptual_weight: float = 0.0,
        perceptual_network: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise BrainVQInputError("spatial_dims", f"must be 2 or 3, got {spatial_dims}")
        weights = (l1_weight, ssim_weight, perceptual_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise BrainVQInputError(
                "ReconstructionLoss",
                f"weights must be >= 0 and not all 0, got l1 {l1_weight}, ssim {ssim_weight}, perceptual "
                f"{perceptual_weight}",
            )
        if perceptual_weight > 0 and perceptual_network is None:
            raise BrainVQInputError("perceptual_network", "needed when perceptual_weight > 0")
        self.l1_weight = float(l1_weight)
        self.ssim_weight = float(ssim_weight)
        self.ssim = (
            SSIMLoss(spatial_dims=spatial_dims, data_range=data_range, win_size=win_size) if ssim_weight > 0 else None
        )
        self.perceptual_weight = float(perceptual_weight)
        self.perceptual_network = perceptual_network if perceptual_weight > 0 else None
        if self.perceptual_network is not None:
            self.perceptual_network.eval()
            for p in self.perceptual_network.parameters():
                p.requires_grad_(False)

    def forward(self, reconstruction: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The scalar loss.

        Args:
            reconstruction: ``(B, C, *spatial)``.
            image: the target, same shape.

        Returns:
            the weighted sum of the terms (computed in float32).
        """
        reconstruction, image = reconstruction.float(), image.float()
        loss = self.l1_weight * (reconstruction - image).abs().mean()
        if self.ssim is not None:
            loss = loss + self.ssim_weight * self.ssim(reconstruction, image)
        if self.perceptual_network is not None:
            loss = loss + self.perceptual_weight * perceptual_distance(self.perceptual_network, reconstruction, image)
        return loss
