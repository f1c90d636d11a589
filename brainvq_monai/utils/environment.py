"""What a measurement ran on: device and package versions, recorded next to every figure."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

__all__ = ["cpu_bf16_units", "device_info", "versions"]

# oneDNN ISA names (ONEDNN_MAX_CPU_ISA) that still include bf16 instructions
_BF16_ISAS = (
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX10_2_512",
    "AVX10_2_512_AMX_2",
    "ALL",
    "DEFAULT",
)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_units() -> dict[str, Any]:
    """Whether this CPU has bf16 matrix/vector units that torch's CPU kernels (oneDNN) can use.

    bf16 autocast is several times faster than float32 on CPUs with AMX (Intel Sapphire Rapids and later) or
    AVX-512 BF16 (Intel Cooper Lake, AMD Zen 4 and later), and several times *slower* on CPUs without them, where
    it is emulated. ``ONEDNN_MAX_CPU_ISA`` set below the bf16 ISAs (e.g. ``AVX2``) switches them off for oneDNN,
    and counts as absent here.

    Returns:
        ``{"amx_bf16", "avx512_bf16", "onednn_max_cpu_isa", "usable"}``; ``usable`` is what callers should act on.
    """
    flags = _cpu_flags()
    amx, avx512 = "amx_bf16" in flags, "avx512_bf16" in flags
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    allowed = isa is None or isa.upper() in _BF16_ISAS
    return {"amx_bf16": amx, "avx512_bf16": avx512, "onednn_max_cpu_isa": isa, "usable": (amx or avx512) and allowed}


def device_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """The CPU (model, cores, torch threads) and, for CUDA, the GPU name.

    Args:
        device: the device the measurement ran on.

    Returns:
        a JSON-serialisable dict.
    """
    device = torch.device(device)
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16_units": cpu_bf16_units()["usable"],
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def versions(*extra: str) -> dict[str, str]:
    """Versions of Python, torch, MONAI, NumPy, brainvq_monai and of any ``extra`` importable packages.

    Args:
        extra: further package names (e.g. ``"matplotlib"``); missing ones are reported as ``"not installed"``.

    Returns:
        ``{name: version}``.
    """
    import importlib

    import monai
    import numpy

    import brainvq_monai

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "brainvq_monai": brainvq_monai.__version__,
    }
    for name in extra:
        try:
            out[name] = str(getattr(importlib.import_module(name), "__version__", "unknown"))
        except ImportError:
            out[name] = "not installed"
    return out
