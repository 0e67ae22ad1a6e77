"""fitlens's view of a training loop it does not run: the shared core of the framework callbacks.

`fitlens.keras` and `fitlens.lightning` turn their framework's hooks into calls on a
`RunObserver`: ``begin_epoch``, ``batch_begin`` / ``batch_end`` per training batch (or group of
batches) with that batch's value and weight per metric, and ``end_epoch`` with the validation
values. The observer keeps the same records as `fitlens.fit` (a `History` whose ``history`` has
``m``, ``m_now`` and ``val_m``, and one `BatchLog` row per batch), drives the same `Progress`
display, and writes the same end-of-epoch lines, made by the same code
(`fitlens.view.epoch_end.EpochEndLines`), for the *headline* metric: the first metric other than the
loss that has per-batch values (else the loss), preferring one with a validation value:

* the free (estimated) gap line, ``mean -> now -> val``: the averaging lag (the model improved
  while the epoch mean was accumulating), then what remains between the model now (train mode)
  and validation (train/eval-mode effects and the generalisation gap together). The frameworks
  hand over validation means without per-sample spreads, so the validation value has no
  interval. Written when the headline has a validation value;
* the forecast: the first batches of the next epoch will show about the now estimate, not the
  epoch mean the display ends on; and, once those batches are in, the forecast check.

``History.gaps`` gets one record per epoch end, as in `fitlens.fit`.

Values arrive as Python floats (the frameworks sync them already); the observer buffers them and
updates estimators and the batch log at display refreshes, in numpy. It imports neither torch
nor any framework.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fitlens.core.estimators import DEFAULT_NOW, EpochMean, Estimator, make_estimator
from fitlens.core.gap import Measured
from fitlens.core.history import BatchLog, History
from fitlens.view.epoch_end import EpochEndLines
from fitlens.view.progress import Progress, ProgressState
from fitlens.view.timing import Clock, StepTimer, default_clock, run_remaining


class RunObserver:
    """Records and displays a run from per-batch values handed in by a framework callback.

    Args:
        progress: the display (`Progress`), as in `fitlens.fit`.
        now: the now estimator, a name or a configured `Estimator` (cloned per metric).
        clock: seconds as a float; ``time.perf_counter`` unless injected.
        params: settings stored in ``history.params``.

    Attributes:
        history: the `History`; its batch log gets its metric columns at the first batch.
    """

    def __init__(
        self,
        progress: Progress,
        now: str | Estimator = DEFAULT_NOW,
        clock: Clock | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        make_estimator(now)  # validates before training starts
        self.progress = progress
        self.now_spec = now
        self.clock = clock or default_clock()
        self.history = History((), params={**(params or {}), "now": repr(now)})
        self.names: list[str] = []
        self.valued: list[str] = []  # metrics with per-batch values (and so a now estimate)
        self.lines = EpochEndLines()
        self.rows = 0  # batch-log rows of this epoch
        self.means: dict[str, EpochMean] = {}
        self.nows: dict[str, Estimator] = {}
        self.reported: dict[str, float] = {}  # metrics whose epoch value the framework gives
        self.timer = StepTimer()
        self.epochs = 1
        self.steps: int | None = None
        self.epoch = 0
        self.eval_seconds = math.nan
        self.step = self.refreshed_step = 0
        self.data_time = self.step_time = 0.0
        self.epoch_start = self.last_end = self.last_refresh = self.batch_start = 0.0
        self.next_refresh = 0.0
        self._pending: list[tuple[int, float, float, float, list[float], list[float]]] = []

    def begin_train(self, epochs: int, steps: int | None) -> None:
        """Set the run's length: ``epochs`` (>= 1) and ``steps`` per epoch (None: unknown)."""
        self.epochs, self.steps = max(int(epochs), 1), steps
        self.history.params.update(epochs=self.epochs, steps=steps)

    def begin_epoch(self, epoch: int) -> None:
        """Start 0-based ``epoch``: reset the epoch means (not the now estimates)."""
        self.epoch = epoch
        self.epochs = max(self.epochs, epoch + 1)
        for m in self.means.values():
            m.reset()
        self.reported.clear()
        self.step = self.rows = 0
        self.data_time = self.step_time = 0.0
        self.epoch_start = self.last_end = self.last_refresh = self.clock()
        self.batch_start = self.epoch_start
        self.refreshed_step = 0
        self.next_refresh = self.epoch_start
        self.progress.begin_epoch(epoch + 1, self.epochs, self.steps)

    def batch_begin(self) -> None:
        """A training batch (or group) starts: the time since the last one ended was data wait."""
        self.batch_start = self.clock()

    def batch_end(
        self,
        step: int,
        values: Mapping[str, float],
        weights: Mapping[str, float],
        size: float,
        reported: Mapping[str, float] | None = None,
    ) -> None:
        """A training batch (or a group of them) is done.

        Args:
            step: 1-based index of the epoch's last batch done so far.
            values: each metric's value over the batch (or group).
            weights: the weight (samples) behind each value; missing metrics weigh 0.
            size: samples in the batch (or group), for the batch log.
            reported: metrics with no per-batch value (not a mean); shown as the framework's
                own running value, with no now estimate.
        """
        t = self.clock()
        start = max(self.batch_start, self.last_end)
        if not self.names:
            self._set_names(sorted(values, key=lambda n: n != "loss") + list(reported or {}))
            self.valued = [n for n in self.names if n in values]
        vals = [float(values.get(n, math.nan)) for n in self.names]
        wts = [float(weights.get(n, 0.0)) if n in values else 0.0 for n in self.names]
        self._pending.append(
            (step, float(size), t - start, max(start - self.last_end, 0.0), vals, wts)
        )
        if reported:
            self.reported.update({k: float(v) for k, v in reported.items() if k in self.means})
        done = step - self.step
        self.step, self.last_end = step, t
        line_every = self.progress.line_every
        if t >= self.next_refresh or step == done or (line_every and step % line_every < done):
            self.flush()
            self.timer.observe(step - self.refreshed_step, t - self.last_refresh)
            self.last_refresh, self.refreshed_step = t, step
            self.next_refresh = t + self.progress.refresh_interval
            self.progress.refresh(self._state(t - self.epoch_start))
            self._check_forecast()

    def end_epoch(self, validation: Mapping[str, float] | None = None) -> dict[str, float]:
        """Close the epoch: record it in the history, show its summary; returns its logs."""
        self.flush()
        self._check_forecast()
        end = self.clock()
        self.timer.observe(self.step - self.refreshed_step, self.last_end - self.last_refresh)
        validation = {k: float(v) for k, v in (validation or {}).items()}
        if validation:
            self.eval_seconds = end - self.last_end
        snapshot = self.snapshot()
        logs: dict[str, float] = {}
        for name, (mean, now) in snapshot.items():
            logs[name], logs[f"{name}_now"] = mean, now
        logs.update(validation)
        self.history.record_epoch(
            self.epoch,
            logs,
            {
                "time": end - self.epoch_start,
                "data_wait": self.data_time,
                "compute": self.step_time,
                "eval": end - self.last_end,
            },
        )
        self.progress.end_epoch(self._state(end - self.epoch_start, validation))
        headline = self._headline(validation)
        if headline is not None:
            epoch_end = self.lines.end_epoch(
                self.epoch,
                headline,
                {n: snapshot[n][0] for n in self.valued},
                {n: snapshot[n][1] for n in self.valued},
                {
                    n: Measured(validation[f"val_{n}"])
                    for n in self.valued
                    if f"val_{n}" in validation
                }
                or None,
                self.history.batches,
                self.rows,
                self.steps or self.step,  # unknown: this epoch's length, as fit learns it
                last=self.epoch + 1 >= self.epochs,
            )
            self.history.gaps.append(epoch_end.gaps)
            for line in epoch_end.lines:
                self.progress.write(line)
        return logs

    def _headline(self, validation: Mapping[str, float]) -> str | None:
        """The first metric other than the loss (else the loss), preferring one validated."""
        candidates = sorted(self.valued, key=lambda n: n == "loss")
        validated = [n for n in candidates if f"val_{n}" in validation]
        return (validated or candidates)[0] if candidates else None

    def _check_forecast(self) -> None:
        line = self.lines.check(self.history.batches, self.rows)
        if line is not None:
            self.progress.write(line)

    def end_train(self) -> None:
        self.progress.close()

    def snapshot(self) -> dict[str, tuple[float, float]]:
        """``{name: (epoch mean, now estimate)}`` over the batches flushed so far."""
        out = {}
        for n in self.names:
            if n in self.reported:
                out[n] = (self.reported[n], math.nan)
            else:
                out[n] = (self.means[n].value, self.nows[n].value)
        return out

    def _set_names(self, names: Sequence[str]) -> None:
        self.names = list(dict.fromkeys(names))
        self.means = {n: EpochMean() for n in self.names}
        self.nows = {n: make_estimator(self.now_spec) for n in self.names}
        self.history.batches = BatchLog(self.names)
        self.history.params["metrics"] = list(self.names)

    def flush(self) -> None:
        """Fold the buffered batches into the estimators and the batch log."""
        if not self._pending:
            return
        steps, sizes, step_times, data_times, vals, wts = zip(*self._pending, strict=True)
        self._pending.clear()
        values, weights = np.array(vals, dtype=np.float64), np.array(wts, dtype=np.float64)
        row: dict[str, Any] = {
            "epoch": np.full(len(steps), self.epoch + 1),
            "step": np.array(steps),
            "size": np.array(sizes),
            "step_time": np.array(step_times),
            "data_time": np.array(data_times),
        }
        for i, name in enumerate(self.names):
            v, w = values[:, i], weights[:, i]
            row[name] = v
            fed = np.where(w > 0, v, 0.0)  # a weightless batch must not turn the sums NaN
            self.means[name].update(fed, w)
            self.nows[name].update(fed, w)
        self.history.batches.append(row)
        self.rows += len(steps)
        self.step_time += float(sum(step_times))
        self.data_time += float(sum(data_times))

    def _state(
        self, elapsed: float, validation: Mapping[str, float] | None = None
    ) -> ProgressState:
        left = None if self.steps is None else max(self.steps - self.step, 0)
        return ProgressState(
            epoch=self.epoch + 1,
            epochs=self.epochs,
            step=self.step,
            steps=self.steps,
            elapsed=elapsed,
            eta_epoch=math.nan if left is None else self.timer.remaining(left),
            eta_run=run_remaining(
                self.timer,
                steps_left_in_epoch=left,
                epochs_left_after=self.epochs - self.epoch - 1,
                steps_per_epoch=self.steps,
                eval_seconds=self.eval_seconds,
                evals_left=self.epochs - self.epoch if math.isfinite(self.eval_seconds) else 0,
            ),
            data_share=self.data_time / elapsed if elapsed > 0 else math.nan,
            metrics=self.snapshot(),
            validation=validation or {},
        )
