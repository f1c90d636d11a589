"""Errors with one-line, user-facing messages."""

from __future__ import annotations

import os

__all__ = ["BrainVQError", "BrainVQInputError"]


class BrainVQError(Exception):
    """Base class for errors the command line reports as a single line (no traceback)."""


class BrainVQInputError(BrainVQError, ValueError):
    """Bad user input: names the offending file or setting and the reason, on one line.

    Args:
        where: the file path or setting name at fault.
        reason: why it is rejected (one short clause).
    """

    def __init__(self, where: str | os.PathLike, reason: str) -> None:
        self.where = str(where)
        self.reason = " ".join(str(reason).split())  # always a single line
        super().__init__(f"{self.where}: {self.reason}")
