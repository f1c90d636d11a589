"""The items of a sampling run: one request per image to draw (its class and its file name)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.settings import as_int

__all__ = ["UNCONDITIONAL", "sampling_requests"]

UNCONDITIONAL = -1
"""``class_label`` of a request to an unconditional prior (a batchable stand-in for ``None``)."""


def sampling_requests(
    num_samples: int,
    class_label: int | None = None,
    num_classes: int | None = None,
    class_names: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The dataset of the ``inference.json`` workflow: what to sample, one item per image.

    Args:
        num_samples: images per class (or in all, for an unconditional prior).
        class_label: the one class to sample; ``None``: every class in turn for a conditional prior.
        num_classes: the prior's number of classes (``None``/``0``: unconditional).
        class_names: ``{"0": "NC", "1": "AD"}``, used in the file names.

    Returns:
        ``[{"class_label": int, "name": "sample_<class>_<NNNN>"}, ...]`` (``class_label`` is :data:`UNCONDITIONAL`
        for an unconditional prior).

    Raises:
        BrainVQInputError: ``num_samples`` < 1, or a ``class_label`` the prior does not have.
    """
    num_samples = as_int(num_samples, "num_samples", minimum=1)
    num_classes = int(num_classes or 0)
    if class_label is not None:
        class_label = as_int(class_label, "class_label")
        if not num_classes:
            raise BrainVQInputError("class_label", "given, but the prior is unconditional (trained without labels)")
        if not 0 <= class_label < num_classes:
            raise BrainVQInputError("class_label", f"must lie in [0, {num_classes - 1}], got {class_label}")
    classes = [class_label] if class_label is not None else (list(range(num_classes)) or [UNCONDITIONAL])
    names = {int(k): str(v) for k, v in (class_names or {}).items()}
    items = []
    for c in classes:
        tag = "all" if c == UNCONDITIONAL else names.get(c, f"class{c}")
        items += [{"class_label": c, "name": f"sample_{tag}_{i:04d}"} for i in range(num_samples)]
    return items
