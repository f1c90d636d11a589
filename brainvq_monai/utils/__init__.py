from .distributed import rank_and_world
from .environment import cpu_bf16_units, device_info, versions
from .errors import BrainVQError, BrainVQInputError, BrainVQInterrupted, debug_enabled, error_line, exit_code_for
from .io import atomic_torch_save, atomic_write, atomic_write_json, atomic_write_text, load_torch_file
from .settings import as_bool, as_int
from .tensors import as_generator, autocast, device_of, plain_tensor, to_channels_last

__all__ = [
    "BrainVQError",
    "BrainVQInputError",
    "BrainVQInterrupted",
    "as_bool",
    "as_generator",
    "as_int",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "autocast",
    "cpu_bf16_units",
    "debug_enabled",
    "device_info",
    "device_of",
    "error_line",
    "exit_code_for",
    "load_torch_file",
    "plain_tensor",
    "rank_and_world",
    "to_channels_last",
    "versions",
]
