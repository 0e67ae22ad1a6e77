"""`--plot` and the chart of `--html`: shown means, reconstructed windows with their bounds.

The chart is drawn by `fitlens.report.plot` (the same palette and styles as ``fitlens report``
and `History.plot`): one panel per running-mean metric, with the means the log showed (role
``shown``), each reconstructed window's mean (``window``) and provable bounds (``bounds``), and
the epoch boundaries. matplotlib is imported only when drawing (the ``fitlens[plot]`` extra).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from fitlens.explain.analysis import EpochResult, MetricResult
from fitlens.explain.writer import Explained
from fitlens.report.plot import Panel, PlotUnavailable, Series

#: File types ``--plot`` writes (matplotlib's raster and vector backends without extras).
FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


class PlotError(ValueError):
    """The plot cannot be drawn: matplotlib is missing or the path is unusable."""


def check_plot_path(path: str) -> None:
    """Refuse a path ``--plot`` cannot write, before any work starts.

    Raises:
        PlotError: For a directory, a missing parent folder, or an extension outside
            :data:`FORMATS` (matplotlib would otherwise raise deep inside, or add a suffix).
    """
    if os.path.isdir(path):
        raise PlotError(f"--plot {path} is a directory; expected a file name such as out.png")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise PlotError(f"--plot {path}: folder {parent} does not exist")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise PlotError(
            f"--plot {path}: expected a file ending in one of "
            f"{', '.join('.' + f for f in FORMATS)}; received {('.' + ext) if ext else 'none'}"
        )


#: The x axis, as in ``fitlens report``: epoch ``e``'s step ``s`` of ``n`` sits at ``e - 1 + s / n``.
XLABEL = "epoch (dotted: epoch boundary)"


def _finite(x: np.ndarray) -> np.ndarray:
    # An unbounded side (no display narrows it) is left undrawn rather than stretching the axis.
    return np.where(np.isfinite(x), x, math.nan)


#: Points per metric the chart keeps as they are; a log with more keeps per-column envelopes.
EXACT_POINTS = 20_000
#: Columns of those envelopes (even: the doubling merges them in pairs); the drawing keeps at
#: most ``2 * 1000`` points per line, so two points per column are all drawn.
COLUMNS = 1000


class _Envelope:
    """Per-column extremes of one metric's chart over ``[0, span)`` epochs, ``span`` doubling as
    the log grows (memory: :data:`COLUMNS` columns, whatever the number of epochs).

    Columns hold the lowest and highest shown mean, window mean and bound of everything drawn
    over them; an empty column is a gap.
    """

    def __init__(self, span: float) -> None:
        self.span = span
        inf = np.full(COLUMNS, math.inf)
        # Rows: shown low/high, window low/high, band low/high; lows start at +inf, highs -inf.
        self.low = np.vstack([inf, inf, inf])
        self.high = -self.low

    def _grow(self, x: float) -> None:
        while x >= self.span:
            half = COLUMNS // 2
            self.low[:, :half] = np.minimum(self.low[:, 0::2], self.low[:, 1::2])
            self.high[:, :half] = np.maximum(self.high[:, 0::2], self.high[:, 1::2])
            self.low[:, half:] = math.inf
            self.high[:, half:] = -math.inf
            self.span *= 2

    def _column(self, x: np.ndarray) -> np.ndarray:
        return np.minimum((x * (COLUMNS / self.span)).astype(np.int64), COLUMNS - 1)

    def add(self, row: int, x: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        """Fold points at ``x`` with values ``low``..``high`` into row ``row`` (NaN: none)."""
        keep = ~(np.isnan(low) | np.isnan(high))
        if not keep.any():
            return
        x, low, high = x[keep], low[keep], high[keep]
        self._grow(float(x.max()))
        col = self._column(x)
        np.minimum.at(self.low[row], col, low)
        np.maximum.at(self.high[row], col, high)

    def add_spans(self, x0: np.ndarray, x1: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        """Fold bands over ``[x0, x1]`` into every column they cover."""
        if not len(x0):
            return
        self._grow(float(x1.max()))
        c0, c1 = self._column(x0), self._column(x1)
        count = c1 - c0 + 1
        col = np.repeat(c0, count) + (
            np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        )
        np.minimum.at(self.low[2], col, np.repeat(low, count))
        np.maximum.at(self.high[2], col, np.repeat(high, count))

    def series(self) -> list[Series]:
        """The bounds, window and shown series, each a min-max line per column."""
        width = self.span / COLUMNS
        left = np.arange(COLUMNS) * width
        low = np.where(np.isfinite(self.low), self.low, math.nan)
        high = np.where(np.isfinite(self.high), self.high, math.nan)
        centre = np.repeat(left + width / 2, 2)

        def line(row: int) -> np.ndarray:
            return np.column_stack([low[row], high[row]]).ravel()

        return [
            Series("bounds", left, (low[1] + high[1]) / 2, low[2], high[2]),
            Series("window", centre, line(1)),
            Series("shown", centre, line(0)),
        ]


class _MetricChart:
    """One metric's chart data: every point (as `explain_panels` always drew them) up to
    :data:`EXACT_POINTS`, then an :class:`_Envelope`."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.points = 0
        self.last_wx: float | None = None  # after a first window, every epoch ends with a gap
        self.envelope: _Envelope | None = None

    def add(self, i: int, n: int, m: MetricResult) -> None:
        steps, means, _ = m.arrays
        xs = i + steps / n
        shown_x = np.append(xs, xs[-1] if len(xs) else float(i))
        shown_y = np.append(means, math.nan)
        c = m.columns
        x0, x1 = i + (c.first - 1) / n, i + c.last / n
        wx, wy = np.column_stack([x0, x1]).ravel(), np.repeat(c.value, 2)
        lo, hi = np.repeat(_finite(c.low), 2), np.repeat(_finite(c.high), 2)
        if len(wx):
            self.last_wx = float(wx[-1])
        if self.last_wx is not None:
            wx, wy = np.append(wx, self.last_wx), np.append(wy, math.nan)
            lo, hi = np.append(lo, math.nan), np.append(hi, math.nan)
        if self.envelope is None:
            self.parts.append((shown_x, shown_y, wx, wy, lo, hi))
            self.points += len(shown_x) + len(wx)
            if self.points <= EXACT_POINTS:
                return
            self.envelope = _Envelope(float(2 ** math.ceil(math.log2(i + 1))))
            parts, self.parts = self.parts, []
            for p in parts:
                self._fold(*p)
        else:
            self._fold(shown_x, shown_y, wx, wy, lo, hi)

    def _fold(self, *columns: np.ndarray) -> None:
        assert self.envelope is not None
        shown_x, shown_y, wx, wy, lo, hi = columns
        self.envelope.add(0, shown_x, shown_y, shown_y)
        self.envelope.add(1, wx, wy, wy)
        # Windows come as (start, end) pairs, then a gap point: the band covers each pair.
        pairs = len(wx) // 2 * 2
        band = ~(np.isnan(lo[:pairs:2]) | np.isnan(hi[:pairs:2]))
        self.envelope.add_spans(
            wx[:pairs:2][band], wx[1:pairs:2][band], lo[:pairs:2][band], hi[:pairs:2][band]
        )

    def series(self) -> list[Series]:
        if self.envelope is not None:
            return self.envelope.series()
        if self.parts:
            columns = [np.concatenate(c) for c in zip(*self.parts, strict=True)]
        else:
            columns = [np.zeros(0)] * 6
        shown_x, shown_y, wx, wy, lo, hi = columns
        return [
            Series("bounds", wx, wy, lo, hi),
            Series("window", wx, wy),
            Series("shown", shown_x, shown_y),
        ]


