"""The networks of the head-to-heads: two VQ-VAEs that differ only in the quantizer, two priors of matched size."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from brainvq_monai.apps.compare.settings import TUTORIAL_VQVAE

__all__ = ["build_priors", "build_vqvaes", "num_params", "sample_images", "vqvae_kwargs"]


def num_params(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``.

    Args:
        module: a network.

    Returns:
        the parameter count.
    """
    return int(sum(p.numel() for p in module.parameters()))


def vqvae_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """MONAI's tutorial VQ-VAE arguments with the mode's channels and codebook size.

    Args:
        cfg: a mode of :data:`~brainvq_monai.apps.compare.settings.MODES`.

    Returns:
        the arguments shared by both VQ-VAEs.
    """
    kwargs = dict(TUTORIAL_VQVAE)
    kwargs.update(
        channels=(cfg["channels"], cfg["channels"]),
        num_res_channels=cfg["channels"],
        num_embeddings=cfg["num_embeddings"],
        embedding_dim=cfg["embedding_dim"],
    )
    return kwargs


def build_vqvaes(cfg: Mapping[str, Any], seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """MONAI's VQVAE (tutorial settings) and BrainVQVAE with the same architecture and the same encoder/decoder init.

    Args:
        cfg: a mode of :data:`~brainvq_monai.apps.compare.settings.MODES`.
        seed: seed of the weights and of the k-means codebook initialisation.

    Returns:
        ``(ours, monai_net)``.
    """
    from monai.networks.nets import VQVAE

    from brainvq_monai.networks.nets.vqvae import BrainVQVAE

    kwargs = vqvae_kwargs(cfg)
    torch.manual_seed(seed)
    monai_net = VQVAE(**kwargs)  # MONAI defaults otherwise: decay 0.5, random normal codebook
    torch.manual_seed(seed)
    ours = BrainVQVAE(**kwargs, decay=0.99, init="kmeans", codebook_seed=seed)
    shared = {k: v for k, v in monai_net.state_dict().items() if not k.startswith("quantizer.")}
    missing = ours.load_state_dict(shared, strict=False)
    if missing.unexpected_keys or any(not k.startswith("quantizer.") for k in missing.missing_keys):
        raise RuntimeError(f"encoder/decoder weights do not line up: {missing}")
    return ours, monai_net


def build_priors(
    cfg: Mapping[str, Any], latent: Sequence[int], num_classes: int, seed: int
) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """The transformer from the mode's settings and, on 2D codes, the Gated PixelCNN whose width best matches its
    parameter count; on 3D codes (the PixelCNN is 2D only) the block transformer of the same sizes; and the DCGAN prior
    whose generator (the network that samples) best matches the transformer's parameter count.

    Args:
        cfg: a mode of :data:`~brainvq_monai.apps.compare.settings.MODES`.
        latent: the code map shape (2 or 3 sizes).
        num_classes: number of classes the priors are conditioned on.
        seed: seed of the weights.

    Returns:
        ``({"pixelcnn" or "block_transformer": ..., "transformer": ..., "dcgan": ...}, settings of each)``.
    """
    from brainvq_monai.networks.nets.gated_pixelcnn import GatedPixelCNN
    from brainvq_monai.networks.nets.transformer_prior import TransformerPrior

    k = cfg["num_embeddings"]
    dropout = cfg["prior_dropout"]
    dims = len(latent)
    torch.manual_seed(seed)
    transformer = TransformerPrior(
        dims,
        k,
        tuple(latent),
        num_classes,
        embedding_dropout_rate=dropout,
        ordering_type="raster_scan",
        **cfg["transformer"],
    )
    target = num_params(transformer)
    dcgan, dcgan_settings = _matched_dcgan(cfg, target, latent, num_classes, seed)
    if dims == 3:
        priors, settings = _transformer_pair(cfg, transformer, latent, num_classes, seed)
        return {**priors, "dcgan": dcgan}, {**settings, "dcgan": dcgan_settings}
    pcfg = dict(cfg["pixelcnn"])

    def pixelcnn(channels: int) -> GatedPixelCNN:
        return GatedPixelCNN(2, k, num_classes, channels=channels, dropout=dropout, **pcfg)

    best = min(range(4, 513, 2), key=lambda c: abs(num_params(pixelcnn(c)) - target))
    torch.manual_seed(seed)
    pcnn = pixelcnn(best)
    settings = {
        "transformer": {
            **cfg["transformer"],
            "embedding_dropout_rate": dropout,
            "ordering_type": "raster_scan",
            "use_checkpointing": False,
        },
        "pixelcnn": {**pcfg, "channels": best, "dropout": dropout, "width_chosen_to_match_transformer_params": True},
        "dcgan": dcgan_settings,
    }
    return {"pixelcnn": pcnn, "transformer": transformer, "dcgan": dcgan}, settings


def _matched_dcgan(
    cfg: Mapping[str, Any], target: int, latent: Sequence[int], num_classes: int, seed: int
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The DCGAN prior (generator ``4w, 2w, w``, discriminator ``w, 2w, 4w``) whose generator has about ``target``
    parameters."""
    from brainvq_monai.networks.nets.dcgan_prior import DCGANPrior

    def dcgan(width: int) -> DCGANPrior:
        return DCGANPrior(
            len(latent), cfg["num_embeddings"], tuple(latent), num_classes, embedding_dim=cfg["embedding_dim"],
            generator_channels=(4 * width, 2 * width, width), discriminator_channels=(width, 2 * width, 4 * width),
            **cfg["dcgan"],
        )  # fmt: skip

    best = min(range(2, 257, 2), key=lambda w: abs(num_params(dcgan(w).generator) - target))
    torch.manual_seed(seed)
    net = dcgan(best)
    settings = {
        **cfg["dcgan"],
        "generator_channels": [4 * best, 2 * best, best],
        "discriminator_channels": [best, 2 * best, 4 * best],
        "generator_params": num_params(net.generator),
        "discriminator_params": num_params(net.discriminator),
        "width_chosen_to_match_transformer_params": "generator",
    }
    return net, settings


def _transformer_pair(
    cfg: Mapping[str, Any], transformer: torch.nn.Module, latent: Sequence[int], num_classes: int, seed: int
) -> tuple[dict[str, torch.nn.Module], dict[str, Any]]:
    """3D codes: the plain transformer against the block transformer (2x2x2 blocks, one depth layer), same sizes."""
    from brainvq_monai.networks.nets.block_prior import BlockTransformerPrior

    dropout = cfg["prior_dropout"]
    torch.manual_seed(seed)
    block = BlockTransformerPrior(
        len(latent), cfg["num_embeddings"], tuple(latent), num_classes, block_size=2, depth_layers=1,
        embedding_dropout_rate=dropout, **cfg["transformer"],
    )  # fmt: skip
    common = {**cfg["transformer"], "embedding_dropout_rate": dropout}
    settings = {
        "transformer": {**common, "ordering_type": "raster_scan", "use_checkpointing": False},
        "block_transformer": {**common, "block_size": 2, "depth_layers": 1},
    }
    return {"block_transformer": block, "transformer": transformer}, settings


def sample_images(
    prior: torch.nn.Module,
    vqvae: torch.nn.Module,
    latent: Sequence[int],
    labels: torch.Tensor,
    seed: int,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Samples one image per entry of ``labels`` (autoregressive priors: the fast exact sampler; the DCGAN: one
    generator pass); times sampling and decoding.

    Args:
        prior: the trained prior.
        vqvae: the VQ-VAE whose codes it models.
        latent: the code map shape.
        labels: ``(M,)`` class of each sample.
        seed: seed of the sampling generator.
        device: the device of both networks.

    Returns:
        ``(images (M, 1, H, W) in [0, 1] on the CPU, codes (M, *latent) on the CPU, {"sampling_seconds",
        "decode_seconds", "num_samples"})``.
    """
    from brainvq_monai.inferers.prior_inferer import AutoregressivePriorInferer

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    inferer = AutoregressivePriorInferer()
    prior.eval()
    vqvae.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    sync()
    start = time.perf_counter()
    codes = inferer.sample_codes(prior, labels.shape[0], latent, class_labels=labels.to(device), generator=gen)
    sync()
    mid = time.perf_counter()
    with torch.no_grad():
        images = vqvae.decode_samples(codes.to(device)).float().clamp(0, 1)
    sync()
    end = time.perf_counter()
    timing = {"sampling_seconds": mid - start, "decode_seconds": end - mid, "num_samples": int(labels.shape[0])}
    return images.cpu(), codes.cpu(), timing
