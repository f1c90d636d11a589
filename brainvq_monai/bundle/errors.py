"""One-line errors and clean exit codes for ``python -m monai.bundle run``.

Every bundle config of this project imports this module first (``"imports": ["$import brainvq_monai.bundle.errors",
...]``). Importing it installs

* a ``sys.excepthook`` that reports an uncaught error as one line on stderr, ``brainvq: error: <file or config ID>:
  <reason>``, and ends the process with ``os._exit``: status 2 for bad input, 1 for a failed run, ``128 + signal``
  for a training run stopped by SIGINT/SIGTERM after saving its last checkpoint (never 134, "terminate called
  without an active exception", which threads left behind could cause at a normal interpreter exit);
* a log filter that drops the tracebacks MONAI's and Ignite's handlers log for the same error.

``BRAINVQ_DEBUG=1`` prints the full traceback before the line. In an interactive Python session the hook leaves
errors to Python (it neither shortens them nor exits).
"""

from __future__ import annotations

import atexit
import signal
import sys
from types import TracebackType

from brainvq_monai.utils.errors import exit_now, quiet_library_tracebacks, report_error

__all__ = ["bundle_excepthook", "install_error_reporting"]


def bundle_excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """``sys.excepthook`` of bundle runs: one line on stderr, then ``os._exit`` with the error's exit status.

    Args:
        exc_type: the exception type.
        exc: the exception.
        tb: its traceback.
    """
    if hasattr(sys, "ps1") or sys.flags.interactive:
        sys.__excepthook__(exc_type, exc, tb)
        return
    if exc.__traceback__ is None:
        exc = exc.with_traceback(tb)
    exit_now(report_error(exc))


def _default_signals() -> None:
    """At interpreter exit, Ctrl-C or SIGTERM end the process at once, without a traceback from a clean-up callback."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (ValueError, OSError):  # not the main thread
            pass


def install_error_reporting() -> None:
    """Installs :func:`bundle_excepthook` and quiets library tracebacks (idempotent)."""
    quiet_library_tracebacks()
    if sys.excepthook is not bundle_excepthook:
        atexit.register(_default_signals)
    sys.excepthook = bundle_excepthook


install_error_reporting()
