from .anomaly import run_anomaly
from .compare import run_compare
from .demo import DEMO_SETTINGS, run_bundle_config, run_demo
from .generation_eval import run_generation_eval
from .report import make_report
from .run_loader import RunArtifacts, load_run

__all__ = [
    "DEMO_SETTINGS",
    "RunArtifacts",
    "load_run",
    "make_report",
    "run_anomaly",
    "run_bundle_config",
    "run_compare",
    "run_demo",
    "run_generation_eval",
]
