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
from .decoding import (
    ArgmaxToken,
    FullForwardDecoder,
    KeepUnlessUnlikely,
    SampleToken,
    TokenChoice,
    WalkResult,
    draw_tokens,
    walk_codes,
)
from .prior_inferer import AutoregressivePriorInferer
from .sampling import sample_codes, token_nll
from .vqvae_inferer import VQVAEInferer, VQVAEOutput

__all__ = [
    "ArgmaxToken",
    "AutoregressivePriorInferer",
    "FullForwardDecoder",
    "HealResult",
    "KeepUnlessUnlikely",
    "SampleToken",
    "TokenChoice",
    "VQVAEInferer",
    "VQVAEOutput",
    "WalkResult",
    "anomaly_map",
    "auroc",
    "brain_mask",
    "draw_tokens",
    "heal",
    "heal_codes",
    "likelihood_threshold",
    "masked_mean",
    "region_mask",
    "residual_map",
    "sample_codes",
    "token_nll",
    "upsample_map",
    "walk_codes",
]
