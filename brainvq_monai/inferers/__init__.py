from .anomaly import (
    HealResult,
    anomaly_map,
    auroc,
    brain_mask,
    heal,
    heal_codes,
    likelihood_threshold,
    masked_mean,
    region_mask,
    residual_map,
    upsample_map,
)
from .prior_inferer import AutoregressivePriorInferer, load_codes, save_codes
from .sampling import draw_tokens, sample_codes, token_nll
from .vqvae_inferer import VQVAEInferer, VQVAEOutput

__all__ = [
    "AutoregressivePriorInferer",
    "HealResult",
    "VQVAEInferer",
    "VQVAEOutput",
    "anomaly_map",
    "auroc",
    "brain_mask",
    "draw_tokens",
    "heal",
    "heal_codes",
    "likelihood_threshold",
    "load_codes",
    "masked_mean",
    "region_mask",
    "residual_map",
    "sample_codes",
    "save_codes",
    "token_nll",
    "upsample_map",
]
