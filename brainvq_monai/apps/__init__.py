from .demo import DEMO_SETTINGS, run_bundle_config, run_demo

__all__ = ["DEMO_SETTINGS", "run_bundle_config", "run_demo"]
