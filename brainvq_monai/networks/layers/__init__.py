from .quantizer import RobustEMAQuantizer, RobustVectorQuantizer, codebook_perplexity

__all__ = ["RobustEMAQuantizer", "RobustVectorQuantizer", "codebook_perplexity"]
