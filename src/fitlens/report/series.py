"""Per-batch curves of a recorded run: positions in epochs, running means, the now estimate.

`History.batches` stores each batch's value; the running mean and the now estimate that the
display showed are not stored per batch. They are rebuilt here from the batch values:

* the running mean of batch ``i`` is the sample-weighted mean of its epoch's batches up to ``i``
  (what Keras shows), computed with cumulative sums in one vectorised pass;
* the now estimate is *replayed*: the estimator the run used (``history.params["now"]``) is fed
  the same batches in the same blocks as `fitlens.core.stream.MetricStream` feeds it (blocks of
  `BLOCK` steps from each epoch's first step, the partial last block added on a copy, handed on
  at the next epoch's start), so at every epoch end the replay equals ``history["m_now"]``
  bit for bit for a run recorded by `fitlens.fit`.

A batch sits at ``x = epoch - 1 + step / steps`` epochs (``steps``: the epoch's length), so
epoch ``e`` spans ``(e - 1, e]`` and its end-of-epoch values sit at ``x = e``, whatever the
number of batches or epochs.

numpy only: no torch, no matplotlib.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fitlens.core.estimators import DEFAULT_NOW, Estimator, make_estimator, update_together
from fitlens.core.metric_range import UNBOUNDED, MetricRange
from fitlens.core.stream import BLOCK, Blocks

_ESTIMATORS = {
    "EpochMean",
    "EMA",
    "WindowMean",
    "LastValue",
    "TrendWindow",
    "EMATrend",
    "AdaptiveTrend",
}


def now_estimator(spec: Any) -> Estimator:
    """The now estimator a run used, from ``history.params["now"]``.

    `fit` stores the name as given (``"ema_trend"``) or an instance's repr
    (``"EMATrend(memory=800.0)"``); runs written before stored a name's repr too
    (``"'ema_trend'"``), which still reads. Anything else (a custom estimator class, a missing
    key) gives the default.

    Example:
        >>> now_estimator("EMA(beta=0.9)")
        EMA(beta=0.9)
        >>> now_estimator("ema_trend"), now_estimator("'ema_trend'")
        (EMATrend(memory=800.0), EMATrend(memory=800.0))
    """
    import fitlens.core.estimators as estimators

    if isinstance(spec, Estimator):
        return spec.clone()
    if isinstance(spec, str) and spec.isidentifier():
        try:
            return make_estimator(spec)
        except ValueError:
            return make_estimator(DEFAULT_NOW)
    try:
        node = ast.parse(str(spec), mode="eval").body
    except SyntaxError:
        return make_estimator(DEFAULT_NOW)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return make_estimator(node.value)
        except ValueError:
            return make_estimator(DEFAULT_NOW)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _ESTIMATORS
        and not node.args
    ):
        try:
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
            est: Estimator = getattr(estimators, node.func.id)(**kwargs)
        except (ValueError, TypeError):
            return make_estimator(DEFAULT_NOW)
        return est
    return make_estimator(DEFAULT_NOW)


def epoch_starts(epochs: np.ndarray) -> np.ndarray:
    """Row indices where a new epoch starts (always including 0 for a non-empty log)."""
    e = np.asarray(epochs)
    if e.size == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([[0], np.flatnonzero(e[1:] != e[:-1]) + 1]).astype(np.int64)


def positions(epochs: np.ndarray, steps: np.ndarray, steps_per_epoch: int | None) -> np.ndarray:
    """Each batch's position in epochs: ``epoch - 1 + step / length``.

    ``length`` is ``steps_per_epoch`` or, when an epoch has more steps (or it is unknown), the
    epoch's largest recorded step: an epoch still running occupies the fraction it has done.
    """
    e = np.asarray(epochs, dtype=np.float64)
    s = np.asarray(steps, dtype=np.float64)
    length = np.empty_like(s)
    starts = epoch_starts(epochs)
    ends = np.append(starts[1:], s.size)
    for a, b in zip(starts, ends, strict=True):
        longest = float(s[a:b].max())
        length[a:b] = max(longest, float(steps_per_epoch or 0))
    return e - 1.0 + s / np.maximum(length, 1.0)


def running_mean(values: np.ndarray, sizes: np.ndarray, epochs: np.ndarray) -> np.ndarray:
    """The sample-weighted running mean within each epoch, for every batch.

    A NaN batch makes the rest of its epoch's mean NaN (as the training loss does) and the next
    epoch starts afresh.

    Example:
        >>> running_mean(np.array([1.0, 3.0, 5.0]), np.array([1, 1, 2]), np.array([1, 1, 2]))
        array([1., 2., 5.])
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(sizes, dtype=np.float64)
    bad = ~np.isfinite(v)
    vw = np.where(bad, 0.0, v * w)
    out = np.empty_like(v)
    starts = epoch_starts(epochs)
    ends = np.append(starts[1:], v.size)
    for a, b in zip(starts, ends, strict=True):
        total = np.cumsum(vw[a:b])
        count = np.cumsum(w[a:b])
        with np.errstate(invalid="ignore", divide="ignore"):
            out[a:b] = total / count
        out[a:b][np.cumsum(bad[a:b]) > 0] = math.nan
    return out


