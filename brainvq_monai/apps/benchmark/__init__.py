"""Benchmark sections behind ``brainvq benchmark`` (sampling, training, data pipeline, 3D scale).

Each section module (:mod:`.sampling`, :mod:`.training`, :mod:`.pipeline`, :mod:`.scale3d`) exposes
``run(device, quick, tiny, seed, budget=None, bf16=None) -> rows`` and ``format_rows(rows) -> str``; :mod:`.report`
runs them into one report. :mod:`.timing` times reference and ours interleaved and computes spreads, :mod:`.budget`
plans sizes and repeats against each section's time budget and prints progress, :mod:`.hardware` pins torch's
threads and detects bf16 units.
"""

from .budget import Budget, choose_size, progress
from .hardware import bf16_support, pinned_threads, thread_info
from .report import SECTION_BUDGET_S, SECTIONS, data_feed, failed_checks, format_report, run_benchmark
from .timing import (
    make_row,
    measure_memory,
    paired,
    plan_repeats,
    saved_activation_bytes,
    spread,
    sync,
    time_fn,
    time_interleaved,
)

__all__ = [
    "SECTIONS",
    "SECTION_BUDGET_S",
    "Budget",
    "bf16_support",
    "choose_size",
    "data_feed",
    "failed_checks",
    "format_report",
    "make_row",
    "measure_memory",
    "paired",
    "pinned_threads",
    "plan_repeats",
    "progress",
    "run_benchmark",
    "saved_activation_bytes",
    "spread",
    "sync",
    "thread_info",
    "time_fn",
    "time_interleaved",
]
