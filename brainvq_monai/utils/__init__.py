from .environment import cpu_bf16_units, device_info, versions
from .errors import BrainVQError, BrainVQInputError
from .tensors import as_generator, device_of, plain_tensor

__all__ = [
    "BrainVQError",
    "BrainVQInputError",
    "as_generator",
    "cpu_bf16_units",
    "device_info",
    "device_of",
    "plain_tensor",
    "versions",
]
