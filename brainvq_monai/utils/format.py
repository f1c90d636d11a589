"""One number formatter for every table the package and its scripts print or write (Markdown and plain text)."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

__all__ = ["fmt"]

_STYLES = ("fixed", "significant")


def fmt(value: Any, digits: int | str = 3, *, style: str = "fixed", missing: str = "-") -> str:
    """A table cell for ``value``.

    ``None`` is ``missing``; booleans are ``yes`` / ``no``; integers are printed whole; non-finite floats as
    ``nan`` / ``inf``; text and other objects as ``str(value)``. Finite numbers follow ``digits`` and ``style``:

    * ``digits`` a format spec (a ``str`` such as ``".2f"`` or ``",.1f"``): ``format(value, digits)``;
    * ``style="fixed"``: ``digits`` decimals, and non-zero values below ``10 ** -digits`` in scientific notation
      (``1.2e-05``) so that they do not print as zero;
    * ``style="significant"``: ``digits`` significant digits, and floats holding an integer below ``1e6`` as that
      integer (``12.0`` -> ``12``).

    Args:
        value: the number (Python or NumPy scalar), ``None``, a boolean or text.
        digits: decimals (``fixed``), significant digits (``significant``), or a format spec.
        style: ``"fixed"`` or ``"significant"`` (ignored with a format spec).
        missing: the text of ``None``.

    Returns:
        the cell text.

    Raises:
        ValueError: for an unknown ``style``.
    """
    if style not in _STYLES:
        raise ValueError(f"style must be one of {_STYLES}, got {style!r}")
    if value is None:
        return missing
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if not isinstance(value, Real):
        return str(value)
    if isinstance(digits, str):
        return format(int(value) if isinstance(value, Integral) else float(value), digits)
    if isinstance(value, Integral):
        return str(int(value))
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if style == "significant":
        return str(int(round(v))) if v == round(v) and abs(v) < 1e6 else f"{v:.{digits}g}"
    return f"{v:.{digits}f}" if v == 0 or abs(v) >= 10 ** (-digits) else f"{v:.1e}"
