"""The chart: styles readable without colour, bounded points, History.plot on real runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import matplotlib
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fitlens.core.history import History
from fitlens.report.charts import history_panels
from fitlens.report.plot import (
    OKABE_ITO,
    STYLES,
    Panel,
    Series,
    close,
    envelope,
    figure,
    minmax_downsample,
    render,
)

from .runs import train

matplotlib.use("Agg")


HISTORY_ROLES = (
    "batches",
    "mean",
    "now",
    "validation",
    "train_mode",
    "eval_mode",
    "forecast",
    "observed",
)
EXPLAIN_ROLES = ("window", "bounds", "shown")


@pytest.mark.parametrize("roles", [HISTORY_ROLES, EXPLAIN_ROLES])
def test_roles_drawn_together_differ_by_line_style_marker_or_width_not_only_colour(roles):
    looks = {(STYLES[r].linestyle, STYLES[r].marker, STYLES[r].linewidth) for r in roles}
    assert len(looks) == len(roles)


def test_the_palette_is_okabe_ito():
    assert {s.color for s in STYLES.values()} <= set(OKABE_ITO.values())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=500),
    st.integers(1, 50),
)
def test_minmax_downsampling_keeps_every_bins_extremes_and_at_most_two_points_a_bin(ys, bins):
    y = np.array(ys)
    x = np.arange(len(y), dtype=np.float64)
    xd, yd = minmax_downsample(x, y, bins)
    assert len(yd) <= max(2 * bins, len(y) if len(y) <= 2 * bins else 0)
    assert np.all(np.diff(xd) > 0)  # order kept
    assert yd.min() == y.min() and yd.max() == y.max()  # global extremes always kept
    if len(y) > 2 * bins:
        _, lo, hi = envelope(x, y, bins)
        assert set(lo) | set(hi) == set(yd)


def _history(epochs: int, steps: int) -> History:
    """A synthetic history with ``epochs * steps`` batches of a rising accuracy."""
    n = epochs * steps
    h = History(["loss", "accuracy"], params={"steps": steps, "now": "'ema_trend'"})
    rng = np.random.default_rng(0)
    t = np.arange(n) / n
    h.batches.append(
        {
            "epoch": np.repeat(np.arange(1, epochs + 1), steps),
            "step": np.tile(np.arange(1, steps + 1), epochs),
            "size": np.full(n, 32),
            "step_time": np.full(n, 0.01),
            "data_time": np.full(n, 0.001),
            "loss": 2.0 * (1 - t) + rng.normal(0, 0.1, n),
            "accuracy": t + rng.normal(0, 0.05, n),
        }
    )
    for e in range(epochs):
        h.record_epoch(e, {"loss": 1.0, "loss_now": 1.0, "accuracy": 0.5, "val_accuracy": 0.5}, {})
    return h


@pytest.mark.parametrize(("epochs", "steps"), [(3, 40), (3000, 5), (4, 250_000)])
def test_no_artist_gets_more_than_two_points_per_bin_whatever_the_run(epochs, steps):
    bins = 500
    fig = figure(history_panels(_history(epochs, steps), bins=bins), bins=bins)
    try:
        for ax in fig.axes:
            for line in ax.get_lines():
                assert len(line.get_xdata()) <= 2 * bins
            for coll in ax.collections:
                for path in coll.get_paths():
                    assert len(path.vertices) <= 4 * bins + 8  # a band: both edges, closed
    finally:
        close(fig)


def test_many_epochs_draw_epoch_means_and_no_boundary_lines():
    fig = figure(history_panels(_history(3000, 5), bins=500), bins=500)
    try:
        ax = fig.axes[0]
        dotted_vertical = [
            ln
            for ln in ax.get_lines()
            if ln.get_linestyle() == ":" and len(set(ln.get_xdata())) == 1
        ]
        assert dotted_vertical == []
        labels = ax.get_legend_handles_labels()[1]
        assert "epoch mean" in labels
    finally:
        close(fig)


def test_history_plot_draws_every_metric_of_a_real_run(tmp_path):
    history, _ = train(epochs=3, train_eval=True)
    fig = history.plot(tmp_path / "chart.png")
    try:
        titles = [ax.get_title(loc="left") for ax in fig.axes]
        assert titles == ["loss", "accuracy"]
        labels = set(fig.axes[1].get_legend_handles_labels()[1])
        assert {
            "batch values",
            "running mean (as Keras shows)",
            "now estimate",
            "validation",
            "train data, train mode",
            "train data, eval mode",
            "forecast (next epoch's start)",
            "observed at next start",
        } <= labels
        # Two boundaries between three epochs, drawn as dotted vertical lines at 1 and 2.
        vertical = sorted(
            ln.get_xdata()[0]
            for ln in fig.axes[0].get_lines()
            if ln.get_linestyle() == ":" and len(set(ln.get_xdata())) == 1
        )
        assert vertical == [1.0, 2.0]
    finally:
        close(fig)
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_dollar_in_a_metric_name_is_shown_literally_not_as_mathtext():
    panel = Panel("cost $x^2$", [Series("mean", np.arange(3.0), np.arange(3.0))])
    fig = figure([panel])
    try:
        render(fig, "svg")  # mathtext would parse (and here fail on) an unescaped name
        assert fig.axes[0].get_title(loc="left") == r"cost \$x^2\$"
    finally:
        close(fig)


def test_svg_output_is_the_same_bytes_for_the_same_run():
    h = _history(3, 40)
    a, b = (figure(history_panels(h)) for _ in range(2))
    try:
        assert render(a, "svg") == render(b, "svg")
    finally:
        close(a)
        close(b)


def test_without_matplotlib_plot_names_the_extra_and_fitlens_still_imports():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["matplotlib"] = None
        import fitlens, fitlens.report.series, fitlens.report.facts, fitlens.report.html
        from fitlens.core.history import History
        h = History(["loss"])
        h.batches.append({"epoch": [1], "step": [1], "size": [1], "step_time": [0.0],
                          "data_time": [0.0], "loss": [1.0]})
        try:
            h.plot()
        except ImportError as e:
            print(e)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert "pip install 'fitlens[plot]'" in result.stdout, result.stderr


def test_importing_fitlens_and_the_report_modules_loads_neither_matplotlib_nor_tensorboard():
    code = (
        "import sys, fitlens, fitlens.report.series, fitlens.report.facts, fitlens.report.html, "
        "fitlens.report.show, fitlens.report.plot, fitlens.integrations.tensorboard; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'tensorboard')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
