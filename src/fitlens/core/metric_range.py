"""What values a metric can take, and how one batch's value scatters: the now estimate's guard rails.

A `MetricRange` is the small, framework-free description a metric declares: its bounds (an
accuracy lies in [0, 1], a cross-entropy or squared error is >= 0) and whether it is a *rate*,
the mean of one 0/1 outcome per sample (accuracy). For a rate the spread of a batch's value is
known without measuring it: a batch of ``n`` samples at rate ``p`` has variance ``p (1 - p) / n``
(binomial). Other metrics estimate their spread from the scatter of the batch values.

Estimators use it to never report a value outside the bounds (`fitlens.core.estimators`);
adapters fill it from what they know about a metric (`for_name` covers the built-in names).

Example:
    >>> RATE.clip(1.0019)
    1.0
    >>> for_name("val_accuracy") == RATE, for_name("loss") == NONNEGATIVE
    (True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MetricRange:
    """The closed interval a metric's values lie in, and whether the metric is a 0/1 rate.

    Attributes:
        low: the smallest possible value (``-inf``: none).
        high: the largest possible value (``inf``: none).
        rate: each sample scores 0 or 1 and a batch's value is their mean (accuracy); then
            ``low`` and ``high`` must be 0 and 1.

    Raises:
        ValueError: ``low > high``, a NaN bound, or a rate whose bounds are not [0, 1].
    """

    low: float = -math.inf
    high: float = math.inf
    rate: bool = False

    def __post_init__(self) -> None:
        if math.isnan(self.low) or math.isnan(self.high) or self.low > self.high:
            raise ValueError(
                f"Expected a metric range with low <= high. Received low={self.low!r}, "
                f"high={self.high!r}; pass e.g. MetricRange(0.0, 1.0)."
            )
        if self.rate and (self.low, self.high) != (0.0, 1.0):
            raise ValueError(
                f"A rate (mean of 0/1 outcomes) lies in [0, 1]. Received low={self.low!r}, "
                f"high={self.high!r}; use MetricRange(0.0, 1.0, rate=True) or rate=False."
            )

    @property
    def bounded(self) -> bool:
        """Whether either bound is finite."""
        return math.isfinite(self.low) or math.isfinite(self.high)

    def clip(self, value: float) -> float:
        """``value`` moved to the nearest bound if it lies outside (NaN stays NaN)."""
        if math.isnan(value):
            return value
        return min(max(value, self.low), self.high)

    def to_param(self) -> list[float | bool | None]:
        """``[low, high, rate]`` as JSON can hold it (an infinite bound as None), for
        ``History.params["ranges"]``; `from_param` reads it back."""
        return [
            self.low if math.isfinite(self.low) else None,
            self.high if math.isfinite(self.high) else None,
            self.rate,
        ]

    @classmethod
    def from_param(cls, param: Any) -> MetricRange:
        """The range `to_param` wrote (None or a malformed entry: unbounded, as runs before
        ranges were recorded)."""
        if not isinstance(param, list | tuple) or len(param) != 3:
            return UNBOUNDED
        low, high, rate = param
        return cls(
            -math.inf if low is None else float(low),
            math.inf if high is None else float(high),
            bool(rate),
        )

    def __repr__(self) -> str:
        if self == RATE:
            return "RATE"
        if self == NONNEGATIVE:
            return "NONNEGATIVE"
        if self == UNBOUNDED:
            return "UNBOUNDED"
        return f"MetricRange({self.low!r}, {self.high!r}, rate={self.rate!r})"


#: Accuracy and other means of a 0/1 outcome per sample.
RATE = MetricRange(0.0, 1.0, rate=True)
#: Losses and errors that cannot go below zero (cross-entropy, squared and absolute errors).
NONNEGATIVE = MetricRange(0.0, math.inf)
#: Nothing known (user callables that do not say).
UNBOUNDED = MetricRange()

_RATE_NAMES = ("accuracy", "acc", "binary_accuracy", "categorical_accuracy")
_NONNEGATIVE_NAMES = (
    "loss",
    "mse",
    "mae",
    "mean_squared_error",
    "mean_absolute_error",
    "cross_entropy",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "crossentropy",
)


def declared_range(fn: Any, name: str) -> MetricRange | None:
    """The range a metric or loss declares with a ``fitlens_range`` attribute, if any:
    a `MetricRange`, or a ``(low, high)`` pair with None for no bound.

    Example:
        >>> def error_rate(outputs, targets): ...
        >>> error_rate.fitlens_range = (0.0, 1.0)
        >>> declared_range(error_rate, "error_rate")
        MetricRange(0.0, 1.0, rate=False)

    Raises:
        TypeError: the attribute is neither a ``MetricRange`` nor a ``(low, high)`` pair.
    """
    declared = getattr(fn, "fitlens_range", None)
    if declared is None or isinstance(declared, MetricRange):
        return declared
    if isinstance(declared, tuple | list) and len(declared) == 2:
        low, high = declared
        try:
            return MetricRange(
                -math.inf if low is None else float(low), math.inf if high is None else float(high)
            )
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name!r}.fitlens_range: {e}") from None
    raise TypeError(
        f"Expected {name!r}.fitlens_range to be a (low, high) pair (None: no bound) or a "
        f"fitlens MetricRange. Received: {declared!r}; e.g. fn.fitlens_range = (0.0, 1.0)."
    )


def for_name(name: str) -> MetricRange:
    """The range of a built-in metric or loss from its name, ``val_`` prefix allowed.

    Args:
        name: a metric name as fitlens and Keras log it (``"accuracy"``, ``"val_loss"``...).

    Returns:
        `RATE` for accuracies, `NONNEGATIVE` for losses and errors, else `UNBOUNDED`.
    """
    base = name.removeprefix("val_")
    if base in _RATE_NAMES or base.endswith("_accuracy"):
        return RATE
    if base in _NONNEGATIVE_NAMES or base.endswith("_loss"):
        return NONNEGATIVE
    return UNBOUNDED
