"""`--plot`'s panels: where each shown mean and window sits, and that the bands are the bounds."""

from __future__ import annotations

import io
import math

import numpy as np

from fitlens.explain import plot
from fitlens.explain.analysis import Options
from fitlens.explain.command import explain_stream
from fitlens.explain.plot import explain_panels

from .test_command import LOG


def _explained(log: bytes = LOG):
    return explain_stream(io.BytesIO(log), "train.log", Options(), keep_results=True)


def test_shown_means_sit_at_their_step_over_the_epoch_length_with_a_gap_between_epochs():
    panels = explain_panels(_explained())
    assert [p.title for p in panels] == ["loss", "acc"]
    shown = next(s for s in panels[0].series if s.role == "shown")
    # Epoch 1 shows steps 1, 50, 99, 100 of 100; epoch 2 steps 1 and 100; NaN ends each epoch.
    assert shown.x.tolist() == [0.01, 0.5, 0.99, 1.0, 1.0, 1.01, 2.0, 2.0]
    assert shown.y[:4].tolist() == [0.9, 0.7, 0.6, 0.599] and math.isnan(shown.y[4])
    assert shown.y[5:7].tolist() == [0.4, 0.3] and math.isnan(shown.y[7])
    assert panels[0].boundaries.tolist() == [1.0]


def test_each_band_is_exactly_its_windows_bounds_over_its_batches():
    explained = _explained()
    (loss, _) = explain_panels(explained)
    bounds = next(s for s in loss.series if s.role == "bounds")
    window = next(s for s in loss.series if s.role == "window")
    expected_x, expected_low, expected_high, expected_y = [], [], [], []
    for i, result in enumerate(explained.results or []):
        for w in result.metrics["loss"].windows:
            expected_x += [i + (w.first_batch - 1) / 100, i + w.last_batch / 100]
            expected_low += [w.low, w.low]
            expected_high += [w.high, w.high]
            expected_y += [w.value, w.value]
        expected_x.append(expected_x[-1])
        expected_low.append(math.nan)
        expected_high.append(math.nan)
        expected_y.append(math.nan)
    assert len(expected_x) > 4  # both epochs have windows
    np.testing.assert_array_equal(bounds.x, expected_x)
    np.testing.assert_array_equal(bounds.low, expected_low)
    np.testing.assert_array_equal(bounds.high, expected_high)
    np.testing.assert_array_equal(window.y, expected_y)
    np.testing.assert_array_equal(window.x, bounds.x)


def _long_log(epochs: int, steps: int = 40) -> bytes:
    """Keras 2 one-line-per-step output: ``epochs`` epochs of ``steps`` steps, loss falling."""
    lines = []
    for e in range(1, epochs + 1):
        lines.append(f"Epoch {e}/{epochs}")
        total = 0.0
        for s in range(1, steps + 1):
            total += 1.0 / e + 0.01 * ((s * 7919 + e * 104729) % 13)
            lines.append(f"{s:3d}/{steps} [====] - ETA: 1s - loss: {total / s:.4f}")
    return ("\n".join(lines) + "\n").encode()


def test_a_long_log_keeps_a_bounded_envelope_that_holds_every_point(monkeypatch):
    # Every window and shown mean of the exact chart lies within its column's envelope, and no
    # line holds more than two points per column, however many epochs the log has.
    monkeypatch.setattr(plot, "EXACT_POINTS", 10**9)
    explained = _explained(_long_log(300))
    (exact,) = explain_panels(explained)
    monkeypatch.setattr(plot, "EXACT_POINTS", 500)
    chart = plot.ChartData()
    for result in explained.results or []:
        chart.add(result)
    assert chart.enveloped
    (env,) = chart.panels()
    roles = {s.role: s for s in env.series}
    width = roles["bounds"].x[1] - roles["bounds"].x[0]
    for role in ("window", "shown", "bounds"):
        assert len(roles[role].x) <= 2 * plot.COLUMNS
    for role in ("window", "shown"):
        points = next(s for s in exact.series if s.role == role)
        keep = np.isfinite(points.y)
        column = (points.x[keep] / width).astype(int)
        low, high = roles[role].y[0::2], roles[role].y[1::2]
        assert (low[column] <= points.y[keep]).all() and (points.y[keep] <= high[column]).all()
        # Each column's extremes are points of the exact chart (an envelope, not a widening).
        ends = np.concatenate([low, high])
        assert set(ends[np.isfinite(ends)].tolist()) <= set(points.y[keep].tolist())
    # Each window's band covers every column the window spans.
    checked = 0
    for i, result in enumerate(explained.results or []):
        for w in result.metrics["loss"].windows:
            first = int((i + (w.first_batch - 1) / 40) / width)
            last = min(int((i + w.last_batch / 40) / width), plot.COLUMNS - 1)
            cols = np.arange(first, last + 1)
            assert (roles["bounds"].low[cols] <= w.low).all()
            assert (w.high <= roles["bounds"].high[cols]).all()
            checked += 1
    assert checked > 300


def test_a_short_log_draws_every_point_as_before():
    chart = plot.ChartData()
    for result in _explained().results or []:
        chart.add(result)
    assert not chart.enveloped
