"""Atomic file writes and safe checkpoint reads.

Every file the toolkit writes for a later step to read (checkpoints, cached codes and their key, datalists, metrics,
run configs, summaries) goes through :func:`atomic_write` and its wrappers: the content is written to a temporary
file in the destination's folder (``.<name>.<pid>.tmp``), flushed and synced to disk, then renamed over the
destination with ``os.replace`` (atomic on POSIX and Windows), and the folder entry is synced. A reader therefore sees
either the previous complete file or the new complete file, never a partial one, whatever kills the writer (``kill
-9``, power loss after the sync). Temporary files left by a killed writer are removed by the next write of the same
destination.

Checkpoints are read with :func:`load_torch_file`: ``torch.load(..., weights_only=True)`` only, and a file that does
not load is a one-line :class:`~brainvq_monai.utils.errors.BrainVQInputError` naming it and saying why (empty,
truncated, not a PyTorch file, holding objects other than tensors and plain data).
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.faults import fault_point

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_torch_save",
    "load_torch_file",
    "remove_stale_temp_files",
    "temp_files",
]

_TMP_SUFFIX = ".tmp"


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")


def temp_files(path: str | os.PathLike) -> list[Path]:
    """Temporary files of :func:`atomic_write` for the destination ``path`` (of any writer process).

    Args:
        path: the destination file.

    Returns:
        the temporary files present in its folder.
    """
    path = Path(os.fspath(path))
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.*{_TMP_SUFFIX}"))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temp_files(path: str | os.PathLike) -> None:
    """Removes the temporary files that killed writers (no longer running) left for the destination ``path``.

    Args:
        path: the destination file.
    """
    path = Path(os.fspath(path))
    for tmp in temp_files(path):
        pid = tmp.name[len(path.name) + 2 : -len(_TMP_SUFFIX)]
        if pid.isdigit() and not _pid_alive(int(pid)):
            try:
                tmp.unlink()
            except OSError:
                pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened; the rename is durable enough there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Writes a file atomically: ``write(f)`` fills a temporary file in the same folder, which then replaces ``path``.

    Args:
        path: the destination; its parent folders are created.
        write: called with the temporary file opened in binary mode.

    Returns:
        the destination path.

    Raises:
        BrainVQInputError: the destination is a folder or cannot be written.
    """
    path = Path(os.path.abspath(os.fspath(path)))
    if path.is_dir():
        raise BrainVQInputError(path, "is a folder; expected a file path")
    tmp = _tmp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        fault_point("atomic_write_partial", path.name, before_kill=lambda: os.truncate(tmp, tmp.stat().st_size // 2))
        fault_point("atomic_write", path.name)
        os.replace(tmp, path)
    except BaseException as err:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(err, OSError):
            raise BrainVQInputError(path, f"cannot write: {err.strerror or err}") from err
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_write`).

    Args:
        path: the destination.
        data: the content.

    Returns:
        the destination path.
    """
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Writes ``text`` to ``path`` atomically (see :func:`atomic_write`).

    Args:
        path: the destination.
        text: the content.
        encoding: text encoding.

    Returns:
        the destination path.
    """
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 2, **kwargs: Any) -> Path:
    """Writes ``data`` as JSON (with a final newline) to ``path`` atomically (see :func:`atomic_write`).

    Args:
        path: the destination.
        data: a JSON-able object.
        indent: JSON indentation.
        kwargs: further ``json.dumps`` arguments (``sort_keys``, ``default``, ...).

    Returns:
        the destination path.
    """
    return atomic_write_text(path, json.dumps(data, indent=indent, **kwargs) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write`).

    Args:
        obj: what to save (tensors and plain data, so that ``weights_only`` loading reads it back).
        path: the destination.

    Returns:
        the destination path.
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_torch_file(
    path: str | os.PathLike, what: str = "checkpoint", map_location: str | torch.device | None = "cpu"
) -> Any:
    """``torch.load(path, weights_only=True)`` with a one-line error naming the file when it cannot be read.

    Args:
        path: the file.
        what: what the file should be, for the messages (``"checkpoint"``, ``"code file"``, ...).
        map_location: ``torch.load``'s ``map_location``.

    Returns:
        the loaded object.

    Raises:
        BrainVQInputError: missing, a folder, empty, truncated or damaged, not written by ``torch.save``, or holding
            objects that ``weights_only`` loading refuses (files are never unpickled in full: that could run code).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BrainVQInputError(path, f"{what} not found")
    if os.path.isdir(path):
        raise BrainVQInputError(path, f"is a folder, not a {what} file")
    size = os.path.getsize(path)
    if size == 0:
        raise BrainVQInputError(path, f"is empty (0 bytes): not a readable {what}")
    with open(path, "rb") as f:
        head = f.read(4)
    is_zip = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if is_zip and "Weights only load failed" in str(err):
            reason = (
                f"is not a readable {what}: it holds objects other than tensors and plain data, "
                "which are never loaded (weights_only loading; such objects could run code)"
            )
        else:
            reason = f"is not a readable {what}: not a file written by torch.save ({size} bytes)"
        raise BrainVQInputError(path, reason) from None
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, IndexError, TypeError, AttributeError) as err:
        if head.startswith(b"PK") and not is_zip:
            reason = f"is not a readable {what}: truncated or damaged ({size} bytes; the zip archive is incomplete)"
        elif is_zip:
            reason = f"is not a readable {what}: damaged ({type(err).__name__} while reading the archive)"
        else:
            reason = f"is not a readable {what}: not a file written by torch.save ({size} bytes)"
        raise BrainVQInputError(path, reason) from None
