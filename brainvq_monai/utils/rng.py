"""Capture and restore every random stream a training run draws from, for exact resumption.

A run draws from torch's CPU (and CUDA) generators (shuffling, dropout, codebook restarts), NumPy's and Python's
global generators, the ``RandomState`` of each MONAI randomizable transform of the training data pipeline
(augmentation in the main process) and private generators such as the on-device augmentation's
(:class:`~brainvq_monai.transforms.batch.RandBrainAugment`). The state is stored as tensors and plain data, so a
checkpoint holding it still loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "preserved_rng", "randomizable_objects", "restore_rng_state"]

_SCALARS = (torch.Tensor, np.ndarray, str, bytes, int, float, bool, type(None))


def _is_transform(obj: Any) -> bool:
    from monai.transforms import Randomizable, Transform

    return isinstance(obj, (Transform, Randomizable)) or type(obj).__module__.startswith("monai.transforms")


def randomizable_objects(root: Any, max_depth: int = 12) -> list[Any]:
    """The objects with a NumPy ``RandomState`` ``R`` (MONAI randomizable transforms) under a transform, in a fixed
    order (depth first through ``Compose.transforms``, lists, dicts and the attributes of transforms).

    Args:
        root: a transform (e.g. a dataset's ``transform``), a list of them, or ``None``.
        max_depth: how deep nested transforms are searched.

    Returns:
        the randomizable objects, each once.
    """
    found: list[Any] = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if obj is None or isinstance(obj, _SCALARS) or depth > max_depth or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(getattr(obj, "R", None), np.random.RandomState):
            found.append(obj)
        if isinstance(obj, (list, tuple)):
            children: Any = obj
        elif isinstance(obj, Mapping):
            children = obj.values()
        elif _is_transform(obj) and hasattr(obj, "__dict__"):
            children = [v for k, v in vars(obj).items() if k != "R"]
        else:
            return
        for child in children:
            visit(child, depth + 1)

    visit(root, 0)
    return found


def _numpy_state(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {
        "name": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _numpy_tuple(state: Mapping[str, Any]) -> tuple:
    keys = np.asarray(state["keys"].numpy(), dtype=np.uint32)
    return (state["name"], keys, int(state["pos"]), int(state["has_gauss"]), float(state["cached_gaussian"]))


def capture_rng_state(
    transform: Any = None, stateful: Mapping[str, Any] | None = None, cuda: bool | None = None
) -> dict[str, Any]:
    """The state of every random stream of a run.

    Args:
        transform: the training data pipeline (its randomizable transforms are included), or ``None``.
        stateful: further objects with ``state_dict()`` (e.g. the on-device augmentation), by name.
        cuda: include the CUDA generators (default: when CUDA is initialised).

    Returns:
        a dict of tensors and plain data.
    """
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized() if cuda is None else cuda
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(np.random.get_state()),
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "transforms": [_numpy_state(obj.R.get_state()) for obj in randomizable_objects(transform)],
        "stateful": {k: v.state_dict() for k, v in (stateful or {}).items() if hasattr(v, "state_dict")},
    }
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(
    state: Mapping[str, Any], transform: Any = None, stateful: Mapping[str, Any] | None = None
) -> None:
    """Restores what :func:`capture_rng_state` captured.

    Args:
        state: from :func:`capture_rng_state`.
        transform: the same data pipeline as when captured.
        stateful: the same objects as when captured.

    Raises:
        ValueError: the pipeline has another number of randomizable transforms than when captured.
    """
    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy_tuple(state["numpy"]))
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    objects = randomizable_objects(transform)
    saved = state.get("transforms", [])
    if len(objects) != len(saved):
        raise ValueError(f"{len(saved)} randomizable transforms when saved, {len(objects)} now")
    for obj, st in zip(objects, saved):
        obj.R.set_state(_numpy_tuple(st))
    for name, obj in (stateful or {}).items():
        if name in state.get("stateful", {}) and hasattr(obj, "load_state_dict"):
            obj.load_state_dict(state["stateful"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Leaves torch's CPU generator, NumPy's and Python's global generators as they were before the block.

    For work whose result is cached (encoding codes, training the perceptual network): a run that does it and a
    run that finds it cached then continue with the same random streams, so the training that follows does not
    depend on the cache. (MONAI's ``DataLoader`` with ``num_workers=0`` even re-seeds torch's generator when it is
    built.)
    """
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
