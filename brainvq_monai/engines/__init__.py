from .dcgan_trainer import DCGANTrainer
from .evaluators import AnomalyEvaluator, GeneratedCodesEvaluator, PriorEvaluator, SamplingEvaluator, VQVAEEvaluator
from .feature_trainer import FeatureNetTrainer, train_feature_net
from .prior_trainer import PriorTrainer, check_code_dataset
from .prior_workflow import (
    has_likelihood,
    key_metric_score,
    likelihood_note,
    prior_additional_metrics,
    prior_evaluator,
    prior_key_metric,
    prior_metric_cmp_fn,
    prior_trainer,
)
from .utils import (
    autocast,
    lower_is_better,
    output_losses,
    prepare_codes,
    prepare_images,
    to_channels_last,
    unwrap,
)
from .vqvae_trainer import VQVAETrainer

__all__ = [
    "AnomalyEvaluator",
    "DCGANTrainer",
    "GeneratedCodesEvaluator",
    "has_likelihood",
    "key_metric_score",
    "likelihood_note",
    "prior_additional_metrics",
    "prior_evaluator",
    "prior_key_metric",
    "prior_metric_cmp_fn",
    "prior_trainer",
    "FeatureNetTrainer",
    "train_feature_net",
    "PriorEvaluator",
    "PriorTrainer",
    "SamplingEvaluator",
    "check_code_dataset",
    "VQVAEEvaluator",
    "VQVAETrainer",
    "autocast",
    "lower_is_better",
    "output_losses",
    "prepare_codes",
    "prepare_images",
    "to_channels_last",
    "unwrap",
]
