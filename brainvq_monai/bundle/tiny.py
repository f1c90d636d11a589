"""Tiny settings of the bundle configs: seconds per run on a CPU, for tests and the fault-injection campaign."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["PRIOR_ID", "TINY_PIXELCNN", "TINY_TRANSFORMER", "VQVAE_ID", "tiny_overrides"]

TINY_TRANSFORMER = {"attn_layers_dim": 16, "attn_layers_depth": 1, "attn_layers_heads": 2}
TINY_PIXELCNN = {"channels": 8, "num_layers": 2, "kernel_size": 3}
# the VQ-VAE's config ID in each config, and the prior's
VQVAE_ID = {
    "train_vqvae.json": "network_def",
    "train_prior.json": "vqvae_def",
    "evaluate.json": "vqvae_def",
    "inference.json": "vqvae_def",
}
PRIOR_ID = {"train_prior.json": "network_def", "evaluate.json": "prior_def", "inference.json": "network_def"}


def tiny_overrides(
    dims: int, config: str, root: Path, data: Path, prior: str = "transformer", epochs: int = 1
) -> dict[str, Any]:
    """Overrides that shrink a bundle config to a few seconds on CPU (32 px images or 16^3 volumes, 8-16 channels).

    Args:
        dims: the bundle, 2 or 3.
        config: the config file name, e.g. ``"train_vqvae.json"``.
        root: the run folder (``bundle_root``; ``runs`` and ``models`` below it).
        data: ``dataset_dir`` (a demo cohort).
        prior: ``"transformer"`` or ``"pixelcnn"``.
        epochs: ``train#trainer#max_epochs`` of a training config.

    Returns:
        ``{config ID: value}``.
    """
    arch = (
        {"channels": [8, 16], "num_res_channels": [8, 16], "num_res_layers": 1}
        if dims == 2
        else {"channels": [8, 8, 16], "num_res_channels": [8, 8, 16], "num_res_layers": 1}
    )
    over: dict[str, Any] = {
        "bundle_root": str(root),
        "output_dir": str(Path(root) / "runs"),
        "ckpt_dir": str(Path(root) / "models"),
        "dataset_dir": str(data),
        "spatial_size": [32, 32] if dims == 2 else [16, 16, 16],
        "num_embeddings": 16,
        "embedding_dim": 8,
        "batch_size": 8 if dims == 2 else 2,
        "num_workers": 0,
        "prior": prior,
    }
    if dims == 3:
        over["pixdim"] = [8.0, 8.0, 8.0]
    over.update({f"{VQVAE_ID[config]}#{k}": v for k, v in arch.items()})
    if config in PRIOR_ID:
        over[f"{PRIOR_ID[config]}#{prior}"] = TINY_TRANSFORMER if prior == "transformer" else TINY_PIXELCNN
    if config.startswith("train"):
        over["train#trainer#max_epochs"] = epochs
    if config == "train_prior.json":
        over["num_preview_samples"] = 2
    if config == "inference.json":
        over["num_samples"] = 2
    return over
