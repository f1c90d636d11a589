"""Benchmark sections behind ``brainvq benchmark`` (sampling, training, data pipeline, 3D scale).

Each section module (:mod:`.sampling`, :mod:`.training`, :mod:`.pipeline`, :mod:`.scale3d`) exposes
``run(device, quick, tiny, seed) -> rows`` and ``format_rows(rows) -> str``; :mod:`.report` runs them into one report.
"""

from .report import SECTIONS, data_feed, failed_checks, format_report, run_benchmark
from .timing import make_row, measure_memory, saved_activation_bytes, sync, time_fn

__all__ = [
    "SECTIONS",
    "data_feed",
    "failed_checks",
    "format_report",
    "make_row",
    "measure_memory",
    "run_benchmark",
    "saved_activation_bytes",
    "sync",
    "time_fn",
]
