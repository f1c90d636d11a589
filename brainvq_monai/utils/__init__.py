from .environment import device_info, versions
from .errors import BrainVQError, BrainVQInputError
from .tensors import as_generator, device_of, plain_tensor

__all__ = [
    "BrainVQError",
    "BrainVQInputError",
    "as_generator",
    "device_info",
    "device_of",
    "plain_tensor",
    "versions",
]
