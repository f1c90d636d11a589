"""Losses of the brainvq networks."""

from brainvq_monai.losses.adversarial import LogisticAdversarialLoss
from brainvq_monai.losses.reconstruction import ReconstructionLoss, perceptual_distance

__all__ = ["LogisticAdversarialLoss", "ReconstructionLoss", "perceptual_distance"]
