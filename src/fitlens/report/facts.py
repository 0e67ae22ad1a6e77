"""What a report says about a run, as plain data: gaps, forecasts, time, how it ended, warnings.

Everything is derived from a `fitlens.History` (and, for a run directory, its ``summary.json``)
with the same code that printed the lines during training: `fitlens.core.gap.GapDecomposition`,
`fitlens.core.forecast.make_forecast` / `check_forecast`, `fitlens.view.data_wait`. The HTML page
(`fitlens.report.html`) and the terminal view (`fitlens.report.show`) only format these.

Intervals: ``History.gaps`` holds the 95% intervals of the measured values, in memory (a
history from `fit` or a callback) and in a run directory's ``history.jsonl`` (its epoch
records' ``gaps``). Files written by earlier versions have no ``gaps``: a report read from one
shows the values without intervals and says so.

numpy only: no torch, no matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fitlens.core.estimators import NOW_LEVEL
from fitlens.core.forecast import (
    FORECAST_STEPS,
    NOISE_WINDOW,
    Forecast,
    ForecastCheck,
    check_forecast,
    make_forecast,
)
from fitlens.core.gap import GapDecomposition, Measured
from fitlens.report.series import MEASURED_KEYS, epoch_starts
from fitlens.view.data_wait import DataWaitHint, data_share

_OUTCOMES = {
    "completed": "completed",
    "interrupted": "interrupted (SIGINT/SIGTERM): it can be resumed from its last checkpoint",
    "nonfinite": "stopped: a metric or the weights became NaN or infinite",
    "failed": "failed with an error",
    "running": "running, or killed before it could write its summary (no summary after start)",
}


def headline(history: Any) -> str:
    """The metric the epoch-end lines are about: the first metric after the loss, else the loss."""
    names = [n for n in history.batches.metric_names if n != "loss"]
    if names:
        return names[0]
    return "loss" if "loss" in history.batches.metric_names else next(iter(history.history), "")


def metric_names(history: Any) -> list[str]:
    """The training metrics with per-batch values, loss first."""
    return list(history.batches.metric_names)


def _measured(history: Any, name: str, role: str, i: int) -> Measured | None:
    column = history.history.get(MEASURED_KEYS[role].format(name))
    if column is None or i >= len(column) or not math.isfinite(column[i]):
        return None
    for record in getattr(history, "gaps", None) or []:
        if record.get("epoch") == history.epoch[i] + 1:
            m = record.get("metrics", {}).get(name, {}).get(role)
            if m:
                low, high = m.get("low"), m.get("high")
                return Measured(
                    float(column[i]),
                    math.nan if low is None else float(low),
                    math.nan if high is None else float(high),
                    int(m.get("n") or 0),
                )
    return Measured(float(column[i]))


def _logged(history: Any, key: str, i: int) -> float:
    """``history.history[key][i]``, NaN when the run did not record ``key`` (older files)."""
    column = history.history.get(key)
    return math.nan if column is None or i >= len(column) else float(column[i])


def gap_table(history: Any) -> list[dict[str, GapDecomposition]]:
    """Per recorded epoch, ``{metric: GapDecomposition}`` rebuilt from ``history.history``."""
    out = []
    for i in range(len(history.epoch)):
        row = {}
        for name in metric_names(history):
            if name not in history.history:
                continue
            modes = {role: _measured(history, name, role, i) for role in MEASURED_KEYS}
            row[name] = GapDecomposition(
                metric=name,
                reported=float(history.history[name][i]),
                now=_logged(history, f"{name}_now", i),
                now_low=_logged(history, f"{name}_now_low", i),
                now_high=_logged(history, f"{name}_now_high", i),
                train_mode=modes["train_mode"] if modes["eval_mode"] else None,
                eval_mode=modes["eval_mode"] if modes["train_mode"] else None,
                validation=modes["validation"],
            )
        out.append(row)
    return out


def has_intervals(history: Any) -> bool:
    """True when ``history.gaps`` holds the intervals of the measured values."""
    return bool(getattr(history, "gaps", None))


@dataclass(frozen=True)
class ForecastRow:
    """The forecast made at an epoch end and, once the next epoch's first batches are in, its check."""

    forecast: Forecast
    check: ForecastCheck | None


