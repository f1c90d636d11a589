from .nets import AutoregressivePrior, IncrementalDecoder

__all__ = ["AutoregressivePrior", "IncrementalDecoder"]
