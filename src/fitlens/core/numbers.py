"""The one number formatter of every line fitlens prints (bar, epoch line, gap, forecast, check).

Keras's rule: ``%.4f``, or ``%.4e`` when ``0 < |x| < 1e-3`` so that a small value does not print
as ``0.0000``; ``nan``, ``inf`` and ``-inf`` as words. Signed differences (lags, jumps) add a
``+`` to non-negative values.
"""

from __future__ import annotations

import math


def format_value(x: float, signed: bool = False) -> str:
    """A metric value as Keras prints it, the same in every mode and every line.

    The same rule applies to negative values (Keras's verbose=1 and verbose=2 paths disagree
    on them; here one function serves every line).

    Example:
        >>> format_value(0.25), format_value(4e-5), format_value(-0.0125, signed=True)
        ('0.2500', '4.0000e-05', '-0.0125')
    """
    sign = "+" if signed else ""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return f"{sign}inf" if x > 0 else "-inf"
    return f"{x:{sign}.4e}" if 0 < abs(x) < 1e-3 else f"{x:{sign}.4f}"


def signed_value(x: float) -> str:
    """`format_value` with a sign: lags, jumps, differences."""
    return format_value(x, signed=True)


__all__ = ["format_value", "signed_value"]
