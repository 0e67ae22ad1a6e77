"""A run's per-batch values, fed to each metric's estimators in fixed blocks of steps.

`MetricStream` receives batch values already on the host (numpy), in chunks of any length: one
chunk per display refresh. It appends them to ``History.batches`` and updates every metric's
epoch mean and now estimate in blocks of `BLOCK` steps that start at the epoch's first step,
whatever the chunk boundaries. Floating-point sums then round the same way however often the
display refreshed (and in a resumed run), so a `History` depends only on the values. The steps
of the last, partial block are added on a copy when a value is read; at the next epoch start
they go to the now estimates, which run across epoch boundaries.

Numpy only: no torch, no framework.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from fitlens.core.estimators import (
    NOW_LEVEL,
    EpochMean,
    Estimator,
    NowEstimate,
    fit_together,
    make_estimator,
    update_blocks_together,
    with_batches_together,
)
from fitlens.core.estimators.base import check_weights
from fitlens.core.history import BatchLog
from fitlens.core.metric_range import UNBOUNDED, MetricRange

#: Steps per estimator update. Larger blocks cost nothing in accuracy (a value read mid-block
#: adds the partial block on a copy) and make the rounding independent of the refresh timing.
BLOCK = 64


class Blocks:
    """The rows not yet in a whole block of `BLOCK` steps, and the cut into blocks.

    Every reader of batch values that feeds estimators (`MetricStream` during training, the
    report's replay of the now estimate) cuts the rows with this one class, so their sums round
    alike, bit for bit.

    Args:
        columns: values per row (one per metric).
    """

    def __init__(self, columns: int) -> None:
        self.values = np.empty((0, columns))
        self.weights = np.empty((0, columns))

    def push(self, values: np.ndarray, weights: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Append ``(rows, columns)`` values and weights; return the blocks now whole, in order."""
        v = np.concatenate([self.values, values])
        w = np.concatenate([self.weights, weights])
        whole = len(w) - len(w) % BLOCK
        self.values, self.weights = v[whole:], w[whole:]
        return [(v[i : i + BLOCK], w[i : i + BLOCK]) for i in range(0, whole, BLOCK)]

    def pop(self) -> tuple[np.ndarray, np.ndarray]:
        """The partial block (possibly empty), removed."""
        out = self.values, self.weights
        self.values, self.weights = out[0][:0], out[1][:0]
        return out

    def read(self, est: Estimator, column: int) -> float:
        """``est``'s value with the partial block's ``column`` added (on a copy)."""
        if not len(self.weights):
            return est.value
        return est.value_with(self.values[:, column], self.weights[:, column])

    def added_together(self, ests: Sequence[Estimator], columns: Sequence[int]) -> list[Estimator]:
        """Each of ``ests`` with the partial block's column of the same index added: copies,
        equal bit for bit to ``est.with_batches`` of that column, with every estimator's lines
        updated in one stacked update (`with_batches_together`); ``ests`` themselves when the
        partial block is empty."""
        if not len(self.weights):
            return list(ests)
        columns = list(columns)
        return with_batches_together(ests, self.values[:, columns], self.weights[:, columns])

    def estimate(self, est: Estimator, column: int, level: float = NOW_LEVEL) -> NowEstimate:
        """``est``'s value and ``level`` interval with the partial block added: one fit."""
        if not len(self.weights):
            return est.estimate(level)
        return est.estimate_with(self.values[:, column], self.weights[:, column], level)


class EpochValue(Protocol):
    """A metric that computes its own epoch value (e.g. a torchmetrics ``Metric``)."""

    def compute(self) -> float: ...

    def reset(self) -> None: ...


class MetricStream:
    """The epoch means and now estimates of a run's metrics, fed from its batch values.

    Args:
        names: metric names, in the order of the value columns handed to `append`.
        now: the now estimator (a name or a configured instance, cloned per metric).
        batches: the batch log the rows go to.
        epoch_values: metrics whose epoch value is not the mean of their batch values (a
            torchmetrics metric's ``compute()``): name -> the metric, reset at epoch starts.
        ranges: each metric's `MetricRange` (its now estimate and interval stay inside);
            a metric not named is unbounded.

    Attributes:
        epoch: the 0-based epoch being recorded. rows: its rows in ``batches`` so far.
        data_time, step_time: seconds of data wait and of steps in this epoch's rows.
        nows: each metric's now estimator. Whole blocks reach it when a now is read (`now`,
            `estimate`, `snapshot`, `state_dict`): a display reads the nows a few times an
            epoch, and the blocks in between then take one stacked update.
    """

    def __init__(
        self,
        names: Sequence[str],
        now: str | Estimator,
        batches: BatchLog,
        epoch_values: Mapping[str, EpochValue] | None = None,
        ranges: Mapping[str, MetricRange] | None = None,
    ) -> None:
        self.names = list(names)
        if batches.metric_names != self.names:
            raise ValueError(
                f"Expected a batch log with the metric columns {self.names}, in that order. "
                f"Received one with {batches.metric_names}: pass `BatchLog(names)`."
            )
        self.ranges = {n: (ranges or {}).get(n, UNBOUNDED) for n in self.names}
        self.means = {n: EpochMean() for n in self.names}
        self.nows = {n: make_estimator(now, self.ranges[n]) for n in self.names}
        self.batches = batches
        self.epoch_values = dict(epoch_values or {})
        self.epoch = 0
        self.rows = 0
        self.data_time = self.step_time = 0.0
        self._tail = Blocks(len(self.names))
        # whole blocks not yet in the now estimates: they take them all at once when read
        # (`_nows`), in the same order, so their sums are those of one update per block
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    def begin_epoch(self, epoch: int) -> None:
        """Start 0-based ``epoch``: reset the epoch means; the now estimates go on."""
        values, weights = self._tail.pop()
        if len(weights):  # the last epoch's partial block
            self._update(values, weights, means=False)
        self.epoch, self.rows = epoch, 0
        self.data_time = self.step_time = 0.0
        for m in self.means.values():
            m.reset()
        for metric in self.epoch_values.values():
            metric.reset()

    def append(
        self,
        steps: np.ndarray,
        values: np.ndarray,
        weights: np.ndarray,
        sizes: np.ndarray,
        step_times: np.ndarray,
        data_times: np.ndarray,
    ) -> None:
        """Add ``n`` batch rows of this epoch.

        Args:
            steps: (n,) each row's 1-based step in the epoch (a group's last batch).
            values: (n, metrics) float64 values, columns in the order of ``names``.
            weights: (n, metrics) the weight (samples) behind each value; 0 leaves it out.
            sizes: (n,) samples per row. step_times, data_times: (n,) seconds.
        """
        # 1-based epoch in the log, as shown; the log's metric columns are `names`, in order
        self.batches.append_block(self.epoch + 1, steps, sizes, step_times, data_times, values)
        self.rows += len(steps)
        self.step_time += float(step_times.sum())
        self.data_time += float(data_times.sum())
        fed = np.where(weights > 0, values, 0.0)  # a weightless value must not turn sums NaN
        for block_values, block_weights in self._tail.push(fed, weights):
            self._update(block_values, block_weights)

    def _update(self, values: np.ndarray, weights: np.ndarray, means: bool = True) -> None:
        check_weights(weights)  # once for every column: the means take them unchecked
        if means:
            for i, name in enumerate(self.names):
                self.means[name].add(values[:, i], weights[:, i])
        self._pending.append((values, weights))

    def _nows(self) -> dict[str, Estimator]:
        """The now estimates with every block so far (the pending ones in one stacked update)."""
        if self._pending:
            update_blocks_together([self.nows[n] for n in self.names], self._pending)
            self._pending = []
        return self.nows

    def mean(self, name: str) -> float:
        """The epoch value: the running mean, or the metric's own epoch value when it has one."""
        own = self.epoch_values.get(name)
        if own is not None and self.rows > 0:
            return own.compute()
        return self._tail.read(self.means[name], self.names.index(name))

    def now(self, name: str) -> float:
        """The now estimate of ``name`` over every row so far."""
        return self._tail.read(self._nows()[name], self.names.index(name))

    def estimate(self, name: str, level: float = NOW_LEVEL) -> NowEstimate:
        """The now estimate of ``name`` with its ``level`` interval, from one fit."""
        return self._tail.estimate(self._nows()[name], self.names.index(name), level)

    def weight(self, name: str) -> float:
        """The weight (samples) behind ``name``'s epoch mean so far."""
        column = self.names.index(name)
        return self.means[name].count + float(self._tail.weights[:, column].sum())

    def snapshot(self) -> dict[str, tuple[float, NowEstimate]]:
        """``{name: (epoch mean, now estimate with its interval)}``: one fit per metric.

        A metric with its own epoch value (a torchmetrics ``compute()``) gets a now estimate
        only while that value is the sample-weighted mean of its batch values (`is_mean`):
        the now is a trend through batch values, and estimates the same quantity as the epoch
        value only then. An F1 or an AUROC over the epoch is not the mean of per-batch F1s:
        its now is NaN (no now), and no estimator is read for it.
        """
        means = {n: self.mean(n) for n in self.names}
        read = [n for n in self.names if n not in self.epoch_values or self.is_mean(n, means[n])]
        columns = [self.names.index(n) for n in read]
        estimators = self._nows()
        added = self._tail.added_together([estimators[n] for n in read], columns)
        nows = dict(zip(read, added, strict=True))
        fit_together(nows.values())  # every metric's lines in one stacked solve: same fits
        return {
            n: (means[n], nows[n].estimate(NOW_LEVEL) if n in nows else NowEstimate(math.nan))
            for n in self.names
        }

    def is_mean(self, name: str, epoch_value: float | None = None) -> bool:
        """Whether ``name``'s epoch value equals the sample-weighted mean of its batch values
        this epoch, up to float32 rounding (relative 1e-5: about a hundred float32 steps).

        Always true for a metric without an own epoch value, and before the epoch's first row
        (one batch's value is its own mean). After a mid-epoch resume an own epoch value covers
        the batches since the resume only, so it is not the mean until the next epoch.
        """
        if name not in self.epoch_values or self.rows == 0:
            return True
        own = self.mean(name) if epoch_value is None else epoch_value
        mean = self._tail.read(self.means[name], self.names.index(name))
        return math.isclose(own, mean, rel_tol=1e-5, abs_tol=1e-7)

    def state_dict(self) -> dict[str, Any]:
        """Estimator states and epoch counters, for a checkpoint.

        Own epoch values (torchmetrics) are not included: after a mid-epoch resume their epoch
        value covers the batches trained since the resume.
        """
        return {
            "epoch": self.epoch,
            "rows": self.rows,
            "data_time": self.data_time,
            "step_time": self.step_time,
            "means": {n: e.state_dict() for n, e in self.means.items()},
            "nows": {n: e.state_dict() for n, e in self._nows().items()},
            "tail_values": self._tail.values.copy(),
            "tail_weights": self._tail.weights.copy(),
        }

    def load_state_dict(self, state: Mapping[str, Any], epoch_means: bool = True) -> None:
        """Restore a `state_dict` taken from a stream with the same metric names.

        With ``epoch_means=False`` only the now estimates are restored (a run resumed at an
        epoch boundary starts fresh epoch means but continues the now estimates).
        """
        if set(state["means"]) != set(self.names):
            raise ValueError(
                f"The checkpoint tracks metrics {sorted(state['means'])}, this run tracks "
                f"{sorted(self.names)}. Resume with the same `metrics`."
            )
        self._pending = []  # blocks of the state being replaced
        for n in self.names:
            self.nows[n].load_state_dict(state["nows"][n])
        tail_values = np.array(state["tail_values"], dtype=np.float64)
        tail_weights = np.array(state["tail_weights"], dtype=np.float64)
        if not epoch_means:  # the saved epoch ended: its partial block goes to the now estimates
            if len(tail_weights):
                self._update(tail_values, tail_weights, means=False)
            return
        self._tail.values, self._tail.weights = tail_values, tail_weights
        self.epoch = int(state["epoch"])
        self.rows = int(state["rows"])
        self.data_time = float(state["data_time"])
        self.step_time = float(state["step_time"])
        for n in self.names:
            self.means[n].load_state_dict(state["means"][n])


__all__ = ["BLOCK", "Blocks", "EpochValue", "MetricStream"]
