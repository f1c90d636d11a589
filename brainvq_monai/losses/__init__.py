"""Losses of the brainvq networks."""

from brainvq_monai.losses.reconstruction import ReconstructionLoss, perceptual_distance

__all__ = ["ReconstructionLoss", "perceptual_distance"]