class NowReplay:
    """Feeds batch values to now estimators exactly as `fitlens.core.stream.MetricStream` does.

    One estimator per column of a ``(rows, metrics)`` table, cut into blocks by the stream's own
    `fitlens.core.stream.Blocks` (same blocks, same memory layout: numpy sums in the same order
    and the results match bit for bit). Call `add` with rows in
    training order, any number at a time; `values` are the estimates after the last row added,
    the partial block included (on a copy).

    Args:
        columns: how many metrics (the batch log's metric columns, in order).
        spec: the run's ``params["now"]`` or an `Estimator`.
        ranges: each column's range (the run's ``params["ranges"]``, see `column_ranges`);
            None: unbounded, as runs recorded before ranges were.
    """

    def __init__(
        self, columns: int, spec: Any = DEFAULT_NOW, ranges: Sequence[MetricRange] | None = None
    ) -> None:
        bounds = list(ranges) if ranges is not None else [UNBOUNDED] * columns
        self.estimators = [now_estimator(spec).clone(b) for b in bounds]
        self.epoch: int | None = None
        self._tail = Blocks(columns)
        self._cached: list[float] | None = None

    def add(self, values: np.ndarray, sizes: np.ndarray, epoch: int) -> None:
        """Add rows (a ``(rows, columns)`` array) of 1-based ``epoch``.

        A new epoch first hands the previous epoch's partial block to the estimators.
        """
        if epoch != self.epoch:
            self._update(*self._tail.pop())
            self.epoch = epoch
        v = np.asarray(values, dtype=np.float64)
        w = np.repeat(np.asarray(sizes, dtype=np.float64)[:, None], v.shape[1], axis=1)
        for block in self._tail.push(v, w):
            self._update(*block)
        self._cached = None

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        if len(weights):  # as `MetricStream` updates them: the same rounding, bit for bit
            update_together(self.estimators, values, weights)

    @property
    def values(self) -> list[float]:
        """Each column's estimate after every row added so far (NaN before any)."""
        if self._cached is None:
            self._cached = [self._tail.read(est, i) for i, est in enumerate(self.estimators)]
        return self._cached


def replay_now(
    table: np.ndarray,
    sizes: np.ndarray,
    epochs: np.ndarray,
    spec: Any = DEFAULT_NOW,
    points: int = 2000,
    ranges: Sequence[MetricRange] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The now estimates after selected batches, replayed as the run computed them.

    Evaluated after every ``stride``-th batch (``stride = ceil(n / points)``) and, unless there
    are more than ``points / 4`` epochs, after the last batch of every epoch, so the cost is
    bounded: ``n / BLOCK`` block updates plus at most ``1.25 * points`` reads, each adding at
    most ``BLOCK - 1`` batches to a copy.

    Args:
        table: ``(batches, metrics)``: every metric column of the batch log, in its order.
        sizes, epochs: the batch log's ``size`` and ``epoch`` columns.
        ranges: each metric's range, as in `NowReplay`.

    Returns:
        ``(rows, now)``: the row indices evaluated (increasing) and a ``(len(rows), metrics)``
        array of the estimates after each.
    """
    v = np.asarray(table, dtype=np.float64)
    w = np.asarray(sizes, dtype=np.float64)
    n = w.size
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, v.shape[1]))
    stride = max(1, math.ceil(n / max(points, 1)))
    starts = epoch_starts(epochs)
    ends = np.append(starts[1:], n)
    wanted = np.zeros(n, dtype=bool)
    wanted[stride - 1 :: stride] = True
    if 4 * len(starts) <= points:
        wanted[ends - 1] = True
    wanted[n - 1] = True
    replay = NowReplay(v.shape[1], spec, ranges)
    rows: list[int] = []
    out: list[list[float]] = []
    epoch_of = np.asarray(epochs)
    for a, b in zip(starts, ends, strict=True):
        epoch = int(epoch_of[a])
        cut = a
        for i in np.flatnonzero(wanted[a:b]) + a:
            replay.add(v[cut : i + 1], w[cut : i + 1], epoch)
            cut = i + 1
            rows.append(int(i))
            out.append(replay.values)
    return np.asarray(rows, dtype=np.int64), np.asarray(out).reshape(len(rows), v.shape[1])


def column_ranges(params: Mapping[str, Any], names: Sequence[str]) -> list[MetricRange]:
    """Each metric's range as the run recorded it in ``params["ranges"]`` (unbounded when it
    did not: runs written before ranges were recorded computed their estimates unbounded)."""
    recorded = params.get("ranges")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    return [MetricRange.from_param(recorded.get(n)) for n in names]


def metric_table(batches: Any, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``start:stop`` of the batch log's metric columns as one ``(rows, metrics)`` array."""
    names = batches.metric_names
    stop = len(batches) if stop is None else stop
    table = np.empty((max(0, stop - start), len(names)))
    for i, name in enumerate(names):
        table[:, i] = batches[name][start:stop]
    return table


