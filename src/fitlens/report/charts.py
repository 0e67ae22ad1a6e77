"""From a `History` to the panels of `fitlens.report.plot`: one panel per training metric."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fitlens.report.facts import forecasts, headline
from fitlens.report.plot import MANY, Panel, Series
from fitlens.report.series import history_curves


def history_panels(
    history: Any, metrics: Sequence[str] | None = None, bins: int = 1000
) -> list[Panel]:
    """The panels of ``history``: batch values, running mean, now, epoch-end measurements.

    With more than ``bins / 8`` epochs the running mean would be a saw of thin teeth; the
    epoch-end means are drawn instead. Forecasts and their checks are drawn for the headline
    metric when there are at most `MANY` epochs.

    Args:
        history: a `fitlens.History`.
        metrics: training metrics to draw (default: all with per-batch values, loss first).
        bins: see `fitlens.report.plot.figure`.

    Raises:
        KeyError: For a metric without per-batch values (the message lists those with them).
        ValueError: If the history has no batches yet.
    """
    names = list(metrics) if metrics is not None else list(history.batches.metric_names)
    if not len(history.batches):
        raise ValueError("This history has no batches yet: nothing to draw.")
    head = headline(history)
    epochs = np.unique(history.batches["epoch"])
    boundaries = epochs[1:].astype(np.float64) - 1.0
    panels = []
    for name, c in history_curves(history, names, points=2 * bins).items():
        series = [Series("batches", c.x, c.values)]
        if len(epochs) * 8 > bins:
            series.append(Series("mean", c.epoch_mean.x, c.epoch_mean.value, label="epoch mean"))
        else:
            series.append(Series("mean", c.x, c.mean))
        series.append(Series("now", c.now_x, c.now))
        for role, point in c.measured.items():
            series.append(Series(role, point.x, point.value, point.low, point.high))  # type: ignore[arg-type]
        if name == head and len(epochs) <= MANY:
            rows = forecasts(history, name)
            x = np.asarray([r.forecast.epoch - 1 for r in rows], dtype=np.float64)
            expected = np.asarray([r.forecast.expected for r in rows])
            tol = np.asarray([r.forecast.tolerance for r in rows])
            series.append(Series("forecast", x, expected, expected - tol, expected + tol))
            checked = [r for r in rows if r.check is not None]
            series.append(
                Series(
                    "observed",
                    np.asarray([r.forecast.epoch - 1 for r in checked], dtype=np.float64),
                    np.asarray([r.check.observed for r in checked if r.check is not None]),
                )
            )
        panels.append(Panel(name, series, boundaries))
    return panels


def plot_history(
    history: Any,
    path: Any = None,
    *,
    metrics: Sequence[str] | None = None,
    title: str | None = None,
    bins: int = 1000,
) -> Any:
    """Draw ``history`` (see `History.plot`); save to ``path`` when given; return the figure."""
    from fitlens.report.plot import figure, save

    fig = figure(
        history_panels(history, metrics, bins),
        title="fitlens: training metrics" if title is None else title,
        bins=bins,
    )
    if path is not None:
        save(fig, path)
    return fig


__all__ = ["history_panels", "plot_history"]
