"""`--plot`: shown means, reconstructed windows with their bounds, and epoch boundaries.

matplotlib is imported only here, only when a plot is asked for (the ``fitlens[plot]`` extra).
"""

from __future__ import annotations

import io
import os
from typing import Any

from fitlens.core.files import write_atomic
from fitlens.explain.writer import Explained

#: File types ``--plot`` writes (matplotlib's raster and vector backends without extras).
FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


class PlotError(ValueError):
    """The plot cannot be drawn: matplotlib is missing or the path is unusable."""


#: Kept for callers that caught the old name.
PlotUnavailable = PlotError


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


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError(
            "--plot needs matplotlib; install fitlens[plot] (pip install 'fitlens[plot]')"
        ) from None
    return plt


def save_plot(explained: Explained, path: str) -> None:
    """Draw one panel per running-mean metric and save it to ``path`` (format from the suffix).

    The x axis is the position in the whole log: epoch ``e``'s step ``s`` sits at
    ``offset(e) + s``, with offsets the cumulative epoch lengths, so epochs line up end to end.

    Raises:
        PlotError: If matplotlib is missing or the path is unusable.
        OSError: If the file cannot be written.
    """
    check_plot_path(path)
    plt = _pyplot()
    results = explained.results or []
    names: list[str] = []
    for e in results:
        for name, m in e.metrics.items():
            if m.kind == "running_mean" and name not in names:
                names.append(name)
    names = names or ["loss"]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 3.2 * len(names)), squeeze=False)
    offsets, total = [], 0
    for e in results:
        offsets.append(total)
        total += max(e.epoch.target or 0, e.epoch.last_step)
    for ax, name in zip(axes[:, 0], names, strict=True):
        for e, offset in zip(results, offsets, strict=True):
            if name not in e.metrics:
                continue
            m = e.metrics[name]
            xs = [offset + p.step for p in m.shown]
            ax.plot(
                xs,
                [p.mean for p in m.shown],
                "k.-",
                lw=0.8,
                ms=3,
                label="shown running mean" if offset == 0 else None,
            )
            for i, w in enumerate(m.windows):
                x0, x1 = offset + w.first_batch - 1, offset + w.last_batch
                low = max(w.low, w.value - 1e9)
                high = min(w.high, w.value + 1e9)
                ax.fill_between(
                    [x0, x1],
                    [low, low],
                    [high, high],
                    color="tab:blue",
                    alpha=0.25,
                    lw=0,
                    label="reconstructed bounds" if offset == 0 and i == 0 else None,
                )
                ax.plot(
                    [x0, x1],
                    [w.value, w.value],
                    color="tab:blue",
                    lw=1.2,
                    label="reconstructed window mean" if offset == 0 and i == 0 else None,
                )
            if offset:
                ax.axvline(offset, color="tab:red", lw=0.6, ls="--")
        ax.set_ylabel(name)
        ax.legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel("position in the log (steps, epochs end to end; red: epoch boundary)")
    fig.suptitle(f"fitlens explain: {explained.source}")
    fig.tight_layout()
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=110, format=os.path.splitext(path)[1].lower().lstrip("."))
        write_atomic(path, buffer.getvalue())
    finally:
        plt.close(fig)
