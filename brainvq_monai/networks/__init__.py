from .layers import RobustEMAQuantizer, RobustVectorQuantizer, codebook_perplexity
from .nets import (
    PRIORS,
    AutoregressivePrior,
    BrainVQVAE,
    CodeMapPrior,
    DCGANPrior,
    GatedPixelCNN,
    IncrementalDecoder,
    ReconstructionWrapper,
    TransformerPrior,
    build_prior,
)

__all__ = [
    "PRIORS",
    "AutoregressivePrior",
    "BrainVQVAE",
    "CodeMapPrior",
    "DCGANPrior",
    "GatedPixelCNN",
    "IncrementalDecoder",
    "ReconstructionWrapper",
    "RobustEMAQuantizer",
    "RobustVectorQuantizer",
    "TransformerPrior",
    "build_prior",
    "codebook_perplexity",
]
