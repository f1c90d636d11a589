"""Copying a bundle this package ships into a folder of the user's (``brainvq init-bundle``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["init_bundle"]

# run outputs a bundle folder of a checkout may hold (see .gitignore): never copied
_RUN_OUTPUT_DIRS = ("runs", "data")
_RUN_OUTPUT_SUFFIXES = (".pt", ".pth", ".ts")


def init_bundle(name: str, dest: str | os.PathLike) -> Path:
    """Copies the bundle ``name`` (configs, docs, metadata; no run outputs or weights) into a new or empty folder.

    Args:
        name: a bundle this package ships, e.g. ``brain_vqvae_2d``.
        dest: the destination: a new or empty folder outside the bundle (files there are never overwritten).

    Returns:
        the destination folder (absolute).

    Raises:
        BrainVQInputError: unknown bundle, or a destination that is a file, inside the bundle or not empty.
    """
    from brainvq_monai.bundle.utils import default_bundle_root

    source = Path(default_bundle_root(name))
    out = Path(os.path.abspath(os.fspath(dest)))
    if out.exists() and not out.is_dir():
        raise BrainVQInputError(out, "is a file; init-bundle needs a new or empty folder")
    if out.resolve().is_relative_to(source.resolve()):
        raise BrainVQInputError(out, f"is inside the bundle {source}; choose a folder outside it")
    if out.is_dir() and any(out.iterdir()):
        raise BrainVQInputError(
            out, "is not empty; init-bundle copies only into a new or empty folder (nothing copied)"
        )

    def skip(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == source
        return {
            n
            for n in names
            if n == "__pycache__" or (top and n in _RUN_OUTPUT_DIRS) or n.endswith(_RUN_OUTPUT_SUFFIXES)
        }

    shutil.copytree(source, out, ignore=skip, dirs_exist_ok=True)
    return out
