"""Time budget of a benchmark section, size planning against it, and the progress lines on stderr.

Every section runs under a :class:`Budget` (``brainvq benchmark --section-budget-s``). A case plans its work before
it runs it: it estimates the cost of each size from a short probe (a few forward passes, one reference step), picks
the largest size of its ladder that fits its share of the budget (:func:`choose_size`), then lets
:func:`~brainvq_monai.apps.benchmark.timing.time_interleaved` fit the repeats into what is left. No reference call
runs at a size whose estimate exceeds the budget, unless it is already the smallest size of the ladder.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["Budget", "SizeChoice", "choose_size", "headline", "progress"]

T = TypeVar("T")


def progress(message: str) -> None:
    """Prints one progress line to stderr at once (``brainvq benchmark: <message>``).

    Args:
        message: the line, without the prefix.
    """
    print(f"brainvq benchmark: {message}", file=sys.stderr, flush=True)


def headline(row: dict[str, Any]) -> str:
    """The row's main figure for a progress line: its speedup (with the spread), else its time or rate.

    Args:
        row: a benchmark row.

    Returns:
        e.g. ``"speedup 10.9x (10.5-11.3 over 3 repeats)"``, ``"1.234 s/step"`` or ``"skipped"``.
    """
    r = row.get("results", {})
    spreads = r.get("spread", {})
    if r.get("speedup") is not None:
        text = f"speedup {r['speedup']:.2f}x"
        if "speedup" in spreads:
            s = spreads["speedup"]
            text += f" ({s['min']:.2f}-{s['max']:.2f} over {s['n']} repeats)"
        return text
    for key, unit in (("seconds_per_step", "s/step"), ("images_per_s", "img/s"), ("tokens_per_s", "tok/s")):
        if r.get(key) is not None:
            return f"{r[key]:,.3g} {unit}"
    if r.get("samples_per_s") is not None:
        return f"{r['samples_per_s']:,.1f} samples/s"
    if r.get("saved_activation_gib") is not None:
        return f"saved activations {r['saved_activation_gib']:.3f} GiB"
    if r.get("checkpoint_bytes") is not None:
        return f"checkpoint {r['checkpoint_bytes'] / 1e6:.1f} MB"
    return "skipped" if str(row.get("note", "")).startswith("skipped") else "not run (see its note)"


class Budget:
    """Wall-clock budget of one section; also writes the section's progress lines.

    Args:
        section: the section name (for the progress lines).
        seconds: the budget (``> 0``; ``math.inf`` for none).
        clock: the clock (a fake one in tests).
        quiet: print no progress lines.

    Raises:
        BrainVQInputError: for a budget that is not positive.
    """

    def __init__(
        self, section: str, seconds: float, clock: Callable[[], float] = time.perf_counter, quiet: bool = False
    ) -> None:
        if not seconds > 0:
            raise BrainVQInputError("--section-budget-s", f"must be > 0 seconds, got {seconds}")
        self.section = section
        self.seconds = float(seconds)
        self.clock = clock
        self.quiet = quiet
        self.start = clock()
        self._mark = self.start

    def elapsed(self) -> float:
        """Seconds since the section started."""
        return self.clock() - self.start

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.seconds - self.elapsed())

    def share(self, weight: float = 1.0, weights_left: float = 1.0) -> float:
        """This part's share of the seconds left: ``remaining * weight / weights_left``.

        Args:
            weight: this part's weight.
            weights_left: the weights of this part and of every part still to run.

        Returns:
            seconds.
        """
        return self.remaining() * weight / max(weight, weights_left)

    def log(self, message: str) -> None:
        """A progress line ``<section> [elapsed / budget]: <message>`` on stderr.

        Args:
            message: what happened.
        """
        if not self.quiet:
            limit = "" if math.isinf(self.seconds) else f"/{self.seconds:.0f}"
            progress(f"{self.section} [{self.elapsed():.0f}{limit} s]: {message}")

    def rows_done(self, rows: Sequence[dict[str, Any]]) -> None:
        """One progress line per finished row, with the seconds since the previous rows were done.

        Args:
            rows: the rows just finished.
        """
        now = self.clock()
        for row in rows:
            self.log(f"{row['case']} done in {now - self._mark:.1f} s: {headline(row)}")
        self._mark = now


@dataclass
class SizeChoice(Generic[T]):
    """The size :func:`choose_size` picked.

    Attributes:
        size: the chosen size.
        index: its position in the ladder (0: the planned size).
        estimate_s: its estimated cost.
        available_s: the seconds it had to fit into.
        fits: whether the estimate fits (``False`` only for the smallest size).
        rejected: ``(size, estimate)`` of every larger size that did not fit.
    """

    size: T
    index: int
    estimate_s: float
    available_s: float
    fits: bool
    rejected: list[tuple[T, float]]

    def note(self, describe: Callable[[T], str] = str) -> str | None:
        """One line saying why the size is smaller than planned (``None`` when the planned size ran).

        Args:
            describe: text of a size.

        Returns:
            the note or ``None``.
        """
        if self.index == 0 and self.fits:
            return None
        first, first_est = self.rejected[0] if self.rejected else (self.size, self.estimate_s)
        text = (
            f"reduced from {describe(first)} to {describe(self.size)} to fit the time budget "
            f"({describe(first)}: estimated {first_est:.1f} s > {self.available_s:.1f} s available)"
        )
        if not self.fits:
            text += f"; the smallest size, still estimated at {self.estimate_s:.1f} s"
        return text


def choose_size(ladder: Sequence[T], cost: Callable[[T], float], available_s: float) -> SizeChoice[T]:
    """The first (largest) size of ``ladder`` whose estimated cost fits ``available_s``, else the smallest.

    Args:
        ladder: sizes, largest (the planned size) first.
        cost: estimated seconds of the whole case at a size (may run a short probe; called largest first, and not
            for sizes after the chosen one).
        available_s: the seconds the case may take.

    Returns:
        the :class:`SizeChoice`.

    Raises:
        ValueError: for an empty ladder.
    """
    if not ladder:
        raise ValueError("empty size ladder")
    rejected: list[tuple[T, float]] = []
    for index, size in enumerate(ladder):
        estimate = float(cost(size))
        fits = estimate <= available_s
        if fits or index == len(ladder) - 1:
            return SizeChoice(size, index, estimate, available_s, fits, rejected)
        rejected.append((size, estimate))
    raise AssertionError("unreachable")  # pragma: no cover
