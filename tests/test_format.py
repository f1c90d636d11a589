"""The one number formatter of tables (``brainvq_monai.utils.format.fmt``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brainvq_monai.utils.format import fmt


def test_fixed_style_is_the_default():
    assert fmt(0.123456) == "0.123" and fmt(21.456, 2) == "21.46" and fmt(0.0) == "0.000"
    assert fmt(2e-5) == "2.0e-05" and fmt(-2e-5, 4) == "-2.0e-05"  # small values do not print as zero
    assert fmt(np.float32(0.5)) == "0.500" and fmt(np.int64(7)) == "7" and fmt(12) == "12"
    assert fmt(None) == "-" and fmt(None, missing="n/a") == "n/a"
    assert fmt(math.nan) == "nan" and fmt(math.inf) == "inf"
    assert fmt(True) == "yes" and fmt(np.bool_(False)) == "no" and fmt("text") == "text"


def test_significant_style_and_format_specs():
    assert fmt(0.0328123, 4, style="significant") == "0.03281" and fmt(8.09612, 4, style="significant") == "8.096"
    assert fmt(12.0, 4, style="significant") == "12" and fmt(2.5e7, 4, style="significant") == "2.5e+07"
    assert fmt(1234.5, ",.1f") == "1,234.5" and fmt(3, "d") == "3" and fmt(0.25, ".2f") == "0.25"
    assert fmt(None, ".2f") == "-" and fmt(True, "") == "yes"
    with pytest.raises(ValueError, match="style"):
        fmt(1.0, style="roman")
