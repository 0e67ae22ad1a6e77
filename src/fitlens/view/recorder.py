"""Per-step bookkeeping with no host synchronisation, folded into estimators at refresh time.

During an epoch each training step hands the recorder its metric values as 0-d tensors that
stay on the device, plus the batch size and two host timings. The recorder only appends them
to Python lists. `flush` (called when the display refreshes and at epoch end) moves everything
pending to the host in *one* transfer, appends the rows to ``History.batches`` and updates each
metric's epoch mean and now estimate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fitlens.adapters.metrics import TrackedMetric
from fitlens.core.estimators import EpochMean, Estimator, make_estimator
from fitlens.core.history import BatchLog

#: Steps per estimator update. Larger blocks cost nothing in accuracy (the display adds the
#: partial block on a copy) and make the rounding independent of when the display refreshed.
BLOCK = 64


class Recorder:
    """Holds the pending per-step values and the estimators of every training metric.

    Args:
        names: metric names, the loss first, in the order `record` receives values.
        now: the now estimator (a name or a configured instance, cloned per metric). It runs
            across epoch boundaries: the model does not change when an epoch ends.
        batches: the batch log that flushed rows go to.
        stateful: the metrics whose epoch value comes from ``compute()`` (torchmetrics).
    """

    def __init__(
        self,
        names: Sequence[str],
        now: str | Estimator,
        batches: BatchLog,
        stateful: Sequence[TrackedMetric] = (),
    ) -> None:
        self.names = list(names)
        self.means = {n: EpochMean() for n in self.names}
        self.nows = {n: make_estimator(now) for n in self.names}
        self.batches = batches
        self.stateful = {m.name: m for m in stateful}
        self.epoch = 0
        self.steps_flushed = 0
        self.data_time = 0.0  # seconds this epoch, flushed steps only
        self.step_time = 0.0
        self._values: list[torch.Tensor] = []
        self._sizes: list[int] = []
        self._step_times: list[float] = []
        self._data_times: list[float] = []
        self._tail_values = np.empty((0, len(self.names)))  # host values not yet in a block
        self._tail_sizes = np.empty(0)

    def begin_epoch(self, epoch: int) -> None:
        """Reset the epoch means (not the now estimates) for 1-based ``epoch``."""
        if len(self._tail_sizes):  # the last epoch's partial block: the now estimates go on
            self._update(self._tail_values, self._tail_sizes, means=False)
        self._tail_values = np.empty((0, len(self.names)))
        self._tail_sizes = np.empty(0)
        self.epoch = epoch
        self.steps_flushed = 0
        self.data_time = self.step_time = 0.0
        for m in self.means.values():
            m.reset()
        for metric in self.stateful.values():
            metric.reset()

    def record(
        self, values: Sequence[torch.Tensor], size: int, step_time: float, data_time: float
    ) -> None:
        """Queue one step: ``values`` in the order of ``names``, still on the device."""
        self._values.extend(values)
        self._sizes.append(size)
        self._step_times.append(step_time)
        self._data_times.append(data_time)

    @property
    def pending(self) -> int:
        return len(self._sizes)

    def flush(self) -> None:
        """Move pending values to the host (one sync) and update estimators and the log."""
        n = len(self._sizes)
        if n == 0:
            return
        values = torch.stack(self._values).to("cpu", torch.float64).numpy()
        values = values.reshape(n, len(self.names))
        sizes = np.asarray(self._sizes, dtype=np.float64)
        step_times = np.asarray(self._step_times)
        data_times = np.asarray(self._data_times)
        row = {
            "epoch": np.full(n, self.epoch),
            "step": np.arange(self.steps_flushed + 1, self.steps_flushed + n + 1),
            "size": sizes,
            "step_time": step_times,
            "data_time": data_times,
        }
        for i, name in enumerate(self.names):
            row[name] = values[:, i]
        self.batches.append(row)
        self._commit_blocks(values, sizes)
        self.steps_flushed += n
        self.step_time += float(step_times.sum())
        self.data_time += float(data_times.sum())
        self._values.clear()
        self._sizes.clear()
        self._step_times.clear()
        self._data_times.clear()

    def _commit_blocks(self, values: np.ndarray, sizes: np.ndarray) -> None:
        """Feed the estimators whole blocks of `BLOCK` steps; keep the rest as the tail.

        Blocks start at the epoch's first step and every `BLOCK` steps after it, whatever the
        refresh timing, so the estimators see the same updates in every run of the same data
        (a resumed run included) and their floating-point rounding is reproducible.
        """
        tail_v = np.concatenate([self._tail_values, values])
        tail_w = np.concatenate([self._tail_sizes, sizes])
        whole = len(tail_w) - len(tail_w) % BLOCK
        for start in range(0, whole, BLOCK):
            self._update(tail_v[start : start + BLOCK], tail_w[start : start + BLOCK])
        self._tail_values, self._tail_sizes = tail_v[whole:], tail_w[whole:]

    def _update(self, values: np.ndarray, sizes: np.ndarray, means: bool = True) -> None:
        for i, name in enumerate(self.names):
            if means:
                self.means[name].update(values[:, i], sizes)
            self.nows[name].update(values[:, i], sizes)

    def _with_tail(self, est: Estimator, column: int) -> float:
        if not len(self._tail_sizes):
            return est.value
        copy = est.clone()
        copy.load_state_dict(est.state_dict())
        copy.update(self._tail_values[:, column], self._tail_sizes)
        return copy.value

    def state_dict(self) -> dict[str, Any]:
        """Estimator states and epoch counters, for a checkpoint; call after `flush`.

        Stateful (torchmetrics) metrics are not included: after a mid-epoch resume their epoch
        value covers the batches trained since the resume.
        """
        if self.pending:
            raise RuntimeError("Recorder.state_dict() needs a flush() first: steps are pending.")
        return {
            "epoch": self.epoch,
            "steps_flushed": self.steps_flushed,
            "data_time": self.data_time,
            "step_time": self.step_time,
            "means": {n: e.state_dict() for n, e in self.means.items()},
            "nows": {n: e.state_dict() for n, e in self.nows.items()},
            "tail_values": self._tail_values.copy(),
            "tail_sizes": self._tail_sizes.copy(),
        }

    def load_state_dict(self, state: dict[str, Any], epoch_means: bool = True) -> None:
        """Restore a `state_dict` taken from a recorder with the same metric names.

        With ``epoch_means=False`` only the now estimates are restored (a run resumed at an
        epoch boundary starts fresh epoch means but continues the now estimates).
        """
        if set(state["means"]) != set(self.names):
            raise ValueError(
                f"The checkpoint tracks metrics {sorted(state['means'])}, this run tracks "
                f"{sorted(self.names)}. Resume with the same `metrics`."
            )
        for n in self.names:
            self.nows[n].load_state_dict(state["nows"][n])
        tail_values = np.array(state["tail_values"], dtype=np.float64)
        tail_sizes = np.array(state["tail_sizes"], dtype=np.float64)
        if not epoch_means:  # the saved epoch ended: its partial block goes to the now estimates
            if len(tail_sizes):
                self._update(tail_values, tail_sizes, means=False)
            return
        self._tail_values, self._tail_sizes = tail_values, tail_sizes
        self.epoch = int(state["epoch"])
        self.steps_flushed = int(state["steps_flushed"])
        self.data_time = float(state["data_time"])
        self.step_time = float(state["step_time"])
        for n in self.names:
            self.means[n].load_state_dict(state["means"][n])

    def mean(self, name: str) -> float:
        """The epoch value: the running mean, or ``compute()`` for a stateful metric."""
        if name in self.stateful and self.steps_flushed > 0:
            return self.stateful[name].compute()
        return self._with_tail(self.means[name], self.names.index(name))

    def now(self, name: str) -> float:
        """The now estimate of ``name`` over every flushed step."""
        return self._with_tail(self.nows[name], self.names.index(name))

    def snapshot(self) -> dict[str, tuple[float, float]]:
        """``{name: (epoch mean, now estimate)}`` after a flush."""
        return {n: (self.mean(n), self.now(n)) for n in self.names}

    def logs(self) -> dict[str, float]:
        """``{name: epoch mean, name_now: now estimate}``, flushing first."""
        self.flush()
        out: dict[str, float] = {}
        for name, (mean, now) in self.snapshot().items():
            out[name] = mean
            out[f"{name}_now"] = now
        return out

    def last_batch(self, name: str) -> float:
        """The last flushed batch value of ``name`` (NaN if none)."""
        col = self.batches[name]
        return float(col[-1]) if len(col) else math.nan
