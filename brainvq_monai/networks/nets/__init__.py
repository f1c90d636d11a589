from .block_prior import BlockTransformerPrior
from .causal_transformer import CausalTransformer
from .dcgan_prior import CodeMapDiscriminator, CodeMapGenerator, DCGANPrior
from .factory import PRIORS, build_prior
from .feature_net import FEATURE_NET_VERSION, BrainFeatureNet
from .gated_pixelcnn import GatedPixelCNN
from .prior import AutoregressivePrior, CodeMapPrior, IncrementalDecoder, require_likelihood
from .transformer_prior import TransformerPrior
from .vqvae import BrainVQVAE, ReconstructionWrapper, codebook_embeddings

__all__ = [
    "BlockTransformerPrior",
    "FEATURE_NET_VERSION",
    "BrainFeatureNet",
    "PRIORS",
    "AutoregressivePrior",
    "BrainVQVAE",
    "CausalTransformer",
    "CodeMapDiscriminator",
    "CodeMapGenerator",
    "CodeMapPrior",
    "DCGANPrior",
    "GatedPixelCNN",
    "IncrementalDecoder",
    "ReconstructionWrapper",
    "TransformerPrior",
    "build_prior",
    "codebook_embeddings",
    "require_likelihood",
]
