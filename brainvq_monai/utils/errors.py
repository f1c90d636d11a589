"""Errors with one-line, user-facing messages, and how every entry point reports them.

Every entry point (the ``brainvq`` command, ``python -m monai.bundle run`` with a bundle config of this project)
reports a failure as one line on stderr, ``brainvq: error: <file or setting>: <reason>``, and exits with

* 2 for bad input (:class:`BrainVQInputError`: a file, a setting, a datalist, a checkpoint),
* 1 for a run that failed for another reason (the line then names the exception and where it came from),
* ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM) for a training run stopped by a signal after saving its last
  checkpoint (:class:`BrainVQInterrupted`).

No traceback is printed unless the environment variable ``BRAINVQ_DEBUG`` is set (``BRAINVQ_DEBUG=1``).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import weakref
from collections.abc import Callable

__all__ = [
    "BrainVQError",
    "BrainVQInputError",
    "BrainVQInterrupted",
    "DEBUG_ENV",
    "debug_enabled",
    "error_line",
    "exit_code_for",
    "exit_now",
    "find_brainvq_error",
    "flush_before_exit",
    "quiet_library_tracebacks",
    "register_exit_flush",
    "report_error",
]

DEBUG_ENV = "BRAINVQ_DEBUG"

_exit_flushes: list[weakref.ref] = []


class BrainVQError(Exception):
    """Base class for errors the command line reports as a single line (no traceback)."""

    exit_code = 1


class BrainVQInputError(BrainVQError, ValueError):
    """Bad user input: names the offending file or setting and the reason, on one line.

    Args:
        where: the file path or setting name at fault.
        reason: why it is rejected (one short clause).
    """

    exit_code = 2

    def __init__(self, where: str | os.PathLike, reason: str) -> None:
        self.where = str(where)
        self.reason = " ".join(str(reason).split())  # always a single line
        super().__init__(f"{self.where}: {self.reason}")


class BrainVQInterrupted(BrainVQError):
    """A training run stopped by SIGINT or SIGTERM after its last checkpoint was written.

    Args:
        signum: the signal received.
        message: what was saved and how to continue (one line).
    """

    def __init__(self, signum: int, message: str) -> None:
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(" ".join(str(message).split()))


def debug_enabled() -> bool:
    """Whether ``BRAINVQ_DEBUG`` asks for tracebacks (any value but empty, ``0``, ``false``, ``no``, ``off``).

    Returns:
        ``True`` when tracebacks should be shown.
    """
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _chain(err: BaseException | None) -> list[BaseException]:
    seen: set[int] = set()
    out: list[BaseException] = []
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def find_brainvq_error(err: BaseException | None) -> BrainVQError | None:
    """The :class:`BrainVQError` behind ``err``, following ``__cause__``/``__context__`` (MONAI's ``Compose``, its
    config parser and Ignite re-raise errors wrapped in ``RuntimeError``).

    Args:
        err: the exception raised.

    Returns:
        the first ``BrainVQError`` in the chain, or ``None``.
    """
    return next((e for e in _chain(err) if isinstance(e, BrainVQError)), None)


def exit_code_for(err: BaseException) -> int:
    """The process exit status for an error that ended a run.

    Args:
        err: the exception.

    Returns:
        2 for bad input, ``128 + signal`` for an interrupted run, 130 for ``KeyboardInterrupt``, else 1.
    """
    cause = find_brainvq_error(err)
    if cause is not None:
        return int(cause.exit_code)
    if any(isinstance(e, KeyboardInterrupt) for e in _chain(err)):
        return 128 + int(signal.SIGINT)
    return 1


def error_line(err: BaseException) -> str:
    """One line describing ``err`` for the user (without the ``brainvq: error:`` prefix).

    Args:
        err: the exception.

    Returns:
        the :class:`BrainVQError` message when there is one in the chain; otherwise the innermost exception's type and
        first message line, with the MONAI config expression it came from when known, and how to see the traceback.
    """
    cause = find_brainvq_error(err)
    if cause is not None:
        return " ".join(str(cause).split())
    chain = _chain(err)
    if any(isinstance(e, KeyboardInterrupt) for e in chain):
        return "interrupted (Ctrl-C)"
    inner = chain[-1]
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    what = f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__
    where = ""
    for e in reversed(chain):  # the innermost config item of MONAI's parser that failed
        text = str(e)
        component = re.match(r"Failed to instantiate component '([^']+)' with keywords: ([^\n]*)", text)
        if component:
            where = f" (while instantiating {component[1]} with {component[2].replace(',', ', ')})"
            break
        if text.startswith("Failed to evaluate"):
            body = " ".join(text.split(":", 1)[1].split())
            where = f" (while evaluating {body[:120]}{'...' if len(body) > 120 else ''})"
            break
    return f"the run failed: {what[:300]}{where}; set {DEBUG_ENV}=1 for the traceback"


def register_exit_flush(flush: Callable[[], None]) -> None:
    """Registers a bound ``flush`` method (e.g. a TensorBoard writer's) to call before a failed run exits.

    Entry points end a failed run with ``os._exit`` (see :func:`flush_before_exit`), which skips the interpreter's
    clean-up; registered flushes keep what was logged so far. Only a weak reference is kept.

    Args:
        flush: a bound method.
    """
    _exit_flushes.append(weakref.WeakMethod(flush) if hasattr(flush, "__self__") else weakref.ref(flush))


def flush_before_exit() -> None:
    """Calls the registered flushes, flushes the logging handlers, stdout and stderr (errors are ignored)."""
    for ref in list(_exit_flushes):
        flush = ref()
        if flush is not None:
            try:
                flush()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass


_QUIET_LOGGERS = ("ignite", "monai", "brainvq_monai", "py.warnings")


def quiet_library_tracebacks() -> None:
    """Drops the tracebacks that MONAI's and Ignite's handlers log for an exception (``StatsHandler`` logs every
    error of an engine with ``logger.exception``), unless ``BRAINVQ_DEBUG`` is set: the error is then reported once,
    as one line, by the entry point. Other loggers are left alone. Installing it twice has no further effect.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "_brainvq_quiet", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = current(*args, **kwargs)
        if record.exc_info and record.name.startswith(_QUIET_LOGGERS) and not debug_enabled():
            record.exc_info = None
            record.exc_text = None
        return record

    factory._brainvq_quiet = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def report_error(err: BaseException, prog: str = "brainvq") -> int:
    """Prints ``err`` as one line on stderr (with the traceback before it when ``BRAINVQ_DEBUG`` is set).

    Args:
        err: the exception that ended the run.
        prog: the program name that starts the line.

    Returns:
        the exit status for it (:func:`exit_code_for`).
    """
    _end_progress_bars()
    if debug_enabled():
        import traceback

        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    print(f"{prog}: error: {error_line(err)}", file=sys.stderr, flush=True)
    return exit_code_for(err)


def _end_progress_bars() -> None:
    """Closes open tqdm bars (Ignite's ``ProgressBar``), so that the error starts a line of its own."""
    tqdm_module = sys.modules.get("tqdm.std")
    bars = list(getattr(getattr(tqdm_module, "tqdm", None), "_instances", None) or [])
    for bar in bars:
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - best effort
            pass
    try:  # a bar ends with a carriage return, not a newline: in a log file the error then needs its own line
        if bars and not sys.stderr.isatty():
            sys.stderr.write("\n")
    except (AttributeError, ValueError):
        pass


def exit_now(code: int) -> None:
    """Flushes (see :func:`flush_before_exit`) and ends the process with ``os._exit(code)``.

    A run that failed may leave threads behind (data loading, TensorBoard, CUDA); at a normal interpreter exit they
    can abort the process with "terminate called without an active exception" (status 134). ``os._exit`` ends it
    with ``code``.

    Args:
        code: the exit status.
    """
    flush_before_exit()
    os._exit(int(code))
