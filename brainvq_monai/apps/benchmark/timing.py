"""Measurement primitives shared by every benchmark section: timers, peak GPU memory, saved-activation bytes.

A comparison times the reference and ours **interleaved** (:func:`time_interleaved`: ref, ours, ref, ours, ...), so
that both sides see the same machine load, and reports the median and spread of each side and of the per-repeat
ratio (:func:`paired`). A benchmark row is a plain JSON-able dict made by :func:`make_row`; every section returns a
list of them, and ``brainvq benchmark`` collects the sections into one report with the device, versions and date.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "Interleaved",
    "MemoryRecord",
    "make_row",
    "measure_memory",
    "paired",
    "plan_repeats",
    "saved_activation_bytes",
    "spread",
    "sync",
    "time_fn",
    "time_interleaved",
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


def plan_repeats(per_repeat_s: float, available_s: float, max_repeats: int) -> int:
    """How many repeats of ``per_repeat_s`` seconds fit into ``available_s`` (at least 1, at most ``max_repeats``).

    Args:
        per_repeat_s: estimated seconds of one repeat (every interleaved call once).
        available_s: seconds left for the repeats.
        max_repeats: the most repeats wanted.

    Returns:
        the number of repeats to run.
    """
    if per_repeat_s <= 0 or math.isinf(available_s):
        return max(1, max_repeats)
    return max(1, min(max_repeats, math.floor(available_s / per_repeat_s)))


@dataclass
class Interleaved:
    """What :func:`time_interleaved` measured.

    Attributes:
        times: seconds of every timed call, per name, in call order.
        outputs: the last output of every call, per name.
        warmup_seconds: seconds of each name's warm-up calls (together).
        planned_repeats: the repeats that the warm-up (or the estimates) said would fit; the repeats that ran can
            differ when a repeat turned out slower or faster than estimated.
    """

    times: dict[str, list[float]]
    outputs: dict[str, Any] = field(default_factory=dict)
    warmup_seconds: dict[str, float] = field(default_factory=dict)
    planned_repeats: int = 0

    @property
    def repeats(self) -> int:
        """The repeats that ran."""
        return min((len(t) for t in self.times.values()), default=0)

    def short_note(self, wanted: int) -> str | None:
        """A note when fewer than ``wanted`` repeats ran (the time budget stopped them), else ``None``.

        Args:
            wanted: the repeats a size was chosen for.

        Returns:
            the note or ``None``.
        """
        if self.repeats >= wanted:
            return None
        return f"only {self.repeats} repeat(s): the next would have overrun the time budget"


def _timed_call(fn: Callable[[], Any], device: torch.device | str, clock: Callable[[], float]) -> tuple[float, Any]:
    sync(device)
    start = clock()
    out = fn()
    sync(device)
    return clock() - start, out


def time_interleaved(
    calls: Sequence[tuple[str, Callable[[], Any]]],
    device: torch.device | str,
    *,
    max_repeats: int = 3,
    available_s: float = math.inf,
    warmup: int | Mapping[str, int] = 1,
    estimates: Mapping[str, float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Interleaved:
    """Times ``calls`` interleaved (a, b, a, b, ...) with device syncs around each call, within ``available_s``.

    Every call first runs its warm-up calls (not in the results, but their seconds estimate a repeat, recorded as
    ``planned_repeats``). Then repeats run until ``max_repeats``, except that a repeat is not started when the
    previous one (or, before the first, the estimate) says it would overrun ``available_s``; at least one repeat
    always runs.

    Args:
        calls: ``(name, fn)`` pairs, timed in this order within each repeat; names must be unique.
        device: the device the calls run on.
        max_repeats: the most repeats.
        available_s: seconds for warm-ups and repeats together.
        warmup: untimed calls first, for every name or per name (missing names: 1).
        estimates: seconds of one call per name, used to plan where a name has no warm-up call.
        clock: the clock (a fake one in tests).

    Returns:
        the :class:`Interleaved` record.

    Raises:
        ValueError: for duplicate names or no calls.
    """
    names = [name for name, _ in calls]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"calls need unique names, got {names}")
    start = clock()
    record = Interleaved(times={name: [] for name in names})
    per_call: dict[str, float] = dict(estimates or {})
    for name, fn in calls:
        count = warmup if isinstance(warmup, int) else warmup.get(name, 1)
        for _ in range(max(0, count)):
            seconds, record.outputs[name] = _timed_call(fn, device, clock)
            record.warmup_seconds[name] = record.warmup_seconds.get(name, 0.0) + seconds
            per_call[name] = seconds
    per_repeat = sum(per_call.get(name, 0.0) for name in names)  # 0: unknown until the first repeat has run
    record.planned_repeats = plan_repeats(per_repeat, available_s - (clock() - start), max_repeats)
    while record.repeats < max(1, max_repeats):
        if record.repeats and clock() - start + per_repeat > available_s:
            break
        repeat_start = clock()
        for name, fn in calls:
            seconds, record.outputs[name] = _timed_call(fn, device, clock)
            record.times[name].append(seconds)
        per_repeat = clock() - repeat_start
    return record


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (NumPy's default method)."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles, min and max of ``values`` (the spread over repeats), with the values themselves.

    Args:
        values: one figure per repeat (at least one).

    Returns:
        ``{"median", "q1", "q3", "min", "max", "n", "values"}``.

    Raises:
        ValueError: for no values.
    """
    if not values:
        raise ValueError("spread of no values")
    ordered = sorted(float(v) for v in values)
    return {
        "median": statistics.median(ordered),
        "q1": _quantile(ordered, 0.25),
        "q3": _quantile(ordered, 0.75),
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
        "values": [float(v) for v in values],
    }


def paired(reference: Sequence[float], ours: Sequence[float]) -> dict[str, Any]:
    """Medians and spreads of interleaved reference and ours seconds, and of their per-repeat ratio.

    Repeat ``i`` of each side ran back to back, so ``reference[i] / ours[i]`` is a speedup measured under one
    machine load; its median is the reported speedup.

    Args:
        reference: seconds of the reference, one per repeat.
        ours: seconds of ours, one per repeat (same length).

    Returns:
        ``{"seconds_reference", "seconds_ours", "speedup", "repeats", "spread": {those three: spread}}``.

    Raises:
        ValueError: for unequal lengths or no repeats.
    """
    if len(reference) != len(ours) or not reference:
        raise ValueError(f"need equal, non-zero repeats, got {len(reference)} and {len(ours)}")
    ratios = [r / o for r, o in zip(reference, ours)]
    sides = {"seconds_reference": spread(reference), "seconds_ours": spread(ours), "speedup": spread(ratios)}
    out: dict[str, Any] = {name: s["median"] for name, s in sides.items()}
    out.update(repeats=len(ratios), spread=sides)
    return out


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
