from .prior import AutoregressivePrior, IncrementalDecoder

__all__ = ["AutoregressivePrior", "IncrementalDecoder"]
