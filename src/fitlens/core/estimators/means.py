"""Plain means of the batch values: since the epoch start, over a window, the last batch, and
a straight line through a window."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fitlens.core.estimators.base import Estimator, NanPolicy, _as_batches, _check_same_steps
from fitlens.core.local_fit import LocalFit, local_fit
from fitlens.core.metric_range import UNBOUNDED, MetricRange


class EpochMean(Estimator):
    """Sample-weighted running mean since the last reset: what Keras shows during an epoch.

    ``total`` is the sum of ``value * weight``; ``count`` the sum of weights (samples);
    ``total_sq`` the sum of ``value**2 * weight`` and ``batches`` the batches with weight, for the
    spread of a non-rate metric. Its interval is the sampling noise of the mean of what it saw.

    Example:
        >>> m = EpochMean()
        >>> m.update([0.5, 1.0], weights=[32, 16])
        >>> round(m.value, 4)
        0.6667
    """

    _state_names = ("total", "count", "total_sq", "batches")
    name = "mean"

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0.0
        self.total_sq = 0.0
        self.batches = 0.0

    def add(self, values: np.ndarray, weights: np.ndarray) -> None:
        """`update` with float64 ``(n,)`` batches whose weights are known to be finite and
        >= 0 (`MetricStream` checks a block's weights once for every metric): the same sums,
        without the conversions and checks."""
        if self.nan_policy == "ignore":
            self.update(values, weights)
        elif values.size:
            self._update(values, weights)

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        self.total += float(np.dot(values, weights))
        self.count += float(weights.sum())
        self.total_sq += float(np.dot(values * values, weights))
        self.batches += float(np.count_nonzero(weights))

    def value_with(self, values: np.ndarray, weights: np.ndarray) -> float:
        """`Estimator.value_with` (bit for bit) without a copy or the sums the value does not
        use: a display reads every epoch mean, with the partial block, at every redraw."""
        v, w = _as_batches(values, weights)
        if self.nan_policy == "ignore":
            keep = np.isfinite(v)
            v, w = v[keep], w[keep]
        if not v.size:
            return self.value
        total = self.total + float(np.dot(v, w))
        count = self.count + float(w.sum())
        return self.bounds.clip(total / count if count > 0 else math.nan)

    def fit(self) -> LocalFit:
        one = np.array([self.count])
        return local_fit(one, np.array([self.total]), one, self.total_sq, self.batches)

    @property
    def value(self) -> float:
        """The fit's value (``total / count``, NaN before any weight), without making the fit:
        a display reads every epoch mean at every refresh."""
        return self.bounds.clip(self.total / self.count if self.count > 0 else math.nan)

    @property
    def weight(self) -> float:
        return self.count

    def extend(self, other: Estimator) -> None:
        self.merge(other)


class WindowMean(Estimator):
    """Sample-weighted mean over the last ``window`` batches.

    State: a ring buffer of per-batch sums (``value * weight``) and weights, plus the number of
    batches seen (``steps``) which fixes the ring's write position. Each slot is one batch (the
    global batch after a merge), so its value is ``sum / weight`` and the scatter of a non-rate
    metric comes from those values.

    Args:
        window: number of most recent batches averaged (>= 1).
    """

    _state_names = ("sums", "weights", "steps")
    name = "window"
    degree = 0

    def __init__(
        self,
        window: int = 50,
        nan_policy: NanPolicy = "propagate",
        bounds: MetricRange = UNBOUNDED,
    ) -> None:
        if int(window) != window or window < 1:
            raise ValueError(f"Expected `window` to be an integer >= 1. Received: {window!r}.")
        self.window = int(window)
        super().__init__(nan_policy, bounds)

    def _config(self) -> dict[str, Any]:
        return {"window": self.window}

    def reset(self) -> None:
        self.sums = np.zeros(self.window)
        self.weights = np.zeros(self.window)
        self.steps = 0

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        if values.size > self.window:
            skipped = values.size - self.window
            self.steps += skipped
            values, weights = values[skipped:], weights[skipped:]
        slots = (self.steps + np.arange(values.size)) % self.window
        self.sums[slots] = values * weights
        self.weights[slots] = weights
        self.steps += values.size

    @property
    def weight(self) -> float:
        return float(self.weights.sum())

    def _ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-batch sums and weights in the order trained, oldest first."""
        n = min(self.steps, self.window)
        slots = (self.steps - n + np.arange(n)) % self.window
        return self.sums[slots], self.weights[slots]

    def fit(self) -> LocalFit:
        sums, weights = self._ordered()
        keep = weights > 0
        sums, weights = sums[keep], weights[keep]
        x = (np.arange(keep.size) - (keep.size - 1.0))[keep]
        powers = x[None, :] ** np.arange(2 * self.degree + 3)[:, None]
        m = powers @ weights
        my = powers[: self.degree + 2] @ sums
        syy = float(np.sum(sums * sums / weights))
        return local_fit(m, my, m, syy, sums.size, sums.size, self.degree)

    def merge(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, WindowMean)
        _check_same_steps(type(self).__name__, self.steps, other.steps)
        self.sums = self.sums + other.sums
        self.weights = self.weights + other.weights

    def extend(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, WindowMean)
        sums, weights = other._ordered()
        self.steps += other.steps - sums.size
        slots = (self.steps + np.arange(sums.size)) % self.window
        self.sums[slots], self.weights[slots] = sums, weights
        self.steps += sums.size


class LastValue(Estimator):
    """The last batch's value (what Lightning's ``_step`` metrics show).

    Its interval is the binomial one for a rate; one batch shows no spread for other metrics,
    so their interval is the whole range.
    """

    _state_names = ("last_sum", "last_weight")
    name = "last"

    def reset(self) -> None:
        self.last_sum = 0.0
        self.last_weight = 0.0

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        self.last_sum = float(values[-1] * weights[-1])
        self.last_weight = float(weights[-1])

    def fit(self) -> LocalFit:
        one = np.array([self.last_weight])
        return local_fit(one, np.array([self.last_sum]), one, 0.0, 1.0)

    @property
    def weight(self) -> float:
        return self.last_weight

    def extend(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, LastValue)
        if other.last_weight > 0:
            self.last_sum, self.last_weight = other.last_sum, other.last_weight


class TrendWindow(WindowMean):
    """Lag-free level: a weighted straight-line fit over the last ``window`` batches, read at the end.

    A window mean lags a metric that changes steadily by half the window; this estimator fits
    ``value ~ a + b * step`` by weighted least squares over the window and returns the line's
    value at the newest batch, removing that lag at the cost of more noise (about twice the
    window mean's standard deviation). With fewer than three batches it returns their mean.

    Args:
        window: number of most recent batches in the fit (>= 1).
    """

    name = "trend"
    degree = 1
