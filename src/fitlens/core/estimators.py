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
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist
from typing import Any, Literal, cast

import numpy as np

from fitlens.core.local_fit import LocalFit, local_fit, local_fits
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
#: The words said when a now interval is wide: the curve's bend dominates its error, or the
#: noise of too few samples does.
BENDING = "curve bending"
FEW_BATCHES = "few batches yet"

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

    Subclasses declare their state in ``_state_names`` and implement ``_update`` and ``fit``
    (the `LocalFit` their state gives); value, interval, reset, copy and (de)serialisation are
    generic.

    Args:
        nan_policy: ``"propagate"`` (a NaN batch makes the estimate NaN) or ``"ignore"``
            (non-finite batches are left out).
        bounds: the metric's `MetricRange`; the estimate and its interval never leave it, and a
            rate's interval uses the binomial spread.
    """

    _state_names: tuple[str, ...] = ()
    name = "estimator"
    bend_weight = BEND_WEIGHT

    def __init__(
        self, nan_policy: NanPolicy = "propagate", bounds: MetricRange = UNBOUNDED
    ) -> None:
        if nan_policy not in _NAN_POLICIES:
            raise ValueError(
                f"Expected `nan_policy` to be one of {_NAN_POLICIES}. Received: {nan_policy!r}."
            )
        if not isinstance(bounds, MetricRange):
            raise TypeError(
                f"Expected `bounds` to be a fitlens MetricRange (e.g. RATE for an accuracy). "
                f"Received: {bounds!r}."
            )
        self.nan_policy = nan_policy
        self.bounds = bounds
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

    def fit(self) -> LocalFit:
        """The fit behind the estimate: its raw (unclipped) value, noise, spread and bend."""
        raise NotImplementedError

    @property
    def value(self) -> float:
        """The current estimate, inside ``bounds``; NaN before any weight has been seen."""
        return self.bounds.clip(self.fit().value)

    def interval(self, level: float = 0.9) -> tuple[float, float]:
        """A ``level`` interval for the quantity the estimate estimates (see `fit_interval`)."""
        return fit_interval(self.fit(), self.bounds, level, self.bend_weight)

    def estimate(self, level: float = NOW_LEVEL) -> NowEstimate:
        """The value and its ``level`` interval from one fit (a display reads both at once)."""
        return NowEstimate.of(self.fit(), self.bounds, level, self.bend_weight)

    def estimate_with(
        self, values: np.ndarray, weights: np.ndarray, level: float = NOW_LEVEL
    ) -> NowEstimate:
        """`estimate` after also adding these batches, leaving this estimator unchanged (as
        `value_with`): one copy, one fit."""
        copy = self._copy()
        copy.update(values, weights)
        return copy.estimate(level)

    def value_with(self, values: np.ndarray, weights: np.ndarray) -> float:
        """The value after also adding these batches, leaving this estimator unchanged.

        Equal, bit for bit, to ``update`` on a ``clone`` loaded with our ``state_dict``, then
        ``value``; but copies only the state (a display reads this at every refresh).

        Args:
            values, weights: as for `update`.
        """
        copy = self._copy()
        copy.update(values, weights)
        return copy.value

    def _copy(self) -> Estimator:
        """An independent estimator with our settings and state (state arrays copied)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        for key in self._state_names:
            val = getattr(self, key)
            if isinstance(val, np.ndarray):
                setattr(copy, key, val.copy())
        return copy

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
        if (
            type(other) is not type(self)
            or other._config() != self._config()
            or other.bounds != self.bounds
        ):
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
        """Restore a state produced by ``state_dict`` of an estimator with the same settings.

        Raises:
            ValueError: a key is missing (e.g. a checkpoint from an older fitlens).
        """
        missing = set(self.state_dict()) - set(state)
        if missing:
            raise ValueError(
                f"Estimator state is missing {sorted(missing)}; got {sorted(state)}. Pass the "
                f"`state_dict()` of a {type(self).__name__} with the same settings."
            )
        self._load(state)

    def _load(self, state: dict[str, Any]) -> None:
        for key in self._state_names:
            val = state[key]
            setattr(
                self,
                key,
                np.array(val, dtype=np.float64) if isinstance(val, np.ndarray | list) else val,
            )

    def clone(self, bounds: MetricRange | None = None) -> Estimator:
        """A fresh (reset) estimator with the same settings (and ``bounds`` if given)."""
        return type(self)(
            **self._config(), nan_policy=self.nan_policy, bounds=bounds or self.bounds
        )

    def __repr__(self) -> str:
        config = self._config()
        if self.bounds != UNBOUNDED:
            config["bounds"] = self.bounds
        args = ", ".join(f"{k}={v!r}" for k, v in config.items())
        return f"{type(self).__name__}({args})"


