"""The lens: one view of a training run, whichever loop runs it.

`fitlens.fit`, `fitlens.keras.FitlensCallback` and `fitlens.lightning.FitlensCallback` all drive
one `Lens` with the same calls, so a number cannot mean two things:

* ``begin_run(epochs, steps)``, then per epoch ``begin_epoch(epoch)`` (0-based);
* per training step ``begin_step()`` (the wait for data ends), ``record(values, size)`` (the
  step's values: 0-d device tensors from `fit`, floats from a framework), ``refresh_if_due()``
  and ``end_step()`` (the wait for the next batch starts);
* ``end_epoch(validation)`` after the epoch's validation, and ``end_run()``.

The lens owns what every loop shares: the queue of per-step values, moved to the host in one
transfer per display refresh and fed to the estimators in fixed blocks (`MetricStream`); the
step timer and ETA; the display; the data-wait hint; and the end-of-epoch gap, forecast and
forecast-check lines. It reads the clock three times per step and does no other per-step work
than appending to lists, so the `History` it records depends on the values alone, not on when
the display refreshed.

A lens outlives a ``fit`` call: driven again (a callback reused across ``model.fit(epochs=1)``
calls, or `fitlens.fit` handed the `History` back), it continues the same run: epochs are
numbered on, rows accumulate, the estimators and the pending forecast carry across.

Imports no torch: values reach the host through the ``to_host`` function it is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from fitlens.core.estimators import DEFAULT_NOW, Estimator, NowEstimate, make_estimator
from fitlens.core.gap import Measured
from fitlens.core.history import BatchLog, History
from fitlens.core.metric_range import MetricRange, for_name
from fitlens.core.stream import EpochValue, MetricStream
from fitlens.view.data_wait import DataWaitHint
from fitlens.view.epoch_end import EpochEndLines
from fitlens.view.progress import Progress, ProgressState
from fitlens.view.timing import Clock, StepTimer, default_clock, run_remaining

#: Seconds between two reads of the now estimates for the display mid-epoch (a bar's redraws,
#: a log's lines): the values shown in between are the last read's.
NOW_READ_SECONDS = 0.5

#: A step no refresh is due at (line mode off).
_NEVER = 2**62

#: Numbers queued per step (see `Lens.record`).
_PER_STEP = 5

#: Moves the queued per-step values (a flat list, metric after metric per step) to the host.
ToHost = Callable[[list[Any]], np.ndarray]


class Rows(NamedTuple):
    """Per-step rows on the host, as a flush hands them to the estimators (n rows, k metrics)."""

    steps: np.ndarray  # (n,) 1-based step in the epoch
    values: np.ndarray  # (n, k)
    weights: np.ndarray  # (n, k) samples behind each value
    sizes: np.ndarray  # (n,) samples
    step_times: np.ndarray  # (n,) seconds
    data_times: np.ndarray  # (n,) seconds


#: Turns this process's rows into the run's rows (`fit` under DDP: every rank's, combined). The
#: lens calls it once per flush with rows; every process must then flush at the same steps.
ReduceRows = Callable[[Rows], Rows]


def now_param(now: str | Estimator) -> str:
    """How ``history.params["now"]`` (and so ``summary.json``) names the now estimator: the
    name as given (``"ema_trend"``), or a configured estimator's repr
    (``"EMATrend(memory=800.0)"``); `fitlens.report` reads either back."""
    return now if isinstance(now, str) else repr(now)


def now_logs(snapshot: Mapping[str, tuple[float, NowEstimate]]) -> dict[str, float]:
    """A snapshot as log keys: ``m`` (epoch mean), ``m_now``, ``m_now_low``, ``m_now_high``
    (the now estimate and its interval at `fitlens.core.estimators.NOW_LEVEL`, 90%; NaN for a
    metric with no now)."""
    out: dict[str, float] = {}
    for name, (mean, now) in snapshot.items():
        out[name], out[f"{name}_now"] = mean, now.value
        out[f"{name}_now_low"], out[f"{name}_now_high"] = now.low, now.high
    return out


def floats_to_host(values: list[Any]) -> np.ndarray:
    """`ToHost` for values that are already Python floats (what the frameworks hand over)."""
    return np.asarray(values, dtype=np.float64)


class Lens:
    """Records, estimates and displays one training run from its per-step values.

    Args:
        progress: the display.
        now: the now estimator, a name or a configured `Estimator` (cloned per metric).
        clock: seconds as a float; ``time.perf_counter`` unless injected (tests).
        history: the `History` to record into; pass one from an earlier run to continue it.
        to_host: moves queued values to the host (default: they are floats already).
        prefetch: `fit`'s read-ahead depth, for the data-wait hint's advice (None: not `fit`).

    Attributes:
        reduce: a `ReduceRows` called at each flush with rows (None: one process). With it the
            display refreshes on a step schedule, the same on every process: every
            ``refresh_interval`` worth of steps at the run's mean step time so far (data wait
            included, from the reduced rows, so all processes compute the same count).
        history: the `History` being recorded.
        epoch: the current 0-based epoch. step: steps done in it (1-based index of the last).
    """

    def __init__(
        self,
        progress: Progress,
        now: str | Estimator = DEFAULT_NOW,
        *,
        clock: Clock | None = None,
        history: History | None = None,
        to_host: ToHost = floats_to_host,
        prefetch: int | None = None,
    ) -> None:
        make_estimator(now)  # validates before training starts
        self.progress = progress
        self.now_spec = now
        self.clock = clock or default_clock()
        self.history = history if history is not None else History()
        self.history.params.setdefault("now", now_param(now))
        self.to_host = to_host
        self.reduce: ReduceRows | None = None
        self._due_step = 0  # a refresh is due at this step (a line, or `reduce`'s schedule)
        self.prefetch = prefetch
        self.stream: MetricStream | None = None
        self.valued: list[str] = []  # metrics with per-batch values (and so a now estimate)
        self.reported: dict[str, float] = {}  # a framework's own running value, no batch value
        self.lines = EpochEndLines()
        self.timer = StepTimer()
        self.data_hint = DataWaitHint()
        self.after_refresh: list[Callable[[], None]] = []  # e.g. run safety's history append
        self.after_epoch: list[Callable[[int, dict[str, float]], None]] = []  # (epoch, logs)
        self.epochs = 1
        self.steps: int | None = None
        self.epoch = self.step = self.refreshed_step = self.resumed_at = 0
        self._times_before = (0.0, 0.0)  # data wait and step time restored by a resume
        self.eval_seconds = math.nan
        self._offset: int | None = None
        self._shown_nows: dict[str, NowEstimate] | None = None  # see `_shown_snapshot`
        self._shown_at = 0.0
        self._line_every: int | None = None
        self.epoch_start = self.last_refresh = self.next_refresh = 0.0
        self.t_begin = self.t_record = self.t_ready = 0.0
        self._values: list[Any] = []
        self._weights: list[list[Any]] = []
        # per step, flat (one list, one numpy conversion per flush): size, 1-based step in the
        # epoch, previous step's end, batch in hand, values recorded
        self._clocks: list[float] = []

    # -- metrics ------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return self.stream.names if self.stream is not None else []

    def set_metrics(
        self,
        names: Sequence[str],
        valued: Sequence[str] | None = None,
        epoch_values: Mapping[str, EpochValue] | None = None,
        ranges: Mapping[str, MetricRange] | None = None,
    ) -> None:
        """Name the metrics, in the order `record` receives their values (the loss first).

        Args:
            valued: the metrics with per-batch values (default: all).
            epoch_values: metrics whose epoch value they compute themselves (torchmetrics).
            ranges: each metric's range, which its now estimate and interval never leave;
                a metric not named gets the range its name implies (`for_name`: accuracies
                [0, 1], losses >= 0, else unbounded).
        """
        names = list(dict.fromkeys(names))
        batches = self.history.batches
        if batches.metric_names != names:
            if len(batches):
                raise ValueError(
                    f"This run records metrics {batches.metric_names}; the continuation "
                    f"reports {names}. Continue a run with the same metrics."
                )
            batches = self.history.batches = BatchLog(names)
        given = dict(ranges or {})
        ranges = {n: given.get(n, for_name(n)) for n in names}
        stream = MetricStream(names, self.now_spec, batches, epoch_values, ranges)
        if self.stream is not None and self.stream.names == names:
            stream.load_state_dict(self.stream.state_dict())  # a continued run: carry on
        self.stream = stream
        self.valued = list(valued) if valued is not None else names
        self.history.params["metrics"] = names
        self.history.params["ranges"] = {n: r.to_param() for n, r in ranges.items()}

    # -- run and epoch ------------------------------------------------------------------------

    def begin_run(self, epochs: int, steps: int | None) -> None:
        """A loop starts: ``epochs`` it runs (>= 1), ``steps`` per epoch (None: unknown)."""
        self._offset = None
        self.epochs, self.steps = max(int(epochs), 1), steps
        self.history.params.update(epochs=self.epochs, steps=steps)

    def begin_epoch(self, epoch: int) -> None:
        """Start the loop's 0-based ``epoch``; numbered on after the run's recorded epochs."""
        if self._offset is None:  # the first epoch of this loop: continue the run's numbering
            done = self.history.epoch[-1] + 1 if self.history.epoch else 0
            self._offset = max(done - epoch, 0)
            self.epochs += self._offset
            self.history.params["epochs"] = self.epochs
        self.epoch = epoch + self._offset
        self.epochs = max(self.epochs, self.epoch + 1)
        if self.stream is not None:
            self.stream.begin_epoch(self.epoch)
        self.reported.clear()
        self._shown_nows = None  # the display's first refresh in an epoch reads the estimates
        self.step = self.refreshed_step = self.resumed_at = 0
        self._times_before = (0.0, 0.0)
        self._due_step = 0  # the epoch's first step refreshes
        self.epoch_start = self.last_refresh = self.t_ready = self.clock()
        self.next_refresh = self.epoch_start + self.progress.refresh_interval
        self.progress.begin_epoch(self.epoch + 1, self.epochs, self.steps)
        self._line_every = self.progress.line_every  # fixed for the epoch once its display opened
        held = self.lines.release()  # a forecast made at the end of the previous fit call
        if held is not None:
            self.progress.write(held)

    def resume_at(self, step: int, note: str | None = None) -> None:
        """Continue the epoch after its first ``step`` steps (a run resumed mid-epoch).

        ``note`` (a resumed run's first line, `format_resume_line`) is written, and the epoch's
        clock restarts now: the time spent getting back to position is neither data wait nor
        training, so the epoch's time, data share and breakdown cover the resumed steps only.
        """
        self.step = self.refreshed_step = self.resumed_at = step
        stream = self.stream
        # Restored from the checkpoint: the part before the resume, left out of this epoch's times.
        self._times_before = (stream.data_time, stream.step_time) if stream else (0.0, 0.0)
        if note is not None:
            self.progress.write(note)
            self.epoch_start = self.last_refresh = self.t_ready = self.clock()
            self.next_refresh = self.epoch_start + self.progress.refresh_interval

    # -- per step -----------------------------------------------------------------------------

    def begin_step(self) -> None:
        """A batch is in hand: the wait for data ends."""
        self.t_begin = self.clock()

    def record(
        self,
        values: Sequence[Any],
        size: float,
        step: int | None = None,
        weights: Sequence[Any] | None = None,
    ) -> None:
        """The step's values, in the order of the metric names; nothing moves to the host.

        Args:
            values: one per metric: 0-d tensors (still on the device) or floats.
            size: samples in the batch. step: its 1-based index in the epoch (default: the
                next); for a group of batches, the group's last.
            weights: the weight behind each value (default: ``size`` for every metric): floats,
                or 0-d tensors still on the device (sums of sample weights), moved to the host
                with the values, in the same transfer.
        """
        t = self.t_record = self.clock()
        self._values.extend(values)
        if weights is not None:
            self._weights.append(list(weights))
        self.step = self.step + 1 if step is None else step
        self._clocks.extend((size, self.step, self.t_ready, self.t_begin, t))  # times: at the flush

    def step_done(
        self,
        step: int,
        values: Mapping[str, float],
        weights: Mapping[str, float],
        size: float,
        reported: Mapping[str, float] | None = None,
    ) -> None:
        """A framework's step (or group of steps) is done: its values by metric name (the
        names are set at the first), a refresh when due, then the wait for data starts.

        Args:
            step: 1-based index of the epoch's last batch done so far.
            values: each metric's value over the batch (or group), as a float.
            weights: the weight (samples) behind each value; a missing metric weighs 0.
            size: samples in the batch (or group).
            reported: metrics with no per-batch value (not a mean): shown as the framework's
                own running value, with no now estimate.
        """
        if self.stream is None:
            names = sorted(values, key=lambda n: n != "loss") + list(reported or {})
            self.set_metrics(names, valued=[n for n in names if n in values])
        names = self.names
        self.record(
            [float(values.get(n, math.nan)) for n in names],
            size,
            step,
            [float(weights.get(n, 0.0)) if n in values else 0.0 for n in names],
        )
        if reported:
            self.reported.update({k: float(v) for k, v in reported.items() if k in names})
        self.refresh_if_due()
        self.end_step()

    def skip(self) -> None:
        """The step ran but leaves no row (`fit`'s ``on_nonfinite="skip"``)."""
        self.t_record = self.clock()
        self.step += 1

    def refresh_if_due(self) -> None:
        """Refresh the display at the epoch's first step, every refresh interval and every
        ``log_every`` steps (in line mode); with `reduce`, on its step schedule. Per step: two
        comparisons (`refresh` sets the next time and step)."""
        if self.t_record >= self.next_refresh or self.step >= self._due_step:
            self.refresh()

    def end_step(self) -> None:
        """The step is done (hooks and run safety included): the wait for data starts."""
        self.t_ready = self.clock()

    def refresh(self) -> None:
        """Fold the queued steps in (one transfer to the host), show them, run the listeners."""
        t = self.t_record
        self.flush()
        self.timer.observe(self.step - self.refreshed_step, t - self.last_refresh)
        self.last_refresh, self.refreshed_step = t, self.step
        if self.reduce is None:
            self.next_refresh = t + self.progress.refresh_interval
            every = self._line_every  # in line mode, the next multiple of `every`
            self._due_step = (self.step // every + 1) * every if every else _NEVER
        else:  # every process refreshes at the same steps, whatever its clock
            self.next_refresh = math.inf
            if self.stream is not None and self.stream.rows:
                per_step = (self.stream.step_time + self.stream.data_time) / self.stream.rows
                self._due_step = self.step + max(1, int(self.progress.refresh_interval / per_step))
        elapsed = t - self.epoch_start
        if self.progress.will_draw(self.step, elapsed):  # a line mode's quiet refresh reads no now
            self.progress.refresh(self._state(elapsed, snapshot=self._shown_snapshot(t)))
        self._check_forecast()
        for listener in self.after_refresh:
            listener()

    def flush(self) -> None:
        """Move the queued steps to the host in one transfer and feed them to the estimators."""
        n = len(self._clocks) // _PER_STEP
        if n == 0 or self.stream is None:
            return
        k = len(self.stream.names)
        # fromiter: half the time of np.array on a list of Python ints and floats, same values
        clocks = np.fromiter(self._clocks, np.float64, n * _PER_STEP).reshape(n, _PER_STEP)
        sizes = clocks[:, 0].copy()
        if not self._weights:
            values = self.to_host(self._values).reshape(n, k)
            weights = np.repeat(sizes[:, None], k, axis=1)
        else:  # weights still on the device (sums of sample weights) travel with the values
            flat: list[Any] = [w for row in self._weights for w in row]
            queued = [i for i, w in enumerate(flat) if not isinstance(w, int | float)]
            moved = np.asarray(self.to_host(self._values + [flat[i] for i in queued]))
            values = moved[: n * k].reshape(n, k)
            for i, w in zip(queued, moved[n * k :], strict=True):
                flat[i] = w
            weights = np.asarray(flat, dtype=np.float64).reshape(n, k)
        rows = Rows(
            clocks[:, 1].astype(np.int64),  # steps: exact in float64 (below 2**53)
            values,
            weights,
            sizes,
            clocks[:, 4] - clocks[:, 3],  # step time: from the batch in hand to its values
            clocks[:, 3] - clocks[:, 2],  # data wait: from the previous step's end
        )
        self.stream.append(*(self.reduce(rows) if self.reduce is not None else rows))
        for queue in (self._values, self._weights, self._clocks):
            queue.clear()

    @property
    def pending(self) -> int:
        """Steps queued and not yet on the host."""
        return len(self._clocks) // _PER_STEP

    # -- values -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, tuple[float, NowEstimate]]:
        """``{name: (epoch mean, now estimate with its interval)}`` over the steps flushed so
        far: one estimator fit per metric. A framework's reported metric has no now (NaN)."""
        if self.stream is None:
            return {}
        out = self.stream.snapshot()
        for name, value in self.reported.items():
            out[name] = (value, NowEstimate(math.nan))
        return out

    def logs(self) -> dict[str, float]:
        """``{name: epoch mean, name_now: now estimate, name_now_low, name_now_high: its
        interval}``, flushing first."""
        self.flush()
        return now_logs(self.snapshot())

    def state_dict(self) -> dict[str, Any]:
        """The estimators' state, for a checkpoint (flushes first)."""
        self.flush()
        assert self.stream is not None
        return self.stream.state_dict()

    def load_state_dict(self, state: Mapping[str, Any], epoch_means: bool = True) -> None:
        """Restore a `state_dict` (``epoch_means=False``: only the now estimates)."""
        assert self.stream is not None
        self.stream.load_state_dict(state, epoch_means)

    # -- epoch end ----------------------------------------------------------------------------

    def end_epoch(
        self,
        validation: Mapping[str, float | Measured] | None = None,
        *,
        train_mode: Mapping[str, Measured] | None = None,
        eval_mode: Mapping[str, Measured] | None = None,
        extra_logs: Mapping[str, float] | None = None,
        last: bool | None = None,
    ) -> dict[str, float]:
        """Close the epoch: record it, show its summary and lines; returns its logs.

        Args:
            validation: ``{"val_m": value}`` measured after the epoch (a `Measured` carries its
                interval into the gap line).
            train_mode, eval_mode: `fit`'s ``train_eval`` passes, per metric.
            extra_logs: more values for ``History.history`` (after the validation ones).
            last: True when no epoch follows in this loop (the forecast is held back); default:
                whether this is the last of the epochs given to `begin_run`.
        """
        if last is None:
            last = self.epoch + 1 >= self.epochs
        self.flush()
        self._check_forecast()
        end = self.clock()
        train_end = max(self.t_ready, self.t_record)  # a stop after a step skips its end_step
        self.timer.observe(self.step - self.refreshed_step, train_end - self.last_refresh)
        measured = {
            k: v if isinstance(v, Measured) else Measured(float(v))
            for k, v in (validation or {}).items()
        }
        shown = {k: m.value for k, m in measured.items()}
        if shown:
            self.eval_seconds = end - train_end
        snapshot = self.snapshot()
        logs = now_logs(snapshot)
        logs.update(shown)
        logs.update(extra_logs or {})
        data_time, step_time = self._times()
        timing = {
            "time": end - self.epoch_start,
            "data_wait": data_time,
            "compute": step_time,
            "eval": end - train_end,
        }
        self.history.record_epoch(self.epoch, logs, timing)
        self.progress.end_epoch(self._state(end - self.epoch_start, shown, snapshot))
        stream = self.stream
        # the lines are about a metric with a now (an F1's epoch value is not a batch mean)
        with_now = [n for n in self.valued if stream and stream.is_mean(n, snapshot[n][0])]
        headline = self._headline(shown, with_now)
        if headline is not None and stream is not None:
            valued = {n: measured[f"val_{n}"] for n in self.valued if f"val_{n}" in measured}
            end_lines = self.lines.end_epoch(
                self.epoch,
                headline,
                {n: snapshot[n][0] for n in self.valued},
                {n: snapshot[n][1] for n in self.valued},
                valued or None,
                self.history.batches,
                stream.rows,
                self.steps or self.step,  # unknown: this epoch's length
                train_mode=train_mode,
                eval_mode=eval_mode,
                last=last,
            )
            self.history.gaps.append(end_lines.gaps)
            for line in end_lines.lines:
                self.progress.write(line)
        params = self.history.params
        hint = self.data_hint.check(
            self.epoch, timing, self.prefetch, params.get("data"), params.get("workers")
        )
        if hint:  # data wait > 30% of the epoch: said once per run
            self.progress.write(hint)
        for listener in self.after_epoch:  # e.g. TensorBoard: the epoch's row is recorded
            listener(self.epoch, logs)
        return logs

    def end_run(self) -> None:
        self.progress.close()

    def _headline(
        self, validation: Mapping[str, float], among: Sequence[str] | None = None
    ) -> str | None:
        """The metric of the end-of-epoch lines: the first with per-batch values (of ``among``,
        default all) other than the loss (else the loss), preferring one with a validation
        value."""
        candidates = sorted(self.valued if among is None else among, key=lambda n: n == "loss")
        validated = [n for n in candidates if f"val_{n}" in validation]
        return (validated or candidates)[0] if candidates else None

    def _check_forecast(self) -> None:
        if self.stream is not None and self.lines.forecast is not None:
            line = self.lines.check(self.history.batches, self.stream.rows)
            if line is not None:
                self.progress.write(line)

    def _shown_snapshot(self, t: float) -> dict[str, tuple[float, NowEstimate]]:
        """The snapshot a mid-epoch display shows at time ``t``: epoch means always fresh; the
        now estimates (a fraction of a millisecond per metric) are read at the epoch's first
        display and then at most every `NOW_READ_SECONDS`, the last read shown in between: a
        bar redraws 10 times a second, and a short epoch's log writes its ten lines within a
        few seconds (lines further apart read afresh each time). Display only: the history
        never reads this."""
        held = self._shown_nows
        if held is None or t - self._shown_at >= NOW_READ_SECONDS or self.stream is None:
            snapshot = self.snapshot()
            self._shown_nows = {n: now for n, (_, now) in snapshot.items()}
            self._shown_at = t
            return snapshot
        out = {n: (self.stream.mean(n), held.get(n, NowEstimate(math.nan))) for n in self.names}
        for name, value in self.reported.items():
            out[name] = (value, NowEstimate(math.nan))
        return out

    def _state(
        self,
        elapsed: float,
        validation: Mapping[str, float] | None = None,
        snapshot: Mapping[str, tuple[float, NowEstimate]] | None = None,
    ) -> ProgressState:
        if snapshot is None:
            snapshot = self.snapshot()
        left = None if self.steps is None else max(self.steps - self.step, 0)
        data_time = self._times()[0]
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
            data_share=data_time / elapsed if elapsed > 0 else math.nan,
            metrics={n: (mean, now.value) for n, (mean, now) in snapshot.items()},
            nows={n: now for n, (_, now) in snapshot.items()},
            validation=validation or {},
            headline=self._headline({}),
            resumed_at=self.resumed_at,
        )

    def _times(self) -> tuple[float, float]:
        """Seconds of data wait and of steps in this epoch since it began or resumed."""
        if self.stream is None:
            return 0.0, 0.0
        data, step = self._times_before
        return self.stream.data_time - data, self.stream.step_time - step


__all__ = ["Lens", "ReduceRows", "Rows", "ToHost", "floats_to_host", "now_logs", "now_param"]
