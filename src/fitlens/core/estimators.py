"""Streaming, sample-weighted, mergeable estimators of a metric's level.

Each estimator consumes a stream of batches, one ``(value, weight)`` pair per batch, where
``value`` is the batch's mean of the metric and ``weight`` the number of samples it averages
(Keras ``Mean`` weights by the batch's first dimension the same way). Internally every estimator
keeps only *sums and weights* (``value * weight`` and ``weight``), so that:

* an update is O(1) time and memory per batch (``WindowMean`` keeps its fixed-size window);
* two partial states merge exactly. ``merge(other)`` combines two estimators that saw *the same
  steps on different samples* (the torch.distributed case: each rank sees a shard of every
  global batch), which for sums is plain addition. ``extend(other)`` appends a state that saw
  *later* steps (a resumed run, or a sequence split in two).
* state is a dict of plain numbers and numpy arrays (``state_dict`` / ``load_state_dict``), so a
  checkpoint can hold it.

The module depends on numpy only: the training loop converts device tensors to numpy when the
display refreshes, and ``fitlens explain`` and the Keras/Lightning callbacks reuse it unchanged.

Non-finite values: ``nan_policy="propagate"`` (default) lets a NaN batch make the estimate NaN, as
the training loss does; ``"ignore"`` drops non-finite batches from the estimate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

NanPolicy = Literal["propagate", "ignore"]
_NAN_POLICIES = ("propagate", "ignore")


def _as_batches(
    values: float | Iterable[float] | np.ndarray, weights: float | Iterable[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    v = np.atleast_1d(np.asarray(values, dtype=np.float64))
    w = np.atleast_1d(np.asarray(weights, dtype=np.float64))
    if w.shape != v.shape:
        w = np.broadcast_to(w, v.shape)
    if v.ndim != 1:
        raise ValueError(
            f"Expected one value per batch (a 1-D sequence). Received shape {v.shape}."
        )
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(
            f"Expected batch weights (sample counts) to be finite and >= 0. Received {w.tolist()}."
        )
    return v, w


class Estimator:
    """Base class: a level estimate built from ``(batch mean, batch weight)`` pairs.

    Subclasses declare their state in ``_state_names`` and implement ``_update`` and ``value``;
    reset, copy and (de)serialisation are generic.

    Args:
        nan_policy: ``"propagate"`` (a NaN batch makes the estimate NaN) or ``"ignore"``
            (non-finite batches are left out).
    """

    _state_names: tuple[str, ...] = ()
    name = "estimator"

    def __init__(self, nan_policy: NanPolicy = "propagate") -> None:
        if nan_policy not in _NAN_POLICIES:
            raise ValueError(
                f"Expected `nan_policy` to be one of {_NAN_POLICIES}. Received: {nan_policy!r}."
            )
        self.nan_policy = nan_policy
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        raise NotImplementedError

    def update(
        self,
        values: float | Iterable[float] | np.ndarray,
        weights: float | Iterable[float] | np.ndarray = 1.0,
    ) -> None:
        """Add batches in the order they were trained.

        Args:
            values: one batch mean, or a 1-D sequence of batch means.
            weights: the number of samples behind each value (a scalar applies to all).
        """
        v, w = _as_batches(values, weights)
        if self.nan_policy == "ignore":
            keep = np.isfinite(v)
            v, w = v[keep], w[keep]
        if v.size:
            self._update(v, w)

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        raise NotImplementedError

    @property
    def value(self) -> float:
        """The current estimate; NaN before any weight has been seen."""
        raise NotImplementedError

    @property
    def weight(self) -> float:
        """Total weight (samples) that the current estimate rests on."""
        raise NotImplementedError

    def merge(self, other: Estimator) -> None:
        """Combine with an estimator that saw the same steps on other samples (sums add)."""
        self._check_compatible(other)
        for key in self._state_names:
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def extend(self, other: Estimator) -> None:
        """Append the state of an estimator that saw the steps that came after ours."""
        raise NotImplementedError

    def _check_compatible(self, other: Estimator) -> None:
        if type(other) is not type(self) or other._config() != self._config():
            raise ValueError(
                f"Can only merge estimators of the same kind and settings. "
                f"Received {self!r} and {other!r}."
            )

    def _config(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The state as plain floats and numpy arrays (copies), for checkpoints."""
        out: dict[str, Any] = {}
        for key in self._state_names:
            val = getattr(self, key)
            out[key] = val.copy() if isinstance(val, np.ndarray) else val
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by ``state_dict`` of an estimator with the same settings."""
        missing = set(self._state_names) - set(state)
        if missing:
            raise ValueError(f"Estimator state is missing {sorted(missing)}; got {sorted(state)}.")
        for key in self._state_names:
            val = state[key]
            setattr(
                self,
                key,
                np.array(val, dtype=np.float64) if isinstance(val, np.ndarray | list) else val,
            )

    def clone(self) -> Estimator:
        """A fresh (reset) estimator with the same settings."""
        return type(self)(**self._config(), nan_policy=self.nan_policy)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"


class EpochMean(Estimator):
    """Sample-weighted running mean since the last reset: what Keras shows during an epoch.

    ``total`` is the sum of ``value * weight``; ``count`` the sum of weights (samples).

    Example:
        >>> m = EpochMean()
        >>> m.update([0.5, 1.0], weights=[32, 16])
        >>> round(m.value, 4)
        0.6667
    """

    _state_names = ("total", "count")
    name = "mean"

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0.0

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        self.total += float(np.dot(values, weights))
        self.count += float(weights.sum())

    @property
    def value(self) -> float:
        return self.total / self.count if self.count > 0 else math.nan

    @property
    def weight(self) -> float:
        return self.count

    def extend(self, other: Estimator) -> None:
        self.merge(other)


class EMA(Estimator):
    """Debiased, sample-weighted exponential moving average (the smoothing fastai uses for loss).

    After batches 1..t it returns ``sum_i beta**(t-i) * v_i * w_i / sum_i beta**(t-i) * w_i``:
    an EMA of sums divided by an EMA of weights. With equal weights this equals the
    bias-corrected EMA ``(1 - beta) * sum beta**(t-i) v_i / (1 - beta**t)``, so the first batches
    are not pulled towards zero. Its effective memory is about ``1 / (1 - beta)`` batches.

    Args:
        beta: decay per batch, in [0, 1). 0 keeps only the last batch.
    """

    _state_names = ("weighted_sum", "weight_sum", "steps")
    name = "ema"

    def __init__(self, beta: float = 0.98, nan_policy: NanPolicy = "propagate") -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Expected `beta` in [0, 1). Received: {beta!r}.")
        self.beta = float(beta)
        super().__init__(nan_policy)

    def _config(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def reset(self) -> None:
        self.weighted_sum = 0.0
        self.weight_sum = 0.0
        self.steps = 0

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        n = values.size
        decay = self.beta ** np.arange(n - 1, -1, -1, dtype=np.float64)
        carry = self.beta**n
        self.weighted_sum = carry * self.weighted_sum + float(np.dot(decay, values * weights))
        self.weight_sum = carry * self.weight_sum + float(np.dot(decay, weights))
        self.steps += n

    @property
    def value(self) -> float:
        return self.weighted_sum / self.weight_sum if self.weight_sum > 0 else math.nan

    @property
    def weight(self) -> float:
        return self.weight_sum

    def merge(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, EMA)
        if other.steps != self.steps:
            raise ValueError(
                "Can only merge EMAs over the same steps (one per rank of the same batches). "
                f"Received {self.steps} and {other.steps} steps; use `extend` for later steps."
            )
        self.weighted_sum += other.weighted_sum
        self.weight_sum += other.weight_sum

    def extend(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, EMA)
        carry = self.beta**other.steps
        self.weighted_sum = carry * self.weighted_sum + other.weighted_sum
        self.weight_sum = carry * self.weight_sum + other.weight_sum
        self.steps += other.steps


class WindowMean(Estimator):
    """Sample-weighted mean over the last ``window`` batches.

    State: a ring buffer of per-batch sums (``value * weight``) and weights, plus the number of
    batches seen (``steps``) which fixes the ring's write position.

    Args:
        window: number of most recent batches averaged (>= 1).
    """

    _state_names = ("sums", "weights", "steps")
    name = "window"

    def __init__(self, window: int = 50, nan_policy: NanPolicy = "propagate") -> None:
        if int(window) != window or window < 1:
            raise ValueError(f"Expected `window` to be an integer >= 1. Received: {window!r}.")
        self.window = int(window)
        super().__init__(nan_policy)

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
    def value(self) -> float:
        w = float(self.weights.sum())
        return float(self.sums.sum()) / w if w > 0 else math.nan

    @property
    def weight(self) -> float:
        return float(self.weights.sum())

    def _ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-batch sums and weights in the order trained, oldest first."""
        n = min(self.steps, self.window)
        slots = (self.steps - n + np.arange(n)) % self.window
        return self.sums[slots], self.weights[slots]

    def merge(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, WindowMean)
        if other.steps != self.steps:
            raise ValueError(
                "Can only merge windows over the same steps. "
                f"Received {self.steps} and {other.steps} steps; use `extend` for later steps."
            )
        self.sums = self.sums + other.sums
        self.weights = self.weights + other.weights

    def extend(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, WindowMean)
        sums, weights = other._ordered()
        skipped = other.steps - sums.size
        self.steps += skipped
        if sums.size:
            w_safe = np.where(weights > 0, weights, 1.0)
            self._update(np.where(weights > 0, sums / w_safe, 0.0), weights)


