from .codebook import CodebookHistogram, CodebookPerplexity, CodesUsed, histogram_perplexity
from .nll import PriorNLL
from .ssim import MS_SSIM_WEIGHTS, multiscale_ssim_metric

__all__ = [
    "CodebookHistogram",
    "CodebookPerplexity",
    "CodesUsed",
    "histogram_perplexity",
    "PriorNLL",
    "MS_SSIM_WEIGHTS",
    "multiscale_ssim_metric",
]
