"""Builds either prior from one set of arguments, so a bundle switches priors with one override."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from brainvq_monai.networks.nets.prior import AutoregressivePrior
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["PRIORS", "build_prior"]

PRIORS = ("pixelcnn", "transformer")


def build_prior(
    prior: str,
    spatial_dims: int,
    num_embeddings: int,
    latent_shape: Sequence[int],
    num_classes: int | None = None,
    pixelcnn: Mapping[str, Any] | None = None,
    transformer: Mapping[str, Any] | None = None,
) -> AutoregressivePrior:
    """A :class:`GatedPixelCNN` or :class:`TransformerPrior` over codes of a ``latent_shape`` code map.

    Args:
        prior: ``"pixelcnn"`` (2D only) or ``"transformer"``.
        spatial_dims: 2 or 3.
        num_embeddings: codebook size ``K``.
        latent_shape: spatial shape of the code maps (the transformer's sequence length depends on it).
        num_classes: number of classes for conditioning, or ``None``/``0`` for an unconditional prior.
        pixelcnn: further arguments of :class:`GatedPixelCNN` (used when ``prior == "pixelcnn"``).
        transformer: further arguments of :class:`TransformerPrior` (used when ``prior == "transformer"``).

    Returns:
        the prior.
    """
    num_classes = int(num_classes) if num_classes else None
    if prior == "pixelcnn":
        from brainvq_monai.networks.nets.gated_pixelcnn import GatedPixelCNN

        return GatedPixelCNN(spatial_dims, num_embeddings, num_classes, **dict(pixelcnn or {}))
    if prior == "transformer":
        from brainvq_monai.networks.nets.transformer_prior import TransformerPrior

        return TransformerPrior(spatial_dims, num_embeddings, latent_shape, num_classes, **dict(transformer or {}))
    raise BrainVQInputError("prior", f"must be one of {', '.join(PRIORS)}, got {prior!r}")