class ChartData:
    """The chart of a log, fed one analysed epoch at a time; memory stays bounded.

    Up to :data:`EXACT_POINTS` points per metric every shown mean and window is kept and drawn
    as is; beyond, each metric keeps :data:`COLUMNS` columns of min-max envelopes (the shown
    means, the window means, the band of bounds), whatever the log's length.

    The x axis is in epochs, as in ``fitlens report``: the ``e``-th epoch of the log (1-based)
    with ``n`` steps (its target, or the last step shown if larger) puts step ``s`` at
    ``e - 1 + s / n``, and a window over batches ``a..b`` spans ``(e - 1 + (a - 1) / n,
    e - 1 + b / n]``. Epochs are separated by NaN (a gap in every line); an infinite bound is NaN
    too (no band where nothing bounds it).
    """

    def __init__(self) -> None:
        self.epochs = 0
        self._metrics: dict[str, _MetricChart] = {}

    def add(self, result: EpochResult) -> None:
        """Take the next epoch of the log (training or not: every bar is drawn)."""
        i = self.epochs
        self.epochs += 1
        e = result.epoch
        n = max(e.target or 0, e.last_step, 1)
        for name, m in result.metrics.items():
            if m.kind == "running_mean":
                self._metrics.setdefault(name, _MetricChart()).add(i, n, m)

    @property
    def enveloped(self) -> bool:
        """True when any metric had too many points and keeps envelopes instead."""
        return any(c.envelope is not None for c in self._metrics.values())

    def panels(self) -> list[Panel]:
        """One `Panel` per running-mean metric, in order of first appearance.

        Raises:
            ValueError: If no epoch was added or none has a running-mean metric.
        """
        if not self.epochs:
            raise ValueError("Expected an explained log with its results kept (keep_results=True).")
        if not self._metrics:
            raise ValueError("The log shows no running mean to draw (only epoch-end values).")
        boundaries = np.arange(1, self.epochs, dtype=np.float64)
        return [Panel(name, c.series(), boundaries) for name, c in self._metrics.items()]


