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


def _finite(x: float) -> float:
    # An unbounded side (no display narrows it) is left undrawn rather than stretching the axis.
    return x if math.isfinite(x) else math.nan


def explain_panels(explained: Explained) -> list[Panel]:
    """One `Panel` per running-mean metric of ``explained`` (which must hold its results).

    The x axis is in epochs, as in ``fitlens report``: the ``e``-th epoch of the log (1-based)
    with ``n`` steps (its target, or the last step shown if larger) puts step ``s`` at
    ``e - 1 + s / n``, and a window over batches ``a..b`` spans ``(e - 1 + (a - 1) / n,
    e - 1 + b / n]``. Epochs are separated by NaN (a gap in every line); an infinite bound is NaN
    too (no band where nothing bounds it).

    Raises:
        ValueError: If ``explained`` kept no results or has no running-mean metric.
    """
    results = explained.results
    if not results:
        raise ValueError("Expected an explained log with its results kept (keep_results=True).")
    names: list[str] = []
    for e in results:
        names.extend(n for n, m in e.metrics.items() if m.kind == "running_mean" and n not in names)
    if not names:
        raise ValueError("The log shows no running mean to draw (only epoch-end values).")
    steps = [max(e.epoch.target or 0, e.epoch.last_step, 1) for e in results]
    boundaries = np.arange(1, len(results), dtype=np.float64)
    panels = []
    for name in names:
        shown_x: list[float] = []
        shown_y: list[float] = []
        wx: list[float] = []
        wy: list[float] = []
        lo: list[float] = []
        hi: list[float] = []
        for i, (e, n) in enumerate(zip(results, steps, strict=True)):
            m = e.metrics.get(name)
            if m is None or m.kind != "running_mean":
                continue
            xs = [i + p.step / n for p in m.shown]
            shown_x += [*xs, xs[-1] if xs else i]
            shown_y += [p.mean for p in m.shown] + [math.nan]
            for w in m.windows:
                wx += [i + (w.first_batch - 1) / n, i + w.last_batch / n]
                wy += [w.value, w.value]
                lo += [_finite(w.low)] * 2
                hi += [_finite(w.high)] * 2
            if wx:
                wx.append(wx[-1])
                wy.append(math.nan)
                lo.append(math.nan)
                hi.append(math.nan)
        x, low, high = np.asarray(wx), np.asarray(lo), np.asarray(hi)
        panels.append(
            Panel(
                name,
                [
                    Series("bounds", x, np.asarray(wy), low, high),
                    Series("window", x, np.asarray(wy)),
                    Series("shown", np.asarray(shown_x), np.asarray(shown_y)),
                ],
                boundaries,
            )
        )
    return panels


def explain_figure(explained: Explained) -> Any:
    """The chart of ``explained`` as a matplotlib figure (close it with `report.plot.close`).

    Raises:
        PlotError: If matplotlib is missing or there is nothing to draw.
    """
    from fitlens.report.plot import figure

    try:
        panels = explain_panels(explained)
        return figure(panels, title=f"fitlens explain: {explained.source}", xlabel=XLABEL)
    except (PlotUnavailable, ValueError) as err:
        raise PlotError(str(err)) from None


def save_plot(explained: Explained, path: str) -> None:
    """Draw one panel per running-mean metric and save it to ``path`` (format from the suffix).

    Raises:
        PlotError: If matplotlib is missing, the path is unusable or there is nothing to draw.
        OSError: If the file cannot be written.
    """
    from fitlens.report.plot import close, save

    check_plot_path(path)
    fig = explain_figure(explained)
    try:
        save(fig, path)
    finally:
        close(fig)
