"""The one chart fitlens draws: per metric, batch values, running mean, now estimate, epoch ends.

Used by `History.plot`, `fitlens report` and (through `Panel`/`Series`) `fitlens explain`. A
figure is a list of `Panel`s, one per metric, each a list of `Series` tagged with a *role*; the
role fixes the style, so one quantity looks the same in every picture:

==============  ==========================================  =======  ========  ==========
role            what                                        colour   line      marker
==============  ==========================================  =======  ========  ==========
``batches``     each batch's value (faint; min-max band      grey     thin      none
                per bin when there are many)
``mean``        the epoch's running mean (what Keras shows)  blue     solid     none
``now``         the now estimate                             orange   dashed    none
``validation``  validation at epoch ends                     black    dotted    circle
``train_mode``  train_eval pass, train mode                  green    none      triangle up
``eval_mode``   train_eval pass, eval mode                   purple   none      triangle down
``forecast``    forecast of the next epoch's first batches   yellow   none      diamond
``observed``    what those batches showed                    sky      none      x
``window``      explain: a reconstructed window mean         blue     solid     none
``bounds``      explain: the window's provable bounds        blue     band      none
``shown``       explain: the running mean a log printed      black    solid     dot
==============  ==========================================  =======  ========  ==========

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies)
and every role also differs by line style or marker, so the chart reads in grayscale.

Bounded cost: a series with more than ``2 * bins`` points is reduced per bin to its minimum and
maximum, in order (the min-max envelope), so a spike of one batch in a million still shows and
no artist gets more than ``2 * bins`` points. With more than `MANY` epochs, per-epoch markers,
error bars and boundary lines are left out (they would be a smear) and lines carry the values.

matplotlib is imported only inside the functions that draw (the ``fitlens[plot]`` extra).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fitlens.core.files import write_atomic

Role = Literal[
    "batches",
    "mean",
    "now",
    "validation",
    "train_mode",
    "eval_mode",
    "forecast",
    "observed",
    "window",
    "bounds",
    "shown",
]

#: Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "grey": "#8C8C8C",
}

#: Above this many epochs, per-epoch markers, error bars and boundary lines are left out.
MANY = 60


@dataclass(frozen=True)
class Style:
    """How a role is drawn: colour, line style (``"none"``: markers only), marker, legend label."""

    label: str
    color: str
    linestyle: str
    marker: str
    linewidth: float = 1.5
    zorder: int = 3


STYLES: dict[str, Style] = {
    "batches": Style("batch values", OKABE_ITO["grey"], "-", "", 0.6, 1),
    "mean": Style("running mean (as Keras shows)", OKABE_ITO["blue"], "-", ""),
    "now": Style("now estimate", OKABE_ITO["vermillion"], "--", ""),
    "validation": Style("validation", OKABE_ITO["black"], ":", "o", 1.2, 5),
    "train_mode": Style("train data, train mode", OKABE_ITO["green"], "none", "^", 1.2, 5),
    "eval_mode": Style("train data, eval mode", OKABE_ITO["purple"], "none", "v", 1.2, 5),
    "forecast": Style("forecast (next epoch's start)", OKABE_ITO["orange"], "none", "D", 1.2, 6),
    "observed": Style("observed at next start", OKABE_ITO["sky"], "none", "X", 1.2, 6),
    "window": Style("reconstructed window mean", OKABE_ITO["blue"], "-", ""),
    "bounds": Style("reconstructed bounds", OKABE_ITO["blue"], "-", "", 0.0, 1),
    "shown": Style("running mean shown in the log", OKABE_ITO["black"], "-", ".", 0.8, 4),
}


@dataclass(frozen=True)
class Series:
    """One quantity in a panel.

    Attributes:
        role: what it is (see the module table); fixes the style and the default label.
        x: positions (epochs: epoch ``e`` spans ``(e - 1, e]``), increasing.
        y: values, one per position (NaN leaves a gap).
        low, high: an interval per position (error bars for points, a band for ``bounds``).
        label: overrides the role's legend label.
    """

    role: Role
    x: np.ndarray
    y: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    label: str | None = None


@dataclass(frozen=True)
class Panel:
    """One metric's axes: its series and the epoch boundaries (x positions) to mark."""

    title: str
    series: Sequence[Series]
    boundaries: np.ndarray = field(default_factory=lambda: np.zeros(0))