def _check_same_steps(kind: str, steps: int, other_steps: int) -> None:
    if steps != other_steps:
        raise ValueError(
            f"Can only merge {kind} states over the same steps (one per rank of the same "
            f"batches). Received {steps} and {other_steps} steps; use `extend` for later steps."
        )


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
    fit: LocalFit, bounds: MetricRange, value: float, half: float, bend_weight: float
) -> str | None:
    """`NowEstimate.note`: None while the interval is narrow, else what makes it wide."""
    if math.isnan(value):
        return None
    wide = WIDE_RATE if bounds.rate else WIDE_SHARE * abs(value)
    if not half > wide:
        return None
    spread = _spread(fit, bounds)
    if math.isnan(spread):
        return FEW_BATCHES  # the scatter is not measurable yet
    clipped = fit.value != value  # a line running out of the range: the curve bends there
    return (
        BENDING
        if clipped or bend_weight * _bias2(fit, spread) > spread * fit.noise
        else FEW_BATCHES
    )


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
            noise outweighs the noise, or the fit ran out of the range) or `FEW_BATCHES` (the
            noise of too few samples). Depends on the values alone.
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
        cls, fit: LocalFit, bounds: MetricRange, level: float, bend_weight: float = BEND_WEIGHT
    ) -> NowEstimate:
        """The estimate of ``fit`` inside ``bounds`` with its ``level`` interval."""
        value = bounds.clip(fit.value)
        low, high = fit_interval(fit, bounds, level, bend_weight)
        note = _why_wide(fit, bounds, value, max(value - low, high - value), bend_weight)
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

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        self.total += float(np.dot(values, weights))
        self.count += float(weights.sum())
        self.total_sq += float(np.dot(values * values, weights))
        self.batches += float(np.count_nonzero(weights))

    def fit(self) -> LocalFit:
        one = np.array([self.count])
        return local_fit(one, np.array([self.total]), one, self.total_sq, self.batches)

    @property
    def weight(self) -> float:
        return self.count

    def extend(self, other: Estimator) -> None:
        self.merge(other)


@lru_cache(maxsize=64)
def _move(size: int, n: int) -> np.ndarray:
    """The matrix that rewrites moment sums ``sum w x^k`` as sums of ``(x - n)^k``."""
    k = np.arange(size)
    binom = np.array([[math.comb(int(i), int(j)) for j in k] for i in k], dtype=np.float64)
    move = binom * float(-n) ** np.maximum(k[:, None] - k[None, :], 0) * (k[:, None] >= k)
    move.flags.writeable = False
    return move


