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


def _decimals(half: float) -> int:
    """Decimals that show a half-width ``half`` to the Particle Data Group's rule, 0 to 4:
    two significant digits when its leading digits are 100 to 354, else one."""
    if not 0 < half < math.inf:
        return 4
    exponent = math.floor(math.log10(half))
    digits = 2 if half / 10.0**exponent < 3.55 else 1
    return min(4, max(0, digits - 1 - exponent))


def format_interval(value: float, low: float, high: float) -> tuple[str, str]:
    """An estimate and its interval as text, the value's decimals following the interval
    (its half-width to one or two significant digits, `_decimals`; 4 decimals at most).

    Returns:
        ``(value, band)``: ``("0.941", "±0.012")``; ``("0.995", "[0.980, 1.000]")`` when the
        interval is lopsided (cut by the metric's range); ``("0.3050", "±?")`` while its width
        is unknown (infinite); ``(format_value(value), "")`` without an interval (NaN ends).
        Values below 1e-3 keep Keras's ``%.4e`` and the half-width two digits (``"±1.2e-04"``).

    Example:
        >>> format_interval(0.94123, 0.92923, 0.95323), format_interval(0.9412, 0.8912, 0.9912)
        (('0.941', '±0.012'), ('0.94', '±0.05'))
    """
    if math.isnan(value) or math.isnan(low) or math.isnan(high):
        return format_value(value), ""
    half = max(value - low, high - value)
    if not math.isfinite(half):
        return format_value(value), "±?"
    if 0 < abs(value) < 1e-3:
        return format_value(value), f"±{half:.1e}"
    d = _decimals(half)
    if abs((value - low) - (high - value)) <= max(0.1 * half, 0.5 * 10.0**-d):
        return f"{value:.{d}f}", f"±{half:.{d}f}"
    return f"{value:.{d}f}", f"[{low:.{d}f}, {high:.{d}f}]"


def signed_value(x: float) -> str:
    """`format_value` with a sign: lags, jumps, differences."""
    return format_value(x, signed=True)


__all__ = ["format_interval", "format_value", "signed_value"]
