"""The `Estimator` base class: sample-weighted batch values in, a level with its interval out.

See `fitlens.core.estimators` for what every estimator shares (sums and weights, merge, extend,
state dicts).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from fitlens.core.estimators.interval import (
    BEND_WEIGHT,
    NOW_LEVEL,
    NowEstimate,
    fit_interval,
)
from fitlens.core.local_fit import LocalFit
from fitlens.core.metric_range import UNBOUNDED, MetricRange

NanPolicy = Literal["propagate", "ignore"]
_NAN_POLICIES = ("propagate", "ignore")


def _as_batches(
    values: float | Iterable[float] | np.ndarray, weights: float | Iterable[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if (  # per block of steps (`MetricStream`): float64 columns already, nothing to convert
        type(values) is np.ndarray
        and type(weights) is np.ndarray
        and values.dtype == np.float64
        and weights.dtype == np.float64
        and values.ndim == 1
        and weights.shape == values.shape
    ):
        v, w = values, weights
    else:
        v = np.atleast_1d(np.asarray(values, dtype=np.float64))
        w = np.atleast_1d(np.asarray(weights, dtype=np.float64))
        if w.shape != v.shape:
            w = np.broadcast_to(w, v.shape)
        if v.ndim != 1:
            raise ValueError(
                f"Expected one value per batch (a 1-D sequence). Received shape {v.shape}."
            )
    check_weights(w)
    return v, w


def check_weights(weights: np.ndarray) -> None:
    """Raise unless every batch weight (a sample count) is finite and >= 0."""
    if weights.size and not (weights.min() >= 0.0 and weights.max() < math.inf):  # NaN: min
        raise ValueError(
            "Expected batch weights (sample counts) to be finite and >= 0. "
            f"Received {weights.tolist()}."
        )


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
        steps = getattr(self, "steps", None)  # batches seen, where the estimator counts them
        return NowEstimate.of(self.fit(), self.bounds, level, self.bend_weight, steps)

    def estimate_with(
        self, values: np.ndarray, weights: np.ndarray, level: float = NOW_LEVEL
    ) -> NowEstimate:
        """`estimate` after also adding these batches, leaving this estimator unchanged (as
        `value_with`): one copy, one fit."""
        return self.with_batches(values, weights).estimate(level)

    def with_batches(self, values: np.ndarray, weights: np.ndarray) -> Estimator:
        """A copy with these batches added (as `update`); this estimator is unchanged."""
        copy = self._copy()
        copy.update(values, weights)
        return copy

    def value_with(self, values: np.ndarray, weights: np.ndarray) -> float:
        """The value after also adding these batches, leaving this estimator unchanged.

        Equal, bit for bit, to ``update`` on a ``clone`` loaded with our ``state_dict``, then
        ``value``; but copies only the state (a display reads this at every refresh).

        Args:
            values, weights: as for `update`.
        """
        return self.with_batches(values, weights).value

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
