from .anomaly import save_anomaly_outputs
from .checks import check_datalist, check_settings
from .export import export_bundle
from .run import record_run_settings, run_parser
from .samples import centred_affine, reference_affine
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
    training_state,
)

__all__ = [
    "BUNDLE_NAMES",
    "as_bool",
    "check_datalist",
    "check_settings",
    "centred_affine",
    "default_bundle_root",
    "encode_codes",
    "export_bundle",
    "ensure_datalist",
    "latent_shape_of",
    "load_network",
    "perceptual_network",
    "record_run_settings",
    "run_parser",
    "reference_affine",
    "save_anomaly_outputs",
    "training_prepare_batch",
    "training_state",
]
