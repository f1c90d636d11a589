"""Builds any of the three priors from one set of arguments, so a bundle switches priors with one override."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from brainvq_monai.networks.nets.prior import CodeMapPrior
from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.settings import as_bool, json_ready

__all__ = ["PRIORS", "build_prior"]

PRIORS = ("pixelcnn", "transformer", "dcgan")
# TransformerPrior options that the block-factorised transformer (block_size > 1) does not have
_PLAIN_TRANSFORMER_ONLY = ("ordering_type", "ordering_seed", "use_cuda_graph")


def build_prior(
    prior: str,
    spatial_dims: int,
    num_embeddings: int,
    latent_shape: Sequence[int],
    num_classes: int | None = None,
    pixelcnn: Mapping[str, Any] | None = None,
    transformer: Mapping[str, Any] | None = None,
    dcgan: Mapping[str, Any] | None = None,
) -> CodeMapPrior:
    """A :class:`GatedPixelCNN`, :class:`TransformerPrior` or :class:`DCGANPrior` over ``latent_shape`` code maps.

    Args:
        prior: ``"pixelcnn"`` (2D only), ``"transformer"`` or ``"dcgan"`` (adversarial: no likelihood).
        spatial_dims: 2 or 3.
        num_embeddings: codebook size ``K``.
        latent_shape: spatial shape of the code maps (the transformer's sequence length depends on it).
        num_classes: number of classes for conditioning, or ``None``/``0`` for an unconditional prior.
        pixelcnn: further arguments of :class:`GatedPixelCNN` (used when ``prior == "pixelcnn"``).
        transformer: further arguments of :class:`TransformerPrior` (used when ``prior == "transformer"``); with
            ``block_size`` > 1 a :class:`BlockTransformerPrior` over ``block_size^D`` blocks of codes is built instead
            (arguments ``block_size``, ``depth_layers`` and the shared transformer sizes), the choice for long code
            maps (``block_size`` 1 or absent: the plain transformer; ``depth_layers`` is then ignored).
        dcgan: further arguments of :class:`DCGANPrior` (used when ``prior == "dcgan"``), e.g. ``embedding_dim`` (the
            VQ-VAE's), ``noise_dim``, ``generator_channels``, ``discriminator_channels``, ``ema_decay``.

    Returns:
        the prior.
    """
    num_classes = int(num_classes) if num_classes else None
    options = {"pixelcnn": dict(pixelcnn or {}), "transformer": dict(transformer or {}), "dcgan": dict(dcgan or {})}
    net = _build(prior, spatial_dims, num_embeddings, latent_shape, num_classes, options)
    #: how the prior was built, so a run can record it (``brainvq_monai.bundle.record_run_settings``)
    net.build_args = json_ready({"prior": prior, prior: options[prior]})
    return net


def _build(
    prior: str,
    spatial_dims: int,
    num_embeddings: int,
    latent_shape: Sequence[int],
    num_classes: int | None,
    options: Mapping[str, dict[str, Any]],
) -> CodeMapPrior:
    if prior == "dcgan":
        from brainvq_monai.networks.nets.dcgan_prior import DCGANPrior

        args = dict(options["dcgan"])
        if "minibatch_std" in args:
            args["minibatch_std"] = as_bool(args["minibatch_std"], "dcgan#minibatch_std")
        return DCGANPrior(spatial_dims, num_embeddings, latent_shape, num_classes, **args)
    if prior == "pixelcnn":
        from brainvq_monai.networks.nets.gated_pixelcnn import GatedPixelCNN

        return GatedPixelCNN(spatial_dims, num_embeddings, num_classes, **options["pixelcnn"])
    if prior == "transformer":
        args = dict(options["transformer"])
        if "use_checkpointing" in args:
            args["use_checkpointing"] = as_bool(args["use_checkpointing"], "activation_checkpointing")
        if int(args.get("block_size", 1)) > 1:
            from brainvq_monai.networks.nets.block_prior import BlockTransformerPrior

            if args.get("ordering_type", "raster_scan") == "raster_scan":  # the block prior's own (block) order
                args.pop("ordering_type", None)
            unsupported = sorted(k for k in args if k in _PLAIN_TRANSFORMER_ONLY)
            if unsupported:
                raise BrainVQInputError(
                    "transformer", f"{unsupported} are options of the plain transformer prior, not with block_size > 1"
                )
            return BlockTransformerPrior(spatial_dims, num_embeddings, latent_shape, num_classes, **args)
        from brainvq_monai.networks.nets.transformer_prior import TransformerPrior

        args.pop("block_size", None)
        args.pop("depth_layers", None)
        return TransformerPrior(spatial_dims, num_embeddings, latent_shape, num_classes, **args)
    raise BrainVQInputError("prior", f"must be one of {', '.join(PRIORS)}, got {prior!r}")