@lru_cache(maxsize=64)
def _block_powers(size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` of a block of ``n`` batches (the newest at 0) and its powers ``x^k``, k < size."""
    x = -np.arange(n - 1, -1, -1, dtype=np.float64)
    powers = x[None, :] ** np.arange(size)[:, None]
    x.flags.writeable = powers.flags.writeable = False
    return x, powers


@lru_cache(maxsize=256)
def _discounts(decay: float, n: int) -> np.ndarray:
    """``decay**(-x)`` over a block of ``n`` batches: the newest batch's discount is 1."""
    d = decay ** (-_block_powers(1, n)[0])
    d.flags.writeable = False
    return d


class _Discounted(Estimator):
    """A polynomial fit of ``degree`` with exponentially fading weights, read at the newest batch.

    Batch ``i`` of ``t`` sits at ``x = i - t`` (the newest at 0) with weight ``decay**(t - i) *
    samples``. State: the moment sums of `fitlens.core.local_fit` up to the degree above
    (``m``, ``my``, ``t``; ``syy``; ``batches``, the discounted count of batches with weight),
    ``steps`` (batches seen) and ``decay`` (per batch; NaN until it is known). An update is O(1)
    per batch; ranks' states add, later states append after aging ours by their steps.
    """

    degree = 0
    _state_names = ("m", "my", "t", "syy", "batches", "steps", "decay")

    def _initial_decay(self, first_size: float) -> float:
        raise NotImplementedError

    def reset(self) -> None:
        size = 2 * self.degree + 3
        self.m = np.zeros(size)
        self.t = np.zeros(size)
        self.my = np.zeros(self.degree + 2)
        self.syy = 0.0
        self.batches = 0.0
        self.steps = 0
        self.decay = self._initial_decay(math.nan)
        self._fit: LocalFit | None = None

    def _shift(self, n: int) -> None:
        """Age the sums by ``n`` batches: every x decreases by n, every weight decays."""
        if n == 0 or self.steps == 0:
            return
        self._fit = None
        move = _move(self.m.size, n)
        carry = self.decay**n
        self.m = carry * (move @ self.m)
        self.t = carry * carry * (move @ self.t)
        self.my = carry * (move[: self.my.size, : self.my.size] @ self.my)
        self.syy *= carry
        self.batches *= carry

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        if math.isnan(self.decay):
            self.decay = self._initial_decay(float(weights[0]))
        n = values.size
        d = _discounts(self.decay, n)
        w = d * weights
        powers = _block_powers(self.m.size, n)[1]
        self._shift(n)
        self._fit = None
        self.m += powers @ w
        self.t += powers @ (d * w)
        self.my += powers[: self.my.size] @ (w * values)
        self.syy += float(np.dot(w, values * values))
        self.batches += float(np.dot(d, weights > 0))
        self.steps += n

    def fit(self) -> LocalFit:
        if self._fit is None:  # the fit depends on the state only: kept until it changes
            self._fit = local_fit(
                self.m, self.my, self.t, self.syy, self.batches, self.steps, self.degree
            )
        return self._fit

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        self._fit = None

    @property
    def weight(self) -> float:
        return float(self.m[0])

    def merge(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, _Discounted)
        _check_same_steps(type(self).__name__, self.steps, other.steps)
        self._check_decay(other)
        self._add(other)

    def _add(self, other: _Discounted) -> None:
        self._fit = None
        self.m = self.m + other.m
        self.t = self.t + other.t
        self.my = self.my + other.my
        self.syy += other.syy
        self.batches += other.batches

    def _check_decay(self, other: _Discounted) -> None:
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
        assert isinstance(other, _Discounted)
        self._check_decay(other)
        self._shift(other.steps)
        self._add(other)
        self.steps += other.steps


class EMA(_Discounted):
    """Debiased, sample-weighted exponential moving average (the smoothing fastai uses for loss).

    After batches 1..t it returns ``sum_i beta**(t-i) * v_i * w_i / sum_i beta**(t-i) * w_i``:
    an EMA of sums divided by an EMA of weights. With equal weights this equals the
    bias-corrected EMA ``(1 - beta) * sum beta**(t-i) v_i / (1 - beta**t)``, so the first batches
    are not pulled towards zero. Its effective memory is about ``1 / (1 - beta)`` batches. Its
    interval adds to the noise the lag a straight line through the same memory shows.

    Args:
        beta: decay per batch, in [0, 1). 0 keeps only the last batch.
    """

    name = "ema"
    degree = 0

    def __init__(
        self,
        beta: float = 0.98,
        nan_policy: NanPolicy = "propagate",
        bounds: MetricRange = UNBOUNDED,
    ) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Expected `beta` in [0, 1). Received: {beta!r}.")
        self.beta = float(beta)
        super().__init__(nan_policy, bounds)

    def _config(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def _initial_decay(self, first_size: float) -> float:
        return self.beta


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


class EMATrend(_Discounted):
    """Lag-free level from an exponentially weighted straight-line fit, read at the newest batch.

    Fits ``value ~ a + b * x`` by weighted least squares where batch ``i`` of ``t`` sits at
    ``x = i - t`` (the newest at 0) with weight ``beta**(t - i) * samples``, and returns ``a``:
    the line at the newest batch (discounted least squares, as in Brown's double exponential
    smoothing). Like `TrendWindow` it removes the lag of an average on a steady trend, but its
    memory fades smoothly instead of dropping old batches, and its state is a few sums: an
    update is O(1) and two states merge by addition. With fewer than three batches (or all
    weight on one batch) it returns their weighted mean. Its interval adds to the noise of the
    line how far a parabola through the same memory disagrees at the newest batch (the bend).

    The memory is set in *samples* by default: ``beta = exp(-n / memory)`` with ``n`` the first
    batch's size, so large batches (less noise per batch) get a shorter memory in steps (less lag
    from the model changing) and small batches a longer one. The default of 800 samples was
    tuned on ``benchmarks/now_estimate.py``. Pass ``beta`` to fix the decay per batch instead.
    Under torch.distributed each rank sizes its memory from its own shard of the batch, which
    is the same on every rank, so per-rank states still merge exactly.

    Args:
        memory: samples of memory (> 0); used when ``beta`` is None.
        beta: decay per batch, in (0, 1); overrides ``memory``.

    Example:
        >>> est = EMATrend(beta=0.9)
        >>> est.update([1.0, 2.0, 3.0, 4.0], weights=32)
        >>> round(est.value, 6)  # a straight line is followed without lag
        4.0
    """

    name = "ema_trend"
    degree = 1

    def __init__(
        self,
        memory: float = 800.0,
        beta: float | None = None,
        nan_policy: NanPolicy = "propagate",
        bounds: MetricRange = UNBOUNDED,
    ) -> None:
        if beta is not None and not 0.0 < beta < 1.0:
            raise ValueError(f"Expected `beta` in (0, 1) or None. Received: {beta!r}.")
        if not memory > 0:
            raise ValueError(f"Expected `memory` (samples) > 0. Received: {memory!r}.")
        self.memory = float(memory)
        self.beta = None if beta is None else float(beta)
        super().__init__(nan_policy, bounds)

    def _config(self) -> dict[str, Any]:
        return {"memory": self.memory, "beta": self.beta}

    def __repr__(self) -> str:
        bounds = "" if self.bounds == UNBOUNDED else f", bounds={self.bounds!r}"
        if self.beta is not None:
            return f"EMATrend(beta={self.beta!r}{bounds})"
        return f"EMATrend(memory={self.memory!r}{bounds})"

    def _initial_decay(self, first_size: float) -> float:
        if self.beta is not None:
            return self.beta
        return math.exp(-max(first_size, 1.0) / self.memory)


class AdaptiveTrend(Estimator):
    """`EMATrend` at several memories, read from the one with the smallest estimated error.

    A short memory follows a bending curve but is noisy; a long one is quiet but lags and
    overshoots where the curve bends. Each memory's squared error is estimated as its noise
    (``s2 * noise``, binomial for a rate) plus its squared bend beyond that bend's own noise,
    and the estimate (with its interval) is that of the memory where the sum is smallest. Every
    memory keeps its own sums, so updates stay O(1) and states merge and extend exactly.

    Picking the smallest estimate favours a memory whose bend happens to look small, so the
    interval counts the squared bend twice (``bend_weight = 2``, tuned with the memories on
    seeds 0-4 of ``benchmarks/now_estimate.py``).

    State: each memory's `EMATrend` state, keys prefixed ``"<index>."``.

    Args:
        memories: samples of memory of each line (each > 0, at least one), shortest first.
    """

    name = "adaptive_trend"
    bend_weight = 2.0

    def __init__(
        self,
        memories: tuple[float, ...] = (300.0, 600.0, 1200.0, 2400.0, 4800.0),
        nan_policy: NanPolicy = "propagate",
        bounds: MetricRange = UNBOUNDED,
    ) -> None:
        memories = tuple(float(m) for m in memories)
        if not memories:
            raise ValueError("Expected at least one memory (samples). Received: ().")
        self.memories = memories
        self.lines = [EMATrend(m) for m in memories]  # fed only finite batches, read raw
        super().__init__(nan_policy, bounds)

    def _config(self) -> dict[str, Any]:
        return {"memories": self.memories}

    def reset(self) -> None:
        for line in self.lines:
            line.reset()

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        for line in self.lines:
            line._update(values, weights)

    @property
    def steps(self) -> int:
        return self.lines[0].steps

    @property
    def weight(self) -> float:
        return self.lines[0].weight

    def fit(self) -> LocalFit:
        stale = [line for line in self.lines if line._fit is None]
        if len(stale) > 1:  # the lines share their steps: fit them in one stacked solve
            fits = local_fits(
                np.array([line.m for line in stale]),
                np.array([line.my for line in stale]),
                np.array([line.t for line in stale]),
                np.array([line.syy for line in stale]),
                np.array([line.batches for line in stale]),
                self.steps,
                EMATrend.degree,
            )
            for line, fit in zip(stale, fits, strict=True):
                line._fit = fit
        fits = [line.fit() for line in self.lines]
        # a bend that cannot be measured is no evidence of a small error: only the shortest
        # memory may be read without one
        usable = [fits[0], *(f for f in fits[1:] if not math.isnan(f.bend))]
        return min(usable, key=self._error)

    def _error(self, fit: LocalFit) -> float:
        """Estimated squared error of a line: noise plus squared bend beyond its noise."""
        spread = _spread(fit, self.bounds)
        error = spread * fit.noise + _bias2(fit, spread)
        return math.inf if math.isnan(error) else error

    def _copy(self) -> Estimator:
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.lines = [cast(EMATrend, line._copy()) for line in self.lines]
        return copy

    def merge(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, AdaptiveTrend)
        for i, line in enumerate(self.lines):  # same memories: `_check_compatible`
            line.merge(other.lines[i])

    def extend(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, AdaptiveTrend)
        for i, line in enumerate(self.lines):
            line.extend(other.lines[i])

    def state_dict(self) -> dict[str, Any]:
        return {
            f"{i}.{k}": v for i, line in enumerate(self.lines) for k, v in line.state_dict().items()
        }

    def _load(self, state: dict[str, Any]) -> None:
        for i, line in enumerate(self.lines):
            prefix = f"{i}."
            line.load_state_dict(
                {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            )


_BY_NAME: dict[str, type[Estimator]] = {
    cls.name: cls
    for cls in (EpochMean, EMA, WindowMean, LastValue, TrendWindow, EMATrend, AdaptiveTrend)
}


#: The now estimator `fit` and the callbacks use unless told otherwise: chosen on
#: ``benchmarks/now_estimate.py``, tuned on seeds 0-4 and picked on held-out seeds 5-9, where
#: its mean error was 1.37 points of accuracy against 1.59 for ``EMATrend(800)``.
DEFAULT_NOW = "adaptive_trend"


def make_estimator(spec: str | Estimator, bounds: MetricRange | None = None) -> Estimator:
    """An estimator from a name (``"ema"``, ``"window"``, ``"trend"``, ``"ema_trend"``,
    ``"adaptive_trend"``, ``"last"``, ``"mean"``) with default settings, or a fresh clone of a
    configured instance.

    Args:
        spec: the name or instance.
        bounds: the metric's range; None keeps the instance's (a name: unbounded).
    """
    if isinstance(spec, Estimator):
        return spec.clone(bounds)
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec](bounds=bounds or UNBOUNDED)
    raise ValueError(
        f"Expected an estimator name, one of {sorted(_BY_NAME)}, or an Estimator instance. "
        f"Received: {spec!r}."
    )
