"""Parsers of setting values, whichever way they arrive (JSON config, Python, MONAI's command line).

MONAI's command line turns only ``True``/``False`` into booleans: ``--amp false`` reaches a config as the string
``"false"``, which Python finds true. Every boolean setting of this project therefore goes through :func:`as_bool`,
which accepts real booleans and ``true``/``false`` in any case, and refuses anything else with a one-line error that
names the setting.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from brainvq_monai.utils.errors import BrainVQInputError

__all__ = ["as_bool", "as_int", "json_ready"]


def as_bool(value: Any, name: str) -> bool:
    """A boolean setting: ``True``/``False`` or the strings ``"true"``/``"false"`` in any case.

    Args:
        value: the setting's value.
        name: the setting's config ID, for the error message.

    Returns:
        the boolean.

    Raises:
        BrainVQInputError: anything else (``"no"``, ``0``, ``None``, ``"flase"``, ...).
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BrainVQInputError(name, f"must be true or false, got {value!r}")


def as_int(value: Any, name: str, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """An integer setting (an ``int``, or a float or string holding a whole number), optionally bounded below.

    Args:
        value: the setting's value.
        name: the setting's config ID, for the error message.
        minimum: smallest accepted value.
        allow_none: accept ``None`` (returned as is).

    Returns:
        the integer (or ``None``).

    Raises:
        BrainVQInputError: not a whole number, or below ``minimum``.
    """
    if value is None and allow_none:
        return None
    number: int | None = None
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        number = int(value)
    elif isinstance(value, (float, np.floating)) and float(value).is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None:
        raise BrainVQInputError(name, f"must be a whole number{' or null' if allow_none else ''}, got {value!r}")
    if minimum is not None and number < minimum:
        raise BrainVQInputError(name, f"must be >= {minimum}, got {number}")
    return number


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON data: tuples become lists, numpy scalars and string enums plain Python values.

    Args:
        value: nested dicts, lists, tuples and scalars (e.g. a network's constructor arguments).

    Returns:
        the same data, ``json.dumps``-able; anything else becomes its ``str``.
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)