def plain_text(text: str) -> str:
    """``text`` as matplotlib shows it literally: ``$`` would start mathtext, so it is escaped."""
    return text.replace("$", r"\$")


class PlotUnavailable(ImportError):
    """matplotlib is not installed."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend.

    Raises:
        PlotUnavailable: naming the extra to install.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "Drawing charts needs matplotlib. Install it with: pip install 'fitlens[plot]'"
        ) from None
    return plt


def envelope(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin ``(x centre, min, max)`` of ``y`` over ``bins`` equal runs of points.

    NaN values are ignored; a bin of only NaN gives NaN (a gap).

    Example:
        >>> xc, lo, hi = envelope(np.arange(6.0), np.array([1, 5, 2, 2, 0, 9.0]), 3)
        >>> lo.tolist(), hi.tolist()
        ([1.0, 2.0, 0.0], [5.0, 2.0, 9.0])
    """
    n = len(y)
    bins = max(1, min(bins, n))
    edges = np.linspace(0, n, bins + 1).astype(np.int64)
    starts = edges[:-1]
    yy = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(yy)
    lo = np.minimum.reduceat(np.where(finite, yy, np.inf), starts)
    hi = np.maximum.reduceat(np.where(finite, yy, -np.inf), starts)
    lo[~np.isfinite(lo)] = np.nan
    hi[~np.isfinite(hi)] = np.nan
    xx = np.asarray(x, dtype=np.float64)
    centre = (xx[starts] + xx[edges[1:] - 1]) / 2.0
    return centre, lo, hi


