"""Measurement primitives shared by every benchmark section: timers, peak GPU memory, saved-activation bytes.

A benchmark row is a plain JSON-able dict made by :func:`make_row`; every section returns a list of them, and
``brainvq benchmark`` collects the sections into one report with the device, versions and date.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = [
    "MemoryRecord",
    "make_row",
    "measure_memory",
    "saved_activation_bytes",
    "sync",
    "time_fn",
]


def sync(device: torch.device | str) -> None:
    """Waits for the device's queued work (CUDA); a no-op elsewhere.

    Args:
        device: the device measured.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device | str, repeats: int = 3, warmup: int = 1) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls, with device syncs around each.

    Args:
        fn: the work to time (no arguments).
        device: the device it runs on (synchronised before and after each call).
        repeats: number of timed calls (at least 1).
        warmup: number of untimed calls first (kernel selection, caches, compilation).

    Returns:
        ``(median seconds per call, result of the last call)``.
    """
    out = None
    for _ in range(max(0, warmup)):
        out = fn()
    sync(device)
    times = []
    for _ in range(max(1, repeats)):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


class MemoryRecord:
    """Filled in by :func:`measure_memory`: ``peak_bytes`` is the peak GPU allocation (``None`` off CUDA)."""

    peak_bytes: int | None = None

    @property
    def peak_gib(self) -> float | None:
        """The peak in GiB, or ``None`` when it was not measured."""
        return None if self.peak_bytes is None else self.peak_bytes / 2**30


@contextmanager
def measure_memory(device: torch.device | str) -> Iterator[MemoryRecord]:
    """Peak CUDA memory allocated by the torch caching allocator inside the ``with`` block.

    Args:
        device: the device measured; off CUDA nothing is measured and ``peak_bytes`` stays ``None``.

    Yields:
        a :class:`MemoryRecord`, filled in when the block exits.
    """
    device = torch.device(device)
    record = MemoryRecord()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield record
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            record.peak_bytes = int(torch.cuda.max_memory_allocated(device))


@contextmanager
def saved_activation_bytes() -> Iterator[dict[str, int]]:
    """Counts the bytes autograd saves for backward inside the ``with`` block (any device).

    This is the activation memory of a training step, the part that activation checkpointing and attention without
    an ``n x n`` matrix shrink; it is measurable on a CPU, where no peak-allocation counter exists. Tensors saved
    twice are counted twice (an upper bound); parameters saved for backward are included.

    Yields:
        a dict whose ``"bytes"`` entry grows as tensors are saved.
    """
    counter = {"bytes": 0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        counter["bytes"] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield counter


def make_row(
    section: str,
    case: str,
    config: dict[str, Any],
    results: dict[str, Any],
    reference: str | None = None,
    ours: str | None = None,
    check: dict[str, Any] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """One benchmark row (JSON-able).

    Args:
        section: section name (``"sampling"``, ``"training"``, ``"pipeline"``, ``"scale3d"``).
        case: case name, unique within the section.
        config: the sizes measured (model, input, batch, ...).
        results: the measured figures (seconds, rates, bytes, speedups); ``None`` for what was not measured.
        reference: what the case is compared against, if anything.
        ours: what is measured on our side.
        check: a correctness check ``{"kind": ..., "passed": bool, ...}``; a failed check fails the benchmark.
        note: one line of context (e.g. why a figure is missing).

    Returns:
        the row.
    """
    row: dict[str, Any] = {"section": section, "case": case, "config": config, "results": results}
    if reference is not None:
        row["reference"] = reference
    if ours is not None:
        row["ours"] = ours
    if check is not None:
        row["check"] = check
    if note is not None:
        row["note"] = note
    return row
