"""Tiny settings of the bundle workflows: seconds per run on a CPU, for tests and the fault-injection campaign."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brainvq_monai.bundle.layout import AUTOENCODER_ID, PRIOR_ID

__all__ = ["TINY_DCGAN", "TINY_PIXELCNN", "TINY_PRIORS", "TINY_TRANSFORMER", "tiny_overrides"]

TINY_TRANSFORMER = {"attn_layers_dim": 16, "attn_layers_depth": 1, "attn_layers_heads": 2}
TINY_PIXELCNN = {"channels": 8, "num_layers": 2, "kernel_size": 3}
TINY_DCGAN = {
    "embedding_dim": "@embedding_dim",
    "noise_dim": 8,
    "generator_channels": [16, 8],
    "discriminator_channels": [8, 16],
}
TINY_PRIORS = {"transformer": TINY_TRANSFORMER, "pixelcnn": TINY_PIXELCNN, "dcgan": TINY_DCGAN}


def tiny_overrides(
    dims: int, workflow: str, root: Path, data: Path, prior: str = "transformer", epochs: int = 1
) -> dict[str, Any]:
    """Overrides that shrink a bundle workflow to a few seconds on CPU (32 px images or 16^3 volumes, 8-16 channels).

    The same IDs work for every workflow (``configs/common.json`` defines them); the workflow only adds its own
    (number of samples, previews).

    Args:
        dims: the bundle, 2 or 3.
        workflow: the workflow, e.g. ``"train_vqvae"`` (a ``.json`` suffix is ignored).
        root: the run folder (``bundle_root``; ``runs`` and ``models`` below it).
        data: ``dataset_dir`` (a demo cohort).
        prior: ``"transformer"``, ``"pixelcnn"`` or ``"dcgan"``.
        epochs: ``max_epochs`` of a training workflow.

    Returns:
        ``{config ID: value}``.
    """
    workflow = workflow.removesuffix(".json")
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
        "max_epochs": epochs,
        f"{PRIOR_ID}#{prior}": TINY_PRIORS[prior],
        **{f"{AUTOENCODER_ID}#{k}": v for k, v in arch.items()},
    }
    if dims == 3:
        over["pixdim"] = [8.0, 8.0, 8.0]
    if workflow == "train_prior":
        over["num_preview_samples"] = 2
    if workflow == "inference":
        over["num_samples"] = 2
    return over