@dataclass(frozen=True)
class EpochPoint:
    """A value measured at an epoch end (``x = epoch``), with its 95% interval when known."""

    x: np.ndarray
    value: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None


@dataclass(frozen=True)
class MetricCurves:
    """Everything drawn for one training metric of a run.

    Attributes:
        name: the metric's name.
        x: each batch's position in epochs. values: each batch's value. mean: the running mean
            after each batch. now_x, now: the replayed now estimate at selected batches.
        epoch_mean: the epoch's mean at each recorded epoch end (``history[name]``).
        measured: ``{"validation" | "train_mode" | "eval_mode": EpochPoint}``, those recorded.
    """

    name: str
    x: np.ndarray
    values: np.ndarray
    mean: np.ndarray
    now_x: np.ndarray
    now: np.ndarray
    epoch_mean: EpochPoint
    measured: Mapping[str, EpochPoint]


#: History keys of the values measured at epoch ends, by role.
MEASURED_KEYS = {
    "validation": "val_{}",
    "train_mode": "train_eval_train_mode_{}",
    "eval_mode": "train_eval_{}",
}


def history_curves(
    history: Any, names: Sequence[str] | None = None, points: int = 2000
) -> dict[str, MetricCurves]:
    """The curves of the training metrics ``names`` (default: all) of a `fitlens.History`.

    Args:
        history: a `History` (from `fit`, a callback, or `fitlens.read_history`).
        names: columns of ``history.batches``.
        points: about how many now-estimate points to compute (see `replay_now`).

    Raises:
        KeyError: For a name without per-batch values (the message lists those with them).
    """
    batches = history.batches
    known = batches.metric_names
    wanted = list(known if names is None else names)
    for name in wanted:
        if name not in known:
            raise KeyError(f"No per-batch values for {name!r} in this history; it records {known}.")
    epochs, sizes = batches["epoch"], batches["size"]
    x = positions(epochs, batches["step"], history.params.get("steps"))
    table = metric_table(batches)
    rows, now = replay_now(
        table,
        sizes,
        epochs,
        history.params.get("now", DEFAULT_NOW),
        points,
        column_ranges(history.params, batches.metric_names),
    )
    ends = np.asarray([e + 1 for e in history.epoch], dtype=np.float64)
    out = {}
    for name in wanted:
        i = known.index(name)
        measured: dict[str, EpochPoint] = {}
        for role, key in MEASURED_KEYS.items():
            column = history.history.get(key.format(name))
            if column is not None and np.isfinite(column).any():
                low, high = _intervals(history, name, role)
                measured[role] = EpochPoint(ends, np.asarray(column, dtype=np.float64), low, high)
        mean_column = history.history.get(name, [math.nan] * len(ends))
        out[name] = MetricCurves(
            name=name,
            x=x,
            values=table[:, i],
            mean=running_mean(table[:, i], sizes, epochs),
            now_x=x[rows],
            now=now[:, i],
            epoch_mean=EpochPoint(ends, np.asarray(mean_column, dtype=np.float64)),
            measured=measured,
        )
    return out


def _intervals(history: Any, name: str, role: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-epoch ``(low, high)`` from ``history.gaps`` when it holds them, else ``(None, None)``."""
    gaps = getattr(history, "gaps", None) or []
    by_epoch = {g.get("epoch"): g for g in gaps}
    if not by_epoch:
        return None, None
    low, high = [], []
    for e in history.epoch:
        m = (by_epoch.get(e + 1) or {}).get("metrics", {}).get(name, {}).get(role)
        low.append(math.nan if not m else _float(m.get("low")))
        high.append(math.nan if not m else _float(m.get("high")))
    if not np.isfinite(low).any():
        return None, None
    return np.asarray(low), np.asarray(high)


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


__all__ = [
    "BLOCK",
    "EpochPoint",
    "MetricCurves",
    "NowReplay",
    "column_ranges",
    "history_curves",
    "metric_table",
    "now_estimator",
    "positions",
    "replay_now",
    "running_mean",
]