def explain_panels(explained: Explained) -> list[Panel]:
    """One `Panel` per running-mean metric of ``explained`` (which must hold its results); see
    :class:`ChartData`.

    Raises:
        ValueError: If ``explained`` kept no results or has no running-mean metric.
    """
    return _of(explained).panels()


def _of(explained: Explained) -> ChartData:
    chart = ChartData()
    for result in explained.results or []:
        chart.add(result)
    return chart


def chart_figure(chart: ChartData, source: str) -> Any:
    """The chart as a matplotlib figure (close it with `report.plot.close`).

    Raises:
        PlotError: If matplotlib is missing or there is nothing to draw.
    """
    from fitlens.report.plot import figure

    try:
        panels = chart.panels()
        return figure(panels, title=f"fitlens explain: {source}", xlabel=XLABEL)
    except (PlotUnavailable, ValueError) as err:
        raise PlotError(str(err)) from None


def explain_figure(explained: Explained) -> Any:
    """The chart of ``explained`` (which must hold its results) as a matplotlib figure.

    Raises:
        PlotError: If matplotlib is missing or there is nothing to draw.
    """
    return chart_figure(_of(explained), explained.source)


def save_chart(chart: ChartData, source: str, path: str) -> None:
    """Draw one panel per running-mean metric and save it to ``path`` (format from the suffix).

    Raises:
        PlotError: If matplotlib is missing, the path is unusable or there is nothing to draw.
        OSError: If the file cannot be written.
    """
    from fitlens.report.plot import close, save

    check_plot_path(path)
    fig = chart_figure(chart, source)
    try:
        save(fig, path)
    finally:
        close(fig)


def save_plot(explained: Explained, path: str) -> None:
    """`save_chart` for an explained log that holds its results."""
    save_chart(_of(explained), explained.source, path)
