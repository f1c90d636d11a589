"""Settings of the head-to-head comparisons: MONAI's 2D VQ-VAE tutorial architecture and the run sizes."""

from __future__ import annotations

from typing import Any

__all__ = ["MODES", "TUTORIAL_LR", "TUTORIAL_VQVAE"]

# MONAI 2d_vqvae_tutorial settings (what MONAI's own tutorial trains); shared by both VQ-VAEs.
TUTORIAL_VQVAE: dict[str, Any] = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "num_res_layers": 2,
    "downsample_parameters": ((2, 4, 1, 1), (2, 4, 1, 1)),
    "upsample_parameters": ((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)),
    "channels": (256, 256),
    "num_res_channels": 256,
    "num_embeddings": 256,
    "embedding_dim": 32,
}
TUTORIAL_LR = 1e-4

# Run sizes. ``channels`` overrides the tutorial's (256, 256) (and num_res_channels) on both sides equally. The DCGAN
# prior's widths are chosen to match the transformer's parameter count (its generator, the network that samples); it
# trains with its own Adam settings (``dcgan_lr``, betas 0.5/0.999), one discriminator + one generator step per step.
MODES: dict[str, dict[str, Any]] = {
    "full": {
        "subjects": 40,
        "slices_per_subject": 20,
        "spatial_size": 128,
        "channels": 256,
        "num_embeddings": 256,
        "embedding_dim": 32,
        "vqvae_steps": 3000,
        "vqvae_batch_size": 16,
        "prior_steps": 3000,
        "prior_batch_size": 32,
        "prior_lr": 1e-3,
        "transformer": {"attn_layers_dim": 128, "attn_layers_depth": 6, "attn_layers_heads": 8},
        "pixelcnn": {"num_layers": 12, "kernel_size": 5},
        "dcgan": {"noise_dim": 128},
        "dcgan_lr": 2e-4,
        "prior_dropout": 0.1,
        "samples_per_class": 128,
        "feature_epochs": 30,
        "num_bootstrap": 50,
        "kid_subsets": 50,
        "max_pairs": 300,
    },
    "quick": {
        "subjects": 20,
        "slices_per_subject": 12,
        "spatial_size": 64,
        "channels": 32,
        "num_embeddings": 256,
        "embedding_dim": 32,
        "vqvae_steps": 300,
        "vqvae_batch_size": 16,
        "prior_steps": 200,
        "prior_batch_size": 16,
        "prior_lr": 1e-3,
        "transformer": {"attn_layers_dim": 64, "attn_layers_depth": 4, "attn_layers_heads": 4},
        "pixelcnn": {"num_layers": 8, "kernel_size": 5},
        "dcgan": {"noise_dim": 64},
        "dcgan_lr": 2e-4,
        "prior_dropout": 0.1,
        "samples_per_class": 32,
        "feature_epochs": 10,
        "num_bootstrap": 0,  # FID bootstraps cost seconds per replicate on a CPU (scipy sqrtm)
        "kid_subsets": 20,
        "max_pairs": 100,
    },
    "tiny": {  # the test suite's mode: seconds, not minutes; numbers mean nothing
        "subjects": 6,
        "slices_per_subject": 4,
        "spatial_size": 32,
        "channels": 8,
        "num_embeddings": 16,
        "embedding_dim": 8,
        "vqvae_steps": 3,
        "vqvae_batch_size": 8,
        "prior_steps": 3,
        "prior_batch_size": 8,
        "prior_lr": 1e-3,
        "transformer": {"attn_layers_dim": 16, "attn_layers_depth": 1, "attn_layers_heads": 2},
        "pixelcnn": {"num_layers": 2, "kernel_size": 3},
        "dcgan": {"noise_dim": 8},
        "dcgan_lr": 2e-4,
        "prior_dropout": 0.0,
        "samples_per_class": 4,
        "feature_epochs": 1,
        "num_bootstrap": 0,
        "kid_subsets": 5,
        "max_pairs": 20,
    },
}
