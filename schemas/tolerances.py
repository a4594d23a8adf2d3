"""Numeric tolerances shared by the transforms and the independent verification.

One declaration, so the code that merges circuits and the code that checks the result agree on
when two floats are "the same": ``FLOAT_RTOL`` is the relative tolerance, ``FLOAT_SIG_DIGITS``
the significant digits a float is rounded to where a key (not a comparison) is needed.
"""

from __future__ import annotations

import math

FLOAT_RTOL = 1e-9
"""Two floats a and b are equal when |a - b| <= FLOAT_RTOL * max(|a|, |b|) (or both NaN)."""

FLOAT_SIG_DIGITS = round(-math.log10(FLOAT_RTOL))
"""Significant digits of a float in a content key (9 for ``FLOAT_RTOL`` = 1e-9)."""
