"""The end-of-epoch gap line, jump forecast and forecast check: one code path for every caller.

The `fitlens.view.lens.Lens`, which `fitlens.fit` and the Keras/Lightning callbacks all drive,
holds an `EpochEndLines` and calls it twice:

* ``end_epoch(...)`` with each metric's epoch mean, now estimate and the values measured at the
  epoch end (validation; with ``train_eval``, the two passes over training data): builds every
  metric's `GapDecomposition`, the record for ``History.gaps``, the gap line of the headline
  metric and, unless the run ends, the forecast of the next epoch's first batches;
* ``check(batches, rows)`` after each flush of the batch log: once the forecast epoch's first
  batches are in it, the line saying whether the jump came as forecast.

Standard library and numpy only (no torch, no framework), so the callbacks can use it on any
Keras backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fitlens.core.estimators import NowEstimate
from fitlens.core.forecast import (
    FORECAST_STEPS,
    NOISE_WINDOW,
    Forecast,
    check_forecast,
    format_check_line,
    format_forecast_line,
    make_forecast,
)
from fitlens.core.gap import GapDecomposition, Measured, format_gap_line
from fitlens.core.history import BatchLog


@dataclass
class EpochEnd:
    """What an epoch end hands back: ``History.history`` values, a ``History.gaps`` record, lines."""

    logs: dict[str, float] = field(default_factory=dict)
    gaps: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


class EpochEndLines:
    """The gap decomposition and the jump forecast across a run's epoch ends.

    Attributes:
        forecast: the forecast waiting for its check (None when there is none).

    Example:
        >>> lines = EpochEndLines()
        >>> log = BatchLog(["loss"])
        >>> log.append({"epoch": np.ones(4), "step": np.arange(1, 5), "size": np.full(4, 8.0),
        ...             "step_time": np.zeros(4), "data_time": np.zeros(4),
        ...             "loss": np.array([0.9, 0.7, 0.6, 0.5])})
        >>> end = lines.end_epoch(0, "loss", {"loss": 0.675}, {"loss": NowEstimate(0.5)},
        ...                       {"loss": Measured(0.55)}, log, rows=4, steps_per_epoch=4)
        >>> print(end.lines[0])
        gap loss (estimated): mean 0.6750 -> now ~0.5000 (lag ~-0.1750) -> val 0.5500 (mode + generalisation ~+0.0500)
    """

    def __init__(self) -> None:
        self.forecast: Forecast | None = None
        self.held: str | None = None  # the forecast line of a loop's last epoch, not yet shown

    def release(self) -> str | None:
        """The held-back forecast line, once: a loop continues the run after its last epoch."""
        line, self.held = self.held, None
        return line

    def end_epoch(
        self,
        epoch: int,
        headline: str,
        means: Mapping[str, float],
        nows: Mapping[str, NowEstimate],
        validation: Mapping[str, Measured] | None,
        batches: BatchLog,
        rows: int,
        steps_per_epoch: int | None,
        *,
        train_mode: Mapping[str, Measured] | None = None,
        eval_mode: Mapping[str, Measured] | None = None,
        last: bool = False,
    ) -> EpochEnd:
        """Decompositions, the gap line and the forecast at the end of 0-based ``epoch``.

        Args:
            epoch: 0-based. headline: the metric the lines are about (a key of ``means``).
            means, nows: each metric's epoch mean and now estimate (with its interval, which
                the gap line shows and the forecast's tolerance includes); their keys are the
                metrics.
            validation: values on validation data (a metric may be missing); None without it.
            batches: the run's batch log, flushed; its last ``rows`` rows are this epoch's.
            steps_per_epoch: batches per epoch (None: unknown), caps the forecast's batches.
            train_mode, eval_mode: the ``train_eval`` passes (None or empty without them).
            last: True when no epoch follows in this loop: the forecast is made but its line is
                held back (`release`) until the run continues in another loop.

        Returns:
            An `EpochEnd` with ``gaps`` and ``lines`` (its ``logs`` are for the caller to fill).
        """
        out = EpochEnd()
        decompositions = {
            name: GapDecomposition(
                metric=name,
                reported=means[name],
                now=nows[name].value,
                now_low=nows[name].low,
                now_high=nows[name].high,
                now_note=nows[name].note,
                train_mode=train_mode[name] if train_mode else None,
                eval_mode=eval_mode[name] if eval_mode else None,
                validation=validation.get(name) if validation else None,
            )
            for name in means
        }
        head = decompositions[headline]
        out.gaps = {
            "epoch": epoch + 1,
            "estimated": head.estimated,
            "metrics": {k: d.to_dict() for k, d in decompositions.items()},
        }
        if not head.estimated or head.validation is not None:
            out.lines.append(format_gap_line(head))
        recent = batches[headline][len(batches) - min(rows, NOISE_WINDOW) :]
        steps = min(FORECAST_STEPS, steps_per_epoch or FORECAST_STEPS)
        now = nows[headline]
        self.forecast = make_forecast(
            headline,
            epoch + 2,
            head.reported,
            head.now,
            recent,
            steps,
            now_interval=(now.low, now.high),
            now_level=now.level,
        )
        self.held = format_forecast_line(self.forecast)
        if not last:
            out.lines.append(self.release() or "")
        return out

    def check(self, batches: BatchLog, rows: int) -> str | None:
        """The forecast check line, once the forecast epoch's first batches are in the log.

        Args:
            batches: the run's batch log. rows: this epoch's rows in it so far (its last rows).
                A row may be a group of batches (its ``step`` is the group's last batch): the
                check then uses the groups that cover the forecast's batches, and says how many
                batches they hold.

        Returns:
            The line, once per forecast; None while the batches are not all in, or no forecast.
        """
        f = self.forecast
        if f is None or rows <= 0:
            return None
        start = len(batches) - rows
        reached = np.flatnonzero(batches["step"][start:] >= f.steps)
        if reached.size == 0:
            return None
        self.forecast = None
        end = start + int(reached[0]) + 1
        covered = int(batches["step"][end - 1])
        values, sizes = batches[f.metric][start:end], batches["size"][start:end]
        check = check_forecast(f, values, sizes, None if covered == f.steps else covered)
        return format_check_line(check)


__all__ = ["EpochEnd", "EpochEndLines"]
