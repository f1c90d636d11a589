"""What a measurement ran on: device and package versions, recorded next to every figure."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

__all__ = ["device_info", "versions"]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            return names[0]
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