class LastValue(Estimator):
    """The last batch's value (what Lightning's ``_step`` metrics show)."""

    _state_names = ("last_sum", "last_weight")
    name = "last"

    def reset(self) -> None:
        self.last_sum = 0.0
        self.last_weight = 0.0

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        self.last_sum = float(values[-1] * weights[-1])
        self.last_weight = float(weights[-1])

    @property
    def value(self) -> float:
        return self.last_sum / self.last_weight if self.last_weight > 0 else math.nan

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

    @property
    def value(self) -> float:
        sums, weights = self._ordered()
        total = float(weights.sum())
        if total <= 0:
            return math.nan
        keep = weights > 0
        if int(keep.sum()) < 3:
            return float(sums.sum()) / total
        x = np.arange(sums.size, dtype=np.float64)[keep]
        w = weights[keep]
        y = sums[keep] / w
        x_bar = float(np.dot(w, x)) / total
        y_bar = float(np.dot(w, y)) / total
        sxx = float(np.dot(w, (x - x_bar) ** 2))
        if sxx <= 0:
            return y_bar
        slope = float(np.dot(w, (x - x_bar) * (y - y_bar))) / sxx
        return y_bar + slope * (sums.size - 1 - x_bar)


class EMATrend(Estimator):
    """Lag-free level from an exponentially weighted straight-line fit, read at the newest batch.

    Fits ``value ~ a + b * x`` by weighted least squares where batch ``i`` of ``t`` sits at
    ``x = i - t`` (the newest at 0) with weight ``beta**(t - i) * samples``, and returns ``a``:
    the line at the newest batch (discounted least squares, as in Brown's double exponential
    smoothing). Like `TrendWindow` it removes the lag of an average on a steady trend, but its
    memory fades smoothly instead of dropping old batches, and its state is five sums: an update
    is O(1) and two states merge by addition. With fewer than three batches it returns their
    weighted mean.

    The memory is set in *samples* by default: ``beta = exp(-n / memory)`` with ``n`` the first
    batch's size, so large batches (less noise per batch) get a shorter memory in steps (less lag
    from the model changing) and small batches a longer one. The default of 800 samples was
    tuned on ``benchmarks/now_estimate.py``. Pass ``beta`` to fix the decay per batch instead.
    Under torch.distributed each rank sizes its memory from its own shard of the batch, which
    is the same on every rank, so per-rank states still merge exactly.

    State: exponentially discounted sums of ``w``, ``w x``, ``w x^2``, ``w y``, ``w x y`` with
    ``x`` measured from the newest batch; ``steps`` counts batches; ``decay`` is the per-batch
    decay in use (NaN until the first batch when it is derived from ``memory``).

    Args:
        memory: samples of memory (> 0); used when ``beta`` is None.
        beta: decay per batch, in (0, 1); overrides ``memory``.

    Example:
        >>> est = EMATrend(beta=0.9)
        >>> est.update([1.0, 2.0, 3.0, 4.0], weights=32)
        >>> round(est.value, 6)  # a straight line is followed without lag
        4.0
    """

    _sums = ("sw", "swx", "swxx", "swy", "swxy")
    _state_names = (*_sums, "steps", "decay")
    name = "ema_trend"

    def __init__(
        self,
        memory: float = 800.0,
        beta: float | None = None,
        nan_policy: NanPolicy = "propagate",
    ) -> None:
        if beta is not None and not 0.0 < beta < 1.0:
            raise ValueError(f"Expected `beta` in (0, 1) or None. Received: {beta!r}.")
        if not memory > 0:
            raise ValueError(f"Expected `memory` (samples) > 0. Received: {memory!r}.")
        self.memory = float(memory)
        self.beta = None if beta is None else float(beta)
        super().__init__(nan_policy)

    def _config(self) -> dict[str, Any]:
        return {"memory": self.memory, "beta": self.beta}

    def __repr__(self) -> str:
        if self.beta is not None:
            return f"EMATrend(beta={self.beta!r})"
        return f"EMATrend(memory={self.memory!r})"

    def reset(self) -> None:
        self.sw = self.swx = self.swxx = self.swy = self.swxy = 0.0
        self.steps = 0
        self.decay = math.nan if self.beta is None else self.beta

    def _shift(self, n: int) -> None:
        """Age the sums by ``n`` batches: every x decreases by n, every weight decays."""
        if n == 0 or self.steps == 0:
            return
        carry = self.decay**n
        self.swxx = carry * (self.swxx - 2 * n * self.swx + n * n * self.sw)
        self.swx = carry * (self.swx - n * self.sw)
        self.swxy = carry * (self.swxy - n * self.swy)
        self.sw *= carry
        self.swy *= carry

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        if math.isnan(self.decay):
            self.decay = math.exp(-max(float(weights[0]), 1.0) / self.memory)
        n = values.size
        x = -np.arange(n - 1, -1, -1, dtype=np.float64)
        w = self.decay ** (-x) * weights
        self._shift(n)
        self.sw += float(w.sum())
        self.swx += float(np.dot(w, x))
        self.swxx += float(np.dot(w, x * x))
        self.swy += float(np.dot(w, values))
        self.swxy += float(np.dot(w, x * values))
        self.steps += n

    @property
    def value(self) -> float:
        if self.sw <= 0:
            return math.nan
        y_bar = self.swy / self.sw
        x_bar = self.swx / self.sw
        sxx = self.swxx - self.swx * x_bar
        if self.steps < 3 or sxx <= 1e-12 * max(self.swxx, 1.0):
            return y_bar
        slope = (self.swxy - self.swx * y_bar) / sxx
        return y_bar - slope * x_bar

    @property
    def weight(self) -> float:
        return self.sw

    def _add(self, other: EMATrend) -> None:
        for key in self._sums:
            setattr(self, key, getattr(self, key) + getattr(other, key))

    def merge(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, EMATrend)
        if other.steps != self.steps:
            raise ValueError(
                "Can only merge trends over the same steps (one per rank of the same batches). "
                f"Received {self.steps} and {other.steps} steps; use `extend` for later steps."
            )
        self._check_decay(other)
        self._add(other)

    def _check_decay(self, other: EMATrend) -> None:
        if math.isnan(self.decay):
            self.decay = other.decay
        elif not math.isnan(other.decay) and other.decay != self.decay:
            raise ValueError(
                f"Can only combine trends with the same decay per batch. Received {self.decay!r} "
                f"and {other.decay!r} (memory in samples sized from first batches of "
                "different sizes); pass a fixed `beta` instead."
            )

    def extend(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, EMATrend)
        self._check_decay(other)
        self._shift(other.steps)
        self._add(other)
        self.steps += other.steps


_BY_NAME: dict[str, type[Estimator]] = {
    cls.name: cls for cls in (EpochMean, EMA, WindowMean, LastValue, TrendWindow, EMATrend)
}


#: The now estimator `fit` and the callbacks use unless told otherwise (chosen on
#: ``benchmarks/now_estimate.py``).
DEFAULT_NOW = "ema_trend"


def make_estimator(spec: str | Estimator) -> Estimator:
    """An estimator from a name (``"ema"``, ``"window"``, ``"trend"``, ``"ema_trend"``,
    ``"last"``, ``"mean"``)
    with default settings, or a fresh clone of a configured instance."""
    if isinstance(spec, Estimator):
        return spec.clone()
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec]()
    raise ValueError(
        f"Expected an estimator name, one of {sorted(_BY_NAME)}, or an Estimator instance. "
        f"Received: {spec!r}."
    )
