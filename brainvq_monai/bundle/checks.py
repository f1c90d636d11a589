"""Settings and datalist checks that bundle configs run first, before any data is read or any network is built.

A bad setting then fails at once with one line naming the config ID and the reason, instead of deep inside
training (``--spatial_size "[30,30]"`` used to fail at the first step with "size of tensor a (28) must match ... (30)"
after 150 traceback lines, ``--batch_size 0`` inside the data loader, ``--amp false`` silently turned autocast on).
Each config's ``initialize`` starts with::

    "$brainvq_monai.bundle.check_settings(booleans={'amp': @amp, ...}, positive={'batch_size': @batch_size, ...}, ...)"
    "$brainvq_monai.bundle.check_datalist(@datalist_data, @datalist, splits=['training', 'validation'])"
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainvq_monai.utils.errors import BrainVQInputError
from brainvq_monai.utils.settings import as_bool, as_int

__all__ = ["check_datalist", "check_settings", "nearest_valid_sizes", "reconstructed_size"]

DATA_FORMATS = ("oasis", "adni", "nifti")
_SPLIT_NEEDS = {
    "training": "there is nothing to train on",
    "validation": "training validates every epoch to choose the best checkpoint, which is never written without it",
    "test": "the evaluation runs on it",
}


def _parameters(value: Any, config_id: str, length: int) -> list[tuple[int, ...]]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise BrainVQInputError(
            config_id, f"must be a list of [{'stride, kernel, dilation, padding'}...], got {value!r}"
        )
    out = []
    for entry in value:
        if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != length:
            raise BrainVQInputError(config_id, f"each entry must have {length} integers, got {entry!r}")
        out.append(tuple(int(as_int(v, config_id)) for v in entry))  # type: ignore[arg-type]
    return out


def reconstructed_size(
    size: int, downsample_parameters: Sequence[Sequence[int]], upsample_parameters: Sequence[Sequence[int]]
) -> int | None:
    """The size a VQ-VAE's decoder gives back for an input of ``size`` along one axis.

    Args:
        size: input size along the axis.
        downsample_parameters: ``(stride, kernel, dilation, padding)`` per encoder level.
        upsample_parameters: ``(stride, kernel, dilation, padding, output_padding)`` per decoder level.

    Returns:
        the reconstruction's size, or ``None`` when the code map would be empty.
    """
    s = int(size)
    for stride, kernel, dilation, padding in downsample_parameters:
        s = (s + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
        if s < 1:
            return None
    for stride, kernel, dilation, padding, output_padding in upsample_parameters:
        s = (s - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    return s


def nearest_valid_sizes(
    size: int, downsample_parameters: Sequence[Sequence[int]], upsample_parameters: Sequence[Sequence[int]]
) -> list[int]:
    """The valid sizes (reconstructed unchanged) nearest to ``size``: the largest below and the smallest above.

    Args:
        size: the requested size.
        downsample_parameters: see :func:`reconstructed_size`.
        upsample_parameters: see :func:`reconstructed_size`.

    Returns:
        up to two sizes, ascending.
    """
    below = next(
        (
            n
            for n in range(int(size) - 1, 0, -1)
            if reconstructed_size(n, downsample_parameters, upsample_parameters) == n
        ),
        None,
    )
    above = next(
        (
            n
            for n in range(int(size) + 1, 4 * int(size) + 64)
            if reconstructed_size(n, downsample_parameters, upsample_parameters) == n
        ),
        None,
    )
    return [n for n in (below, above) if n is not None]


def _check_spatial_size(
    spatial_size: Any, spatial_dims: int | None, downsample_parameters: Any, upsample_parameters: Any, network_id: str
) -> None:
    if not isinstance(spatial_size, Sequence) or isinstance(spatial_size, str):
        raise BrainVQInputError("spatial_size", f"must be a list of integers, got {spatial_size!r}")
    sizes = [as_int(s, "spatial_size", minimum=1) for s in spatial_size]
    if spatial_dims is not None and len(sizes) != int(spatial_dims):
        raise BrainVQInputError(
            "spatial_size", f"must have {spatial_dims} sizes for this {spatial_dims}D bundle, got {list(spatial_size)}"
        )
    if downsample_parameters is None or upsample_parameters is None:
        return
    down = _parameters(downsample_parameters, f"{network_id}#downsample_parameters", 4)
    up = _parameters(upsample_parameters, f"{network_id}#upsample_parameters", 5)
    factor = 1
    for stride, *_ in down:
        factor *= stride
    for size in sizes:
        if reconstructed_size(size, down, up) != size:  # type: ignore[arg-type]
            near = " or ".join(str(n) for n in nearest_valid_sizes(size, down, up))  # type: ignore[arg-type]
            raise BrainVQInputError(
                "spatial_size",
                f"{list(spatial_size)}: {size} does not pass the VQ-VAE's {len(down)} downsamplings of {network_id} "
                f"(total stride {factor}) and back unchanged; nearest valid sizes: {near}",
            )


def _class_names(value: Any) -> dict[int, str]:
    """``class_names`` as ``{id: name}``; ids must number the classes 0..n-1."""
    if not isinstance(value, Mapping):
        raise BrainVQInputError("class_names", f'must map class ids to names, e.g. {{"0": "NC"}}, got {value!r}')
    try:
        names = {int(k): str(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise BrainVQInputError("class_names", f"keys must be class ids 0, 1, ..., got {list(value)}") from None
    if sorted(names) != list(range(len(names))):
        raise BrainVQInputError("class_names", f"must number the classes 0..{len(names) - 1}, got {sorted(names)}")
    return names


def check_settings(
    booleans: Mapping[str, Any] | None = None,
    positive: Mapping[str, Any] | None = None,
    non_negative: Mapping[str, Any] | None = None,
    spatial_size: Sequence[int] | None = None,
    spatial_dims: int | None = None,
    downsample_parameters: Sequence[Sequence[int]] | None = None,
    upsample_parameters: Sequence[Sequence[int]] | None = None,
    network_id: str = "network_def",
    data_format: str | None = None,
    dataset_dir: str | os.PathLike | None = None,
    output_dirs: Mapping[str, Any] | None = None,
    class_names: Any = None,
) -> bool:
    """Checks a bundle config's settings; the first problem is a one-line error naming its config ID.

    Args:
        booleans: ``{config_id: value}`` of boolean settings: ``true``/``false`` (any case, also as strings).
        positive: ``{config_id: value}`` of whole numbers >= 1 (``batch_size``, ``train#trainer#max_epochs``, ...).
        non_negative: ``{config_id: value}`` of whole numbers >= 0, or null (``num_workers``, ...).
        spatial_size: the image size; each size must pass the VQ-VAE's downsamplings and upsamplings unchanged (the
            error names the nearest valid sizes).
        spatial_dims: the bundle's number of spatial dimensions.
        downsample_parameters: the VQ-VAE's ``downsample_parameters``.
        upsample_parameters: the VQ-VAE's ``upsample_parameters``.
        network_id: the config ID of the VQ-VAE definition, for the messages.
        data_format: ``"oasis"``, ``"adni"`` or ``"nifti"`` (the 3D bundle reads volumes: ``"nifti"``).
        dataset_dir: the data folder (only read).
        output_dirs: ``{config_id: folder}`` the run writes to; none may lie inside ``dataset_dir``.
        class_names: the ``class_names`` mapping ``{"0": name, "1": name, ...}`` (ids 0..n-1).

    Returns:
        ``True`` (so the config expression has a value).

    Raises:
        BrainVQInputError: the first bad setting.
    """
    for config_id, value in dict(booleans or {}).items():
        as_bool(value, config_id)
    for config_id, value in dict(positive or {}).items():
        as_int(value, config_id, minimum=1)
    for config_id, value in dict(non_negative or {}).items():
        as_int(value, config_id, minimum=0, allow_none=True)
    if data_format is not None:
        if data_format not in DATA_FORMATS:
            raise BrainVQInputError("data_format", f"must be one of {', '.join(DATA_FORMATS)}, got {data_format!r}")
        if spatial_dims is not None and int(spatial_dims) == 3 and data_format != "nifti":
            raise BrainVQInputError(
                "data_format", f"the 3D bundle trains on volumes: it must be 'nifti', got {data_format!r}"
            )
    if class_names is not None:
        _class_names(class_names)
    if spatial_size is not None:
        _check_spatial_size(spatial_size, spatial_dims, downsample_parameters, upsample_parameters, network_id)
    if dataset_dir is not None:
        data = Path(os.path.abspath(os.fspath(dataset_dir))).resolve()
        for config_id, folder in dict(output_dirs or {}).items():
            if folder is not None and Path(os.path.abspath(os.fspath(folder))).resolve().is_relative_to(data):
                raise BrainVQInputError(
                    config_id, f"{folder} is inside dataset_dir {dataset_dir}; the data folder is never written"
                )
    return True


def check_datalist(
    datalist: Mapping[str, Any],
    path: str | os.PathLike = "datalist",
    splits: Sequence[str] = (),
    conditional: bool | str | None = None,
    class_names: Mapping[str, str] | None = None,
) -> bool:
    """Checks a loaded datalist: the splits a config needs are non-empty lists of items with an ``image``, and the
    class labels agree with the ``labels`` mapping (and, for a conditional prior, every class has training items).

    Args:
        datalist: the datalist dict (``ensure_datalist``).
        path: the datalist file, named by the errors.
        splits: the splits the config reads (``training``, ``validation``, ``test``).
        conditional: the config's ``conditional`` (class-conditional prior), or ``None`` when it has none.
        class_names: the config's ``class_names``; a labelled datalist must have exactly these classes, and a
            conditional prior needs a labelled datalist.

    Returns:
        ``True``.

    Raises:
        BrainVQInputError: the first problem, naming the file, the split and the item.
    """
    if not isinstance(datalist, Mapping):
        raise BrainVQInputError(
            path,
            f"expected a JSON object with 'training', 'validation' and 'test' lists, got {type(datalist).__name__}",
        )
    for split in splits:
        items = datalist.get(split)
        if not isinstance(items, list):
            raise BrainVQInputError(path, f"has no '{split}' list")
        if not items:
            raise BrainVQInputError(
                path, f"the '{split}' split is empty, but {_SPLIT_NEEDS.get(split, 'the config reads it')}"
            )
    raw_labels = datalist.get("labels") or {}
    if not isinstance(raw_labels, Mapping):
        raise BrainVQInputError(path, f"'labels' must map class ids to names, got {raw_labels!r}")
    try:
        names = {int(k): str(v) for k, v in raw_labels.items()}
    except (TypeError, ValueError):
        raise BrainVQInputError(path, f"'labels' keys must be class ids 0, 1, ..., got {list(raw_labels)}") from None
    if names and sorted(names) != list(range(len(names))):
        raise BrainVQInputError(path, f"'labels' must number the classes 0..{len(names) - 1}, got {sorted(names)}")
    counts = dict.fromkeys(names, 0)
    for split in ("training", "validation", "test"):
        for i, item in enumerate(datalist.get(split) or []):
            if not isinstance(item, Mapping) or "image" not in item:
                raise BrainVQInputError(
                    path, f"'{split}' item {i} is not an object with an 'image' path: {item!r}"[:300]
                )
            label = item.get("label")
            if names and label is not None:
                if not isinstance(label, int) or isinstance(label, bool) or label not in names:
                    raise BrainVQInputError(
                        path,
                        f"'{split}' item {i} ({item['image']}) has label {label!r}, but 'labels' lists "
                        f"{len(names)} classes {names}",
                    )
                if split == "training":
                    counts[label] += 1
    is_conditional = conditional is not None and as_bool(conditional, "conditional")
    if class_names is not None and names and names != _class_names(class_names):
        raise BrainVQInputError(
            path,
            f"its class labels {names} differ from the config's class_names {_class_names(class_names)}; "
            "set --class_names to the datalist's labels",
        )
    if is_conditional and class_names and not names:
        raise BrainVQInputError(
            path,
            f"has no class labels, but the prior is conditional on class_names {dict(class_names)}; "
            "set --conditional false for unlabelled data (e.g. OASIS)",
        )
    if is_conditional and names:
        empty = [f"{k} ({names[k]})" for k, n in counts.items() if n == 0]
        if empty:
            raise BrainVQInputError(
                path,
                f"class {', '.join(empty)} has no training items, so a conditional prior cannot learn it; "
                "fix the datalist or set conditional false",
            )
    return True
