"""The epoch-start jump, announced before it happens and checked when it comes.

At the end of epoch k the display shows the epoch's running mean, which lags the model. The first
batches of epoch k+1 restart the mean from the current model, so the displayed value jumps. The
now estimate predicts where it lands: `make_forecast` says so at the epoch end, with a 95%
tolerance for the noise of a mean over only the first few batches, and `check_forecast` compares
the mean of the next epoch's first batches with it.

The tolerance uses the batch-to-batch noise of the last batches of epoch k, estimated from first
differences (``sd ≈ std(diff(v)) / sqrt(2)``) so that a trend does not inflate it, divided by
``sqrt(steps)``. It does not allow for the model improving further during those steps.

Pure numpy; no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from fitlens.core.gap import Z95
from fitlens.core.numbers import format_value, signed_value

#: batches at the start of the next epoch whose mean is forecast and checked.
FORECAST_STEPS = 3
#: batches at the end of an epoch used to estimate batch-to-batch noise.
NOISE_WINDOW = 20


@dataclass(frozen=True)
class Forecast:
    """What the first ``steps`` batches of 1-based ``epoch`` should show for ``metric``.

    Attributes:
        reported: the mean shown at the end of the previous epoch.
        expected: the forecast (the now estimate at that epoch end).
        tolerance: half-width of the 95% band for the mean of ``steps`` batches (NaN: unknown).
    """

    metric: str
    epoch: int
    steps: int
    reported: float
    expected: float
    tolerance: float

    @property
    def jump(self) -> float:
        """The forecast change of the displayed value across the epoch boundary."""
        return self.expected - self.reported


@dataclass(frozen=True)
class ForecastCheck:
    """The forecast and what the first batches showed (their sample-weighted mean).

    ``steps`` is how many batches ``observed`` covers: the forecast's when None. It differs only
    when batches arrive in groups (Keras's ``steps_per_execution``) that straddle the forecast's.
    """

    forecast: Forecast
    observed: float
    steps: int | None = None

    @property
    def batches(self) -> int:
        """The batches behind ``observed``."""
        return self.forecast.steps if self.steps is None else self.steps

    @property
    def error(self) -> float:
        return self.observed - self.forecast.expected

    @property
    def as_forecast(self) -> bool:
        """Within the tolerance (a NaN tolerance or value never counts as a hit)."""
        return abs(self.error) <= self.forecast.tolerance


def batch_noise(values: np.ndarray) -> float:
    """Standard deviation of one batch's value around the trend, from first differences.

    Example:
        >>> round(batch_noise(np.array([0.0, 1.0, 0.0, 1.0, 0.0])), 3)
        0.816
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 3:
        return math.nan
    return float(np.std(np.diff(v), ddof=1) / math.sqrt(2.0))


def make_forecast(
    metric: str,
    epoch: int,
    reported: float,
    now: float,
    recent: np.ndarray,
    steps: int = FORECAST_STEPS,
    now_interval: tuple[float, float] | None = None,
    now_level: float = 0.95,
) -> Forecast:
    """The forecast for 1-based ``epoch`` from the previous epoch's end.

    Args:
        metric: the metric's name. epoch: the epoch whose start is forecast (1-based).
        reported: the mean at the previous epoch's end. now: the now estimate there.
        recent: the last batch values of the previous epoch (for the noise).
        steps: how many first batches the forecast covers.
        now_interval: the now estimate's own interval at ``now_level``: its larger
            half-width, scaled to 95%, is added in quadrature to the noise of the first
            batches' mean, since the forecast is only as sure as the now estimate. `fit`, the
            callbacks and the report all pass the interval stored as ``m_now_low`` and
            ``m_now_high`` (the one shown), so they agree. None (or NaN ends, a history
            written before intervals): batch noise alone; an infinite one: no tolerance (NaN).
        now_level: the interval's level, in (0, 1).
    """
    tolerance = Z95 * batch_noise(recent[-NOISE_WINDOW:]) / math.sqrt(steps)
    if now_interval is not None and not any(math.isnan(b) for b in now_interval):
        half = max(now - now_interval[0], now_interval[1] - now)
        half *= Z95 / NormalDist().inv_cdf(0.5 + now_level / 2)
        tolerance = math.hypot(tolerance, half) if math.isfinite(half) else math.nan
    return Forecast(metric, epoch, steps, reported, now, tolerance)


def check_forecast(
    forecast: Forecast, values: np.ndarray, sizes: np.ndarray, steps: int | None = None
) -> ForecastCheck:
    """Compare the forecast with the sample-weighted mean of the first batches' ``values``.

    Args:
        values, sizes: per batch (one entry per batch) or, with ``steps``, per group of batches.
        steps: None: the first ``forecast.steps`` entries are single batches and the rest is
            ignored; else every entry is used and together they cover ``steps`` batches.
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(sizes, dtype=np.float64)
    if steps is None:
        v, w = v[: forecast.steps], w[: forecast.steps]
    observed = float(np.dot(v, w) / w.sum()) if w.sum() > 0 else math.nan
    return ForecastCheck(forecast, observed, steps)


def format_forecast_line(f: Forecast) -> str:
    """``forecast epoch 3: its first 3 batches should show accuracy ~0.9210 ± 0.0250 (the now
    estimate), not 0.8740 (the mean): a jump of +0.0470`` (one line)."""
    band = "" if math.isnan(f.tolerance) else f" ± {format_value(f.tolerance)}"
    return (
        f"forecast epoch {f.epoch}: its first {f.steps} batches should show {f.metric} "
        f"~{format_value(f.expected)}{band} (the now estimate), not {format_value(f.reported)} (the mean): "
        f"a jump of {signed_value(f.jump)}"
    )


def format_check_line(c: ForecastCheck) -> str:
    """``forecast check epoch 3: accuracy 0.9170 after 3 batches (jump +0.0430) vs forecast
    0.9210 ± 0.0250 (jump +0.0470): as forecast`` (one line)."""
    f = c.forecast
    band = "" if math.isnan(f.tolerance) else f" ± {format_value(f.tolerance)}"
    verdict = (
        "as forecast" if c.as_forecast else f"not as forecast (off by {signed_value(c.error)})"
    )
    return (
        f"forecast check epoch {f.epoch}: {f.metric} {format_value(c.observed)} after {c.batches} batches "
        f"(jump {signed_value(c.observed - f.reported)}) vs forecast {format_value(f.expected)}{band} "
        f"(jump {signed_value(f.jump)}): {verdict}"
    )
