"""The gap decomposition: why the reported training figure differs from validation.

At an epoch end four numbers describe one metric, and the three steps between them are the three
reasons the Keras FAQ gives in words for "training loss higher than testing loss":

    reported running mean ─(averaging lag)→ current model, train mode
        ─(train/eval-mode effect: dropout, batch-norm)→ current model, eval mode
        ─(generalisation gap)→ validation

The parts telescope, so they add up to ``validation - reported`` (exactly up to float rounding).
Without evaluation passes on the training data only the free version exists:
``reported → now estimate → validation``, where the first step *estimates* the averaging lag and
the second lumps the mode effect and the generalisation gap together.

Values measured on a sample carry a 95% interval:

* accuracy (a proportion): the Wilson score interval;
* losses and other metrics: a normal interval ``mean ± z * sd / sqrt(n)`` from the per-sample
  standard deviation.

Both take an optional ``population``: when the sample is a subset of a finite population (a
subset of the training data, drawn without replacement) the finite-population correction
``(N - n) / (N - 1)`` shrinks the interval, to zero width when the whole population is measured.
The interval is then one for the value of a pass over *all* the training data.

This module depends on the standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fitlens.core.numbers import format_interval, format_value, signed_value

#: two-sided 95% normal quantile.
Z95 = 1.959963984540054


def _fpc(n: float, population: float | None) -> float:
    """The variance factor ``(N - n) / (N - 1)`` for sampling without replacement (1 if none)."""
    if population is None or population <= 1:
        return 1.0
    return max(0.0, (population - n) / (population - 1))


def wilson_interval(
    p: float, n: float, *, z: float = Z95, population: float | None = None
) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p`` observed on ``n`` samples.

    Args:
        p: observed proportion in [0, 1] (e.g. accuracy).
        n: samples it was measured on (> 0).
        z: normal quantile (default: two-sided 95%).
        population: size of the finite population the ``n`` samples were drawn from without
            replacement, or None for an infinite one.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for ``n <= 0`` or a NaN ``p``; ``(p, p)`` when the whole
        population was measured.

    Example:
        >>> tuple(round(b, 4) for b in wilson_interval(0.9, 100))
        (0.8256, 0.9448)
    """
    if n <= 0 or math.isnan(p):
        return math.nan, math.nan
    fpc = _fpc(n, population)
    if fpc == 0.0:
        return p, p
    n_eff = n / fpc
    z2 = z * z
    centre = (p + z2 / (2 * n_eff)) / (1 + z2 / n_eff)
    half = z / (1 + z2 / n_eff) * math.sqrt(p * (1 - p) / n_eff + z2 / (4 * n_eff * n_eff))
    return max(0.0, centre - half), min(1.0, centre + half)


def normal_interval(
    mean: float, sd: float, n: float, *, z: float = Z95, population: float | None = None
) -> tuple[float, float]:
    """Normal interval ``mean ± z * sd / sqrt(n)`` (finite-population corrected if given).

    Args:
        mean: the sample mean. sd: the per-sample standard deviation (``ddof=1``). n: samples.
        z, population: as in `wilson_interval`.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``sd`` is NaN or ``n <= 0``.

    Example:
        >>> normal_interval(2.0, 1.0, 100, z=2.0)
        (1.8, 2.2)
    """
    if n <= 0 or math.isnan(sd) or math.isnan(mean):
        return math.nan, math.nan
    half = z * sd * math.sqrt(_fpc(n, population) / n)
    return mean - half, mean + half


@dataclass(frozen=True)
class Measured:
    """A value measured on ``n`` samples with its 95% interval ``[low, high]`` (NaN if unknown)."""

    value: float
    low: float = math.nan
    high: float = math.nan
    n: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