def forecasts(history: Any, metric: str | None = None) -> list[ForecastRow]:
    """The forecast at every recorded epoch end followed by batches, as `fit` printed them.

    Args:
        history: a `History`. metric: default the `headline` metric.
    """
    name = metric or headline(history)
    batches = history.batches
    if name not in batches.metric_names or name not in history.history:
        return []
    epochs, steps = batches["epoch"], batches["step"]
    values, sizes = batches[name], batches["size"]
    starts = epoch_starts(epochs)
    ends = np.append(starts[1:], len(epochs))
    row_of = {int(epochs[a]): (a, b) for a, b in zip(starts, ends, strict=True)}
    per_epoch = history.params.get("steps")
    out = []
    for i, e0 in enumerate(history.epoch):
        this, following = row_of.get(e0 + 1), row_of.get(e0 + 2)
        if this is None or following is None:
            continue
        a, b = this
        recent = values[max(a, b - NOISE_WINDOW) : b]
        f = make_forecast(
            name,
            e0 + 2,
            float(history.history[name][i]),
            _logged(history, f"{name}_now", i),
            np.asarray(recent),
            min(FORECAST_STEPS, per_epoch or FORECAST_STEPS),
            now_interval=(
                _logged(history, f"{name}_now_low", i),
                _logged(history, f"{name}_now_high", i),
            ),
            now_level=NOW_LEVEL,
        )
        a, b = following
        reached = np.flatnonzero(steps[a:b] >= f.steps)
        check = None
        if reached.size:  # a row may be a group of batches: use the groups that cover them
            end = a + int(reached[0]) + 1
            covered = int(steps[end - 1])
            check = check_forecast(
                f, values[a:end], sizes[a:end], None if covered == f.steps else covered
            )
        out.append(ForecastRow(f, check))
    return out


@dataclass(frozen=True)
class TimeRow:
    """Where one epoch's wall time went, in seconds (``other``: the rest: display, checkpoints)."""

    epoch: int
    time: float
    data_wait: float
    compute: float
    eval: float

    @property
    def other(self) -> float:
        parts = (self.data_wait, self.compute, self.eval)
        return self.time - sum(p for p in parts if math.isfinite(p))

    @property
    def data_share(self) -> float:
        return data_share({"time": self.time, "data_wait": self.data_wait})


def time_table(history: Any) -> list[TimeRow]:
    """One `TimeRow` per recorded epoch from ``history.timing`` (NaN where not measured)."""
    t = history.timing

    def get(key: str, i: int) -> float:
        column = t.get(key, [])
        return float(column[i]) if i < len(column) else math.nan

    return [
        TimeRow(e + 1, get("time", i), get("data_wait", i), get("compute", i), get("eval", i))
        for i, e in enumerate(history.epoch)
    ]


@dataclass(frozen=True)
class Progress:
    """The epoch being trained when the history was read (its rows after the last epoch end)."""

    epoch: int
    steps_done: int
    steps: int | None
    means: dict[str, float]


def in_progress(history: Any) -> Progress | None:
    """The unfinished epoch's position and running means, or None when every epoch ended."""
    batches = history.batches
    if not len(batches):
        return None
    last = int(batches["epoch"][-1])
    if history.epoch and history.epoch[-1] + 1 >= last:
        return None
    a = int(epoch_starts(batches["epoch"])[-1])
    sizes = np.asarray(batches["size"][a:], dtype=np.float64)
    means = {
        n: float(np.dot(batches[n][a:], sizes) / sizes.sum()) if sizes.sum() else math.nan
        for n in batches.metric_names
    }
    return Progress(last, int(batches["step"][-1]), history.params.get("steps"), means)


@dataclass
class RunFacts:
    """What every report of a run shows, apart from the per-epoch tables.

    Attributes:
        source: the run directory, or a description of the history.
        status: ``"completed"``, ``"interrupted"``, ``"nonfinite"``, ``"failed"``,
            ``"running"`` or ``"unknown"`` (no summary).
        outcome: the status in words. resumed_from: the checkpoint the last session resumed
            from (None: not resumed, or unknown). error: the error that ended it, if any.
        settings: the run's parameters and, from a run directory, its configuration and
            versions. warnings: things to look at, in words.
        overflow_skipped_steps: under ``precision="16-mixed"``, the optimizer steps the fp16
            loss scaler skipped for gradient overflow (None: not a 16-mixed run, or unknown).
    """

    source: str
    status: str
    outcome: str
    resumed_from: str | None = None
    error: str | None = None
    started: str | None = None
    finished: str | None = None
    latest_checkpoint: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    overflow_skipped_steps: int | None = None


