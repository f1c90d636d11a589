from .evaluators import AnomalyEvaluator, PriorEvaluator, SamplingEvaluator, VQVAEEvaluator
from .feature_trainer import FeatureNetTrainer, train_feature_net
from .prior_trainer import PriorTrainer, check_code_dataset
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