@dataclass(frozen=True)
class GapDecomposition:
    """One metric's chain from the reported epoch mean to validation, at one epoch end.

    Attributes:
        metric: the metric's name (``"loss"``, ``"accuracy"``, ...).
        reported: the epoch's running mean, what Keras shows.
        now: the now estimate at epoch end.
        now_low, now_high: its interval (``History``'s ``m_now_low``/``m_now_high``, at
            `fitlens.core.estimators.NOW_LEVEL`); NaN when unknown (files written before).
        now_note: why that interval is wide, in words (`NowEstimate.note`); None: it is not.
        train_mode: the current model on training data in train mode (None without train_eval).
        eval_mode: the current model on training data in eval mode (None without train_eval).
        validation: the current model on validation data in eval mode (None without it).
    """

    metric: str
    reported: float
    now: float
    train_mode: Measured | None = None
    eval_mode: Measured | None = None
    validation: Measured | None = None
    now_low: float = math.nan
    now_high: float = math.nan
    now_note: str | None = None

    @property
    def estimated(self) -> bool:
        """True for the free version (no passes over training data): reported → now → val."""
        return self.train_mode is None or self.eval_mode is None

    @property
    def averaging_lag(self) -> float:
        """Train-mode value minus reported mean; estimated as now minus mean without passes."""
        if self.train_mode is None:
            return self.now - self.reported
        return self.train_mode.value - self.reported

    @property
    def mode_effect(self) -> float:
        """Eval-mode minus train-mode value on the same training data (NaN when estimated)."""
        if self.train_mode is None or self.eval_mode is None:
            return math.nan
        return self.eval_mode.value - self.train_mode.value

    @property
    def generalisation(self) -> float:
        """Validation minus eval-mode training value (NaN when estimated or without validation)."""
        if self.eval_mode is None or self.validation is None:
            return math.nan
        return self.validation.value - self.eval_mode.value

    @property
    def rest(self) -> float:
        """Estimated version only: validation minus now (mode effect and generalisation)."""
        if self.validation is None:
            return math.nan
        return self.validation.value - self.now

    @property
    def total(self) -> float:
        """Validation minus reported mean: what the parts add up to (NaN without validation)."""
        if self.validation is None:
            return math.nan
        return self.validation.value - self.reported

    def parts(self) -> dict[str, float]:
        """The steps of the chain by name; they sum to `total` when validation ran."""
        if self.estimated:
            return {"averaging_lag": self.averaging_lag, "rest": self.rest}
        return {
            "averaging_lag": self.averaging_lag,
            "mode_effect": self.mode_effect,
            "generalisation": self.generalisation,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain data for `History.gaps` and JSON export."""
        out: dict[str, Any] = {
            "metric": self.metric,
            "estimated": self.estimated,
            "reported": self.reported,
            "now": self.now,
            "now_low": self.now_low,
            "now_high": self.now_high,
        }
        for key in ("train_mode", "eval_mode", "validation"):
            m = getattr(self, key)
            out[key] = None if m is None else m.to_dict()
        out.update(self.parts())
        out["total"] = self.total
        return out


def _with_interval(m: Measured) -> str:
    if math.isnan(m.low) or math.isnan(m.high) or m.low == m.high:
        return format_value(m.value)  # unknown, or exact (the whole population was measured)
    return f"{format_value(m.value)} [{format_value(m.low)}, {format_value(m.high)}]"


def format_gap_line(d: GapDecomposition) -> str:
    """The decomposition as one display line.

    Measured (with ``train_eval``)::

        gap accuracy: mean 0.8740 -> train mode 0.9210 [0.9050, 0.9350] (lag +0.0470)
        -> eval mode 0.9300 [0.9150, 0.9430] (dropout/BN +0.0090) -> val 0.9150 [0.8800,
        0.9400] (generalisation -0.0150)

    Estimated (free)::

        gap accuracy (estimated): mean 0.8740 -> now ~0.921 ±0.012 (lag ~+0.0470) -> val
        0.9150 [0.8800, 0.9400] (mode + generalisation ~-0.0060)

    (each printed on a single line). The now value's decimals follow its interval; a wide
    interval says why: ``now ~0.94 ±0.08 (uncertain: curve bending)``.
    """
    if d.estimated:
        value, band = format_interval(d.now, d.now_low, d.now_high)
        now = f"{value} {band}" if band else value
        if d.now_note:
            now += f" (uncertain: {d.now_note})"
        parts = [
            f"gap {d.metric} (estimated): mean {format_value(d.reported)}",
            f"now ~{now} (lag ~{signed_value(d.averaging_lag)})",
        ]
        if d.validation is not None:
            parts.append(
                f"val {_with_interval(d.validation)} (mode + generalisation ~{signed_value(d.rest)})"
            )
        return " -> ".join(parts)
    assert d.train_mode is not None and d.eval_mode is not None
    parts = [
        f"gap {d.metric}: mean {format_value(d.reported)}",
        f"train mode {_with_interval(d.train_mode)} (lag {signed_value(d.averaging_lag)})",
        f"eval mode {_with_interval(d.eval_mode)} (dropout/BN {signed_value(d.mode_effect)})",
    ]
    if d.validation is not None:
        parts.append(
            f"val {_with_interval(d.validation)} (generalisation {signed_value(d.generalisation)})"
        )
    return " -> ".join(parts)