def overflow_words(count: int) -> str:
    """The overflow-skipped step count in words, for the report page and `fitlens show`."""
    return (
        f"{count} optimizer step(s) skipped by the fp16 loss scaler for gradient overflow "
        "(precision 16-mixed: the scaler lowers its scale and retries; not non-finite losses)"
    )


def run_facts(
    history: Any, summary: Mapping[str, Any] | None, source: str, *, in_memory: bool = False
) -> RunFacts:
    """How the run ended, its settings and its warnings.

    Args:
        history: the run's `History`.
        summary: the parsed ``summary.json`` of a run directory (None: the directory has none).
        source: what to call the run.
        in_memory: True for a `History` object handed over directly: it is complete by
            construction, and there is no summary to read.
    """
    if summary is None:
        if in_memory:
            facts = RunFacts(source, "completed", _OUTCOMES["completed"])
        else:
            facts = RunFacts(source, "unknown", "unknown: the run directory has no summary.json")
        facts.settings = {"params": dict(history.params)}
    else:
        status = str(summary.get("status") or "unknown")
        checkpoints = summary.get("checkpoints") or {}
        facts = RunFacts(
            source,
            status,
            _OUTCOMES.get(status, status),
            resumed_from=summary.get("resumed_from"),
            error=summary.get("error"),
            started=summary.get("started"),
            finished=summary.get("finished"),
            latest_checkpoint=checkpoints.get("latest") if isinstance(checkpoints, dict) else None,
        )
        facts.settings = {
            "config": summary.get("config") or dict(history.params),
            "versions": summary.get("versions") or {},
        }
    facts.warnings = run_warnings(history, summary)
    skipped = (summary or {}).get("overflow_skipped_steps")
    if skipped is None:  # a run still going: the count fit put in params at the last epoch end
        skipped = history.params.get("overflow_skipped_steps")
    facts.overflow_skipped_steps = int(skipped) if skipped is not None else None
    return facts


def run_warnings(history: Any, summary: Mapping[str, Any] | None) -> list[str]:
    """The things a reader should look at, each in one sentence."""
    out: list[str] = []
    if summary is not None and summary.get("error") and summary.get("status") != "interrupted":
        out.append(f"The run ended with an error: {summary['error']}")
    skipped = (summary or {}).get("skipped_batches") or history.params.get("skipped_batches")
    if skipped:
        where = ", ".join(f"epoch {e} step {s}" for e, s in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        out.append(
            f"{len(skipped)} batches were skipped for a non-finite loss "
            f"(on_nonfinite='skip'): {where}{more}."
        )
    batches = history.batches
    for name in batches.metric_names:
        bad = np.flatnonzero(~np.isfinite(batches[name]))
        if bad.size:
            i = int(bad[0])
            out.append(
                f"{name} is NaN or infinite in {bad.size} batches, first at epoch "
                f"{int(batches['epoch'][i])} step {int(batches['step'][i])}."
            )
    steps = history.params.get("steps")
    if steps and len(batches):
        starts = epoch_starts(batches["epoch"])
        ends = np.append(starts[1:], len(batches)) - 1
        finished = {e + 1 for e in history.epoch}
        for end in ends:
            epoch, done = int(batches["epoch"][end]), int(batches["step"][end])
            if epoch in finished and done < steps:
                out.append(
                    f"Epoch {epoch} ended after {done} of {steps} steps (the data ran out, or "
                    "a callback stopped training)."
                )
    hint = DataWaitHint()
    prefetch = int(history.params.get("prefetch") or 0)
    for row in time_table(history):
        timing = {"time": row.time, "data_wait": row.data_wait}
        line = hint.check(
            row.epoch - 1,
            timing,
            prefetch,
            history.params.get("data"),
            history.params.get("workers"),
        )
        if line:
            out.append(line)
    return out


def json_ready(x: Any) -> Any:
    """``x`` with NaN and infinities as None and tuples as lists, for strict JSON."""
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_ready(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


__all__ = [
    "ForecastRow",
    "Progress",
    "RunFacts",
    "TimeRow",
    "forecasts",
    "gap_table",
    "has_intervals",
    "headline",
    "in_progress",
    "json_ready",
    "metric_names",
    "overflow_words",
    "run_facts",
    "run_warnings",
    "time_table",
]
