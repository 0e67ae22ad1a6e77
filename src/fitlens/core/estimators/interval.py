"""The now estimate's interval and words: from a fit's noise model, inside the metric's range.

`fit_interval` turns a `fitlens.core.local_fit.LocalFit` into a ``level`` interval (binomial spread
for a rate, the residual spread otherwise, plus the squared bend beyond its noise); `NowEstimate`
holds a value, its interval and, when the interval is wide, why, in words. Numpy-free but for the
fit it reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

from fitlens.core.local_fit import LocalFit
from fitlens.core.metric_range import UNBOUNDED, MetricRange

#: How much of the estimated squared bend (beyond its noise) enters the interval's variance
#: by default (the unbiased estimate of the squared bias: 1).
BEND_WEIGHT = 1.0

#: The level of the interval shown with every now value and stored in ``History.history``.
NOW_LEVEL = 0.9
#: A now interval wider than this (half-width) is said in words: for a rate, in absolute
#: terms (5 points of accuracy); for other metrics, as a share of the value's magnitude.
WIDE_RATE = 0.05
WIDE_SHARE = 0.1
#: The words said when a now interval is wide: the curve's bend dominates its error; the noise
#: dominates and fewer than `FEW_STEPS` batches were seen (or their scatter is not measurable
#: yet); the noise dominates later (small batches, a rate near 0.5, a short memory chosen
#: because the curve moves).
BENDING = "curve bending"
FEW_BATCHES = "few batches yet"
NOISY = "noisy batches"
FEW_STEPS = 20


def _spread(fit: LocalFit, bounds: MetricRange) -> float:
    """Per-sample variance: binomial for a rate (``p`` kept off 0 and 1), else the residuals'."""
    if bounds.rate:
        n = fit.effective_samples
        p = (bounds.clip(fit.value) * n + 1.0) / (n + 2.0)
        return p * (1.0 - p)
    return fit.spread


def _bias2(fit: LocalFit, spread: float) -> float:
    """The squared bend beyond what its own noise explains (0 when it cannot be measured)."""
    if math.isnan(fit.bend):
        return 0.0
    return max(fit.bend**2 - spread * fit.bend_noise, 0.0)


def fit_interval(
    fit: LocalFit, bounds: MetricRange, level: float = 0.9, bend_weight: float = BEND_WEIGHT
) -> tuple[float, float]:
    """A ``level`` interval around a fit's value, from its noise model, inside ``bounds``.

    The half-width is ``z * sqrt(s2 * noise + bend_weight * bias2)``: ``s2`` is the per-sample
    variance (binomial ``p (1 - p)`` for a rate, with ``p`` pulled off 0 and 1 by one success and
    one failure in ``effective_samples``; else the residual spread), ``bias2`` the squared bend
    beyond its own noise. When the raw fit lies outside ``bounds``, the value is clipped and
    the distance clipped is added to the half-width on the inside: the straight line (or mean)
    does not describe the curve there, and the interval says so.

    Returns:
        ``(low, high)`` with ``low <= value <= high``; NaNs before any weight; the whole range
        (possibly infinite) when the spread cannot be measured yet (a non-rate metric, too few
        batches).

    Raises:
        ValueError: ``level`` outside (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"Expected `level` in (0, 1), e.g. 0.9. Received: {level!r}.")
    if math.isnan(fit.value):
        return math.nan, math.nan
    value = bounds.clip(fit.value)
    spread = _spread(fit, bounds)
    if math.isnan(spread):
        return bounds.low, bounds.high
    half = NormalDist().inv_cdf(0.5 + level / 2) * math.sqrt(
        spread * fit.noise + bend_weight * _bias2(fit, spread)
    )
    half += abs(fit.value - value)
    return bounds.clip(value - half), bounds.clip(value + half)


def _why_wide(
    fit: LocalFit,
    bounds: MetricRange,
    value: float,
    half: float,
    bend_weight: float,
    steps: int | None = None,
) -> str | None:
    """`NowEstimate.note`: None while the interval is narrow, else what makes it wide
    (``steps``: batches the estimator has seen; None: not counted)."""
    if math.isnan(value):
        return None
    wide = WIDE_RATE if bounds.rate else WIDE_SHARE * abs(value)
    if not half > wide:
        return None
    spread = _spread(fit, bounds)
    if math.isnan(spread):
        return FEW_BATCHES  # the scatter is not measurable yet
    clipped = fit.value != value  # a line running out of the range: the curve bends there
    if clipped or bend_weight * _bias2(fit, spread) > spread * fit.noise:
        return BENDING
    return FEW_BATCHES if steps is not None and steps < FEW_STEPS else NOISY


@dataclass(frozen=True)
class NowEstimate:
    """A now value with its interval, from one fit of the estimator's state.

    Attributes:
        value: the estimate, inside the metric's range (NaN before any weight).
        low, high: its ``level`` interval, ``low <= value <= high`` (NaN before any weight;
            the metric's whole range, possibly infinite, while the scatter is unknown).
        level: the interval's nominal coverage (`NOW_LEVEL` unless asked otherwise).
        note: None while the half-width is at most `WIDE_RATE` (a rate) or `WIDE_SHARE` of
            the value; else why it is wide, in words: `BENDING` (the squared bend beyond its
            noise outweighs the noise, or the fit ran out of the range), else `FEW_BATCHES`
            (fewer than `FEW_STEPS` batches seen, or their scatter not measurable yet) or
            `NOISY`. Depends on the values alone.
    """

    value: float
    low: float = math.nan
    high: float = math.nan
    level: float = NOW_LEVEL
    note: str | None = None
    _fit: LocalFit | None = field(default=None, repr=False, compare=False)
    _bounds: MetricRange = field(default=UNBOUNDED, repr=False, compare=False)
    _bend_weight: float = field(default=BEND_WEIGHT, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        fit: LocalFit,
        bounds: MetricRange,
        level: float,
        bend_weight: float = BEND_WEIGHT,
        steps: int | None = None,
    ) -> NowEstimate:
        """The estimate of ``fit`` inside ``bounds`` with its ``level`` interval (``steps``:
        batches seen, for the words)."""
        value = bounds.clip(fit.value)
        low, high = fit_interval(fit, bounds, level, bend_weight)
        half = max(value - low, high - value)
        note = _why_wide(fit, bounds, value, half, bend_weight, steps)
        return cls(value, low, high, level, note, fit, bounds, bend_weight)

    @property
    def half_width(self) -> float:
        """The larger distance from the value to an end of the interval (inf: unknown)."""
        return max(self.value - self.low, self.high - self.value)

    def interval(self, level: float) -> tuple[float, float]:
        """The interval at another ``level``, from the same fit (no estimator pass)."""
        if level == self.level:
            return self.low, self.high
        if self._fit is None:
            raise ValueError(
                f"This {self.level} interval was read back without its fit; only level "
                f"{self.level} is known. Received level={level!r}."
            )
        return fit_interval(self._fit, self._bounds, level, self._bend_weight)