def minmax_downsample(x: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``2 * bins`` points that keep each bin's minimum and maximum, in their order.

    A series with at most ``2 * bins`` points is returned as is. NaN points are dropped from the
    reduced series (a NaN-only bin leaves nothing).

    Example:
        >>> x, y = minmax_downsample(np.arange(8.0), np.array([0, 3, 1, 1, 2, 9, 4, 4.0]), 2)
        >>> x.tolist(), y.tolist()
        ([0.0, 1.0, 4.0, 5.0], [0.0, 3.0, 2.0, 9.0])
    """
    xx, yy = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(yy)
    if n <= 2 * bins:
        return xx, yy
    edges = np.linspace(0, n, bins + 1).astype(np.int64)
    starts = edges[:-1]
    ids = np.arange(n)
    finite = np.isfinite(yy)
    # Per bin, the index of the (first) minimum and maximum, via reduceat on sortable keys.
    low_key = np.where(finite, yy, np.inf)
    high_key = np.where(finite, yy, -np.inf)
    lo = np.minimum.reduceat(low_key, starts)
    hi = np.maximum.reduceat(high_key, starts)
    bin_of = np.repeat(np.arange(bins), np.diff(edges))
    is_lo = low_key == lo[bin_of]
    is_hi = high_key == hi[bin_of]
    first_lo = np.full(bins, n)
    first_hi = np.full(bins, n)
    np.minimum.at(first_lo, bin_of[is_lo], ids[is_lo])
    np.minimum.at(first_hi, bin_of[is_hi], ids[is_hi])
    keep = np.unique(np.concatenate([first_lo, first_hi]))
    keep = keep[keep < n]
    keep = keep[finite[keep]]
    return xx[keep], yy[keep]


#: Horizontal offsets (points) of markers that share an epoch end, so none hides another.
_OFFSETS = {"train_mode": -6.0, "eval_mode": -6.0, "forecast": 6.0, "observed": 6.0}


def _draw_series(ax: Any, s: Series, bins: int, few_epochs: bool) -> None:
    style = STYLES[s.role]
    label = s.label or style.label
    x, y = np.asarray(s.x, dtype=np.float64), np.asarray(s.y, dtype=np.float64)
    if not len(x):
        return
    common = {"color": style.color, "zorder": style.zorder, "label": label}
    if s.role == "bounds" and s.low is not None and s.high is not None:
        ax.fill_between(x, s.low, s.high, step="post", alpha=0.2, lw=0, **common)
        return
    if s.role == "batches":
        if len(y) > 2 * bins:
            xc, lo, hi = envelope(x, y, bins)
            ax.fill_between(
                xc, lo, hi, alpha=0.35, lw=0, **{**common, "label": f"{label} (min-max)"}
            )
        else:
            ax.plot(x, y, ls="-", lw=style.linewidth, alpha=0.6, **common)
        return
    if style.marker and (style.linestyle == "none" or few_epochs) and len(x) <= 2 * bins:
        ls = style.linestyle if len(x) > 1 else "none"
        if s.role in _OFFSETS:
            from matplotlib.transforms import offset_copy

            common["transform"] = offset_copy(
                ax.transData, fig=ax.figure, x=_OFFSETS[s.role], units="points"
            )
        if s.low is not None and s.high is not None and few_epochs:
            err = np.abs(np.vstack([y - s.low, s.high - y]))
            err[~np.isfinite(err)] = 0.0
            ax.errorbar(
                x,
                y,
                yerr=err,
                ls=ls,
                lw=style.linewidth,
                marker=style.marker,
                ms=7 if s.role == "observed" else 5,
                capsize=2.5,
                **common,
            )
        else:
            ax.plot(
                x,
                y,
                ls=ls,
                lw=style.linewidth,
                marker=style.marker,
                ms=7 if s.role == "observed" else 5,
                **common,
            )
        return
    xd, yd = minmax_downsample(x, y, bins)
    ls = style.linestyle if style.linestyle != "none" else "-"
    ax.plot(xd, yd, ls=ls, lw=style.linewidth, **common)


def figure(
    panels: Sequence[Panel],
    *,
    title: str = "",
    xlabel: str = "epoch",
    bins: int = 1000,
    width: float = 9.0,
    panel_height: float = 2.8,
) -> Any:
    """A matplotlib figure with one row per panel, sharing the x axis.

    Args:
        panels: what to draw, one panel per metric.
        title: the figure's title (drawn as text; no markup is interpreted).
        xlabel: the x axis's label.
        bins: at most ``2 * bins`` points per line (see `minmax_downsample`).
        width, panel_height: inches.

    Returns:
        A ``matplotlib.figure.Figure``; close it with ``matplotlib.pyplot.close(fig)``.

    Raises:
        PlotUnavailable: If matplotlib is missing.
        ValueError: If ``panels`` is empty or ``bins < 1``.
    """
    if not panels:
        raise ValueError("Expected at least one panel to draw. Received none.")
    if bins < 1:
        raise ValueError(f"Expected `bins` >= 1. Received: {bins!r}.")
    plt = pyplot()
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(width, 1.2 + panel_height * len(panels)),
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    handles: dict[str, Any] = {}
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        few = len(panel.boundaries) < MANY
        for s in panel.series:
            _draw_series(ax, s, bins, few)
        if few:
            for b in panel.boundaries:
                ax.axvline(b, color=OKABE_ITO["grey"], ls=":", lw=0.7, zorder=0)
        ax.set_title(plain_text(panel.title), loc="left", fontsize=10)
        ax.grid(True, axis="y", color="#dddddd", lw=0.5)
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    axes[-1, 0].set_xlabel(plain_text(xlabel))
    if title:
        fig.suptitle(plain_text(title), fontsize=11)
    if handles:
        fig.legend(
            list(handles.values()),
            [plain_text(k) for k in handles],
            loc="outside lower center",
            ncol=min(4, len(handles)),
            fontsize=8,
            frameon=False,
        )
    return fig


def render(fig: Any, fmt: Literal["svg", "png"] = "svg", dpi: int = 100) -> bytes:
    """The figure as SVG or PNG bytes, without timestamps (the same input gives the same bytes)."""
    pyplot()
    import matplotlib

    metadata: dict[str, Any] = {"Date": None} if fmt == "svg" else {"Software": None}
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "fitlens", "svg.fonttype": "path"}):
        fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata, bbox_inches="tight")
    return buffer.getvalue()


def save(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure to ``path``; the format comes from the suffix (``.png``, ``.svg``, ...)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fmt in ("svg", "png"):
        return write_atomic(path, render(fig, fmt, dpi))  # type: ignore[arg-type]
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
    return write_atomic(path, buffer.getvalue())


def close(fig: Any) -> None:
    """Release the figure's memory."""
    pyplot().close(fig)


__all__ = [
    "MANY",
    "OKABE_ITO",
    "STYLES",
    "Panel",
    "PlotUnavailable",
    "Series",
    "Style",
    "close",
    "envelope",
    "figure",
    "minmax_downsample",
    "plain_text",
    "render",
    "save",
]
