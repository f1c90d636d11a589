from .codebook import CodebookHistogram, CodebookPerplexity, CodesUsed, histogram_perplexity
from .generation import (
    bootstrap_ci,
    brain_mask,
    classification_accuracy,
    cluster_bootstrap_ci,
    evaluate_generation,
    extract_features,
    format_generation_table,
    frechet_distance,
    kernel_inception_distance,
    masked_ssim_psnr,
    mean_pairwise_ms_ssim,
    nearest_neighbour_ssim,
    pairwise_ms_ssim,
    prdc,
    ssim_map,
)
from .nll import PriorNLL
from .ssim import MS_SSIM_WEIGHTS, multiscale_ssim_metric
from .two_sample import classifier_two_sample_test, roc_auc

__all__ = [
    "CodebookHistogram",
    "CodebookPerplexity",
    "CodesUsed",
    "histogram_perplexity",
    "PriorNLL",
    "bootstrap_ci",
    "brain_mask",
    "classification_accuracy",
    "classifier_two_sample_test",
    "cluster_bootstrap_ci",
    "evaluate_generation",
    "extract_features",
    "format_generation_table",
    "frechet_distance",
    "kernel_inception_distance",
    "masked_ssim_psnr",
    "mean_pairwise_ms_ssim",
    "nearest_neighbour_ssim",
    "pairwise_ms_ssim",
    "prdc",
    "roc_auc",
    "ssim_map",
    "MS_SSIM_WEIGHTS",
    "multiscale_ssim_metric",
]
