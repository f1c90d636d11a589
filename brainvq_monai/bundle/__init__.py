from .anomaly import save_anomaly_outputs
from .checks import check_datalist, check_settings
from .samples import generate_samples, reference_affine
from .utils import (
    BUNDLE_NAMES,
    as_bool,
    default_bundle_root,
    encode_codes,
    ensure_datalist,
    latent_shape_of,
    load_network,
    perceptual_network,
    training_prepare_batch,
)

__all__ = [
    "BUNDLE_NAMES",
    "as_bool",
    "check_datalist",
    "check_settings",
    "default_bundle_root",
    "encode_codes",
    "ensure_datalist",
    "generate_samples",
    "latent_shape_of",
    "load_network",
    "perceptual_network",
    "reference_affine",
    "save_anomaly_outputs",
    "training_prepare_batch",
]
