from .errors import BrainVQError, BrainVQInputError

__all__ = ["BrainVQError", "BrainVQInputError"]
