"""What the benchmark runs on: bf16 units of the CPU (or GPU), torch's thread counts, and pinning them.

Ratios of a reference and ours are only comparable between machines when both ran with the same, known number of
threads: with more threads than free cores (a shared machine), small-tensor work such as MONAI's reference samplers
waits on the scheduler and gets many times slower, so a ratio measures the contention instead of the code. The
benchmark therefore pins torch's intra-op threads (:func:`pinned_threads`, default 1) and records them.

bf16 autocast on a CPU is fast only with bf16 units (AMX or AVX-512 BF16); elsewhere it is emulated, several times
slower than float32, and timing it wastes minutes. :func:`bf16_support` decides whether the bf16 rows run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from brainvq_monai.utils.environment import _BF16_ISAS as ONEDNN_BF16_ISAS  # one list of oneDNN's bf16 ISAs
from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["bf16_support", "cpu_flags", "cpu_model", "pinned_threads", "read_cpuinfo", "thread_info"]

CPUINFO = "/proc/cpuinfo"


def read_cpuinfo(path: str = CPUINFO) -> str:
    """The text of ``/proc/cpuinfo`` (empty where there is none, e.g. macOS).

    Args:
        path: the file.

    Returns:
        its text.
    """
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _first_field(cpuinfo: str, key: str) -> str | None:
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == key:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str) -> set[str]:
    """The CPU flags of the first processor listed in ``cpuinfo`` text.

    Args:
        cpuinfo: text of ``/proc/cpuinfo``.

    Returns:
        the flags (empty when none are listed).
    """
    return set((_first_field(cpuinfo, "flags") or "").split())


def cpu_model(cpuinfo: str) -> str | None:
    """The ``model name`` of the first processor listed in ``cpuinfo`` text (``None`` when absent).

    Args:
        cpuinfo: text of ``/proc/cpuinfo``.

    Returns:
        the model name.
    """
    return _first_field(cpuinfo, "model name")


def bf16_support(device: torch.device | str, cpuinfo: str | None = None) -> dict[str, Any]:
    """Whether bf16 rows are worth timing on ``device``, how that was decided, and why not.

    On CUDA: ``torch.cuda.is_bf16_supported()``. On a CPU: the ``amx_bf16`` / ``avx512_bf16`` flags of
    ``/proc/cpuinfo``, unless ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below its bf16 instruction sets.

    Args:
        device: the benchmark device.
        cpuinfo: ``/proc/cpuinfo`` text to decide from (default: this machine's).

    Returns:
        ``{"usable", "how", "reason", ...}``; on a CPU also ``amx_bf16``, ``avx512_bf16``, ``onednn_max_cpu_isa``
        and ``aten_cpu_capability``. ``reason`` is ``None`` when usable.
    """
    device = torch.device(device)
    if device.type == "cuda":
        usable = bool(torch.cuda.is_bf16_supported())
        reason = None if usable else "this GPU has no bf16 support (torch.cuda.is_bf16_supported() is False)"
        return {"usable": usable, "how": "torch.cuda.is_bf16_supported()", "reason": reason}
    flags = cpu_flags(read_cpuinfo() if cpuinfo is None else cpuinfo)
    amx, avx512 = "amx_bf16" in flags, "avx512_bf16" in flags
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    allowed = isa is None or isa.upper() in ONEDNN_BF16_ISAS
    reason = None
    if not (amx or avx512):
        reason = (
            "this CPU has no bf16 units (no amx_bf16 or avx512_bf16 flag in /proc/cpuinfo): bf16 autocast would be "
            "emulated, slower than float32, and take minutes to time"
        )
    elif not allowed:
        reason = f"ONEDNN_MAX_CPU_ISA={isa} switches oneDNN's bf16 kernels off"
    return {
        "usable": reason is None,
        "how": "/proc/cpuinfo flags amx_bf16 / avx512_bf16, and ONEDNN_MAX_CPU_ISA",
        "reason": reason,
        "amx_bf16": amx,
        "avx512_bf16": avx512,
        "onednn_max_cpu_isa": isa,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def thread_info() -> dict[str, int]:
    """torch's current thread counts.

    Returns:
        ``{"torch_threads": intra-op threads, "interop_threads": inter-op threads}``.
    """
    return {"torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}


@contextmanager
def pinned_threads(threads: int) -> Iterator[dict[str, int]]:
    """Runs the block with ``threads`` torch intra-op threads (``0``: torch's default), then restores the count.

    The inter-op pool is not changed (torch allows setting it once per process, before any parallel work, and the
    benchmark's eager-mode work does not use it); its size is recorded.

    Args:
        threads: intra-op threads, ``>= 0``.

    Yields:
        :func:`thread_info` inside the block, plus ``"requested": threads``.

    Raises:
        BrainVQInputError: for a negative ``threads``.
    """
    if threads < 0:
        raise BrainVQInputError("--threads", f"must be >= 0 (0: torch's default), got {threads}")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield {**thread_info(), "requested": threads}
    finally:
        torch.set_num_threads(before)
