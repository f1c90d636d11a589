from .errors import BrainVQError, BrainVQInputError
from .tensors import as_generator, device_of, plain_tensor

__all__ = ["BrainVQError", "BrainVQInputError", "as_generator", "device_of", "plain_tensor"]
