"""The framework-free core of the callbacks: unrolling running means, formatters, the observer."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fitlens.integrations.observer import (
    RunObserver,
    format_free_gap,
    format_jump_forecast,
    unroll_running_means,
)
from fitlens.progress import Progress


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1e3, 1e3, allow_nan=False), st.integers(1, 512).map(float)),
        min_size=1,
        max_size=200,
    )
)
def test_unrolling_float64_running_means_gives_back_each_batch(batches):
    values = np.array([v for v, _ in batches])
    weights = np.array([w for _, w in batches])
    counts = np.cumsum(weights)
    means = np.cumsum(values * weights) / counts
    recovered = unroll_running_means(means, counts)
    scale = np.abs(values).max() + 1.0
    np.testing.assert_allclose(recovered, values, atol=1e-9 * scale * len(values), rtol=0)


def test_unrolling_a_group_gives_its_weighted_mean_and_a_weightless_step_gives_nan():
    # batches 0.5 (32 samples), 1.0 (16), 2.0 (16); the last two arrive together.
    counts = [32, 32, 64]
    means = [0.5, 0.5, (16 + 16 + 32) / 64]
    out = unroll_running_means(means, counts)
    assert out[0] == 0.5 and math.isnan(out[1]) and out[2] == pytest.approx(1.5)


def test_free_gap_line_parts_add_up_to_validation_minus_reported():
    assert format_free_gap("loss", 0.412, 0.305, 0.29) == (
        "gap loss: reported 0.4120 -> now 0.3050 (averaging lag -0.1070) -> val 0.2900 "
        "(train->val -0.0150); estimated from the batches"
    )


def test_jump_forecast_lists_the_now_estimates_and_skips_metrics_without_one():
    line = format_jump_forecast(3, {"loss": (0.412, 0.305), "auc": (0.8, math.nan)})
    assert line == "forecast: epoch 3 should open near loss 0.3050 (reported 0.4120)"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_observer_records_history_timing_and_lines_like_fit():
    clock, out = FakeClock(), io.StringIO()
    obs = RunObserver(Progress(2, file=out), "window", clock)
    obs.begin_train(epochs=2, steps=3)
    for epoch in range(2):
        obs.begin_epoch(epoch)
        for step, (loss, size) in enumerate([(1.0, 4), (0.5, 4), (0.0, 2)], start=1):
            clock.t += 0.1  # data wait
            obs.batch_begin()
            clock.t += 0.4  # step
            obs.batch_end(step, {"loss": loss + epoch}, {"loss": size}, size)
        clock.t += 1.0  # validation
        logs = obs.end_epoch({"val_loss": 0.25})
    history = obs.history
    assert history.history["loss"] == pytest.approx([0.6, 1.6])  # (4 + 2 + 0) / 10, + 1
    assert history.history["loss_now"] == pytest.approx([0.6, 1.1])  # all 6 batches: 22 / 20
    assert history.history["val_loss"] == [0.25, 0.25]
    assert logs == {"loss": pytest.approx(1.6), "loss_now": pytest.approx(1.1), "val_loss": 0.25}
    assert history.timing["data_wait"] == pytest.approx([0.3, 0.3])
    assert history.timing["compute"] == pytest.approx([1.2, 1.2])
    assert history.timing["eval"] == pytest.approx([1.0, 1.0])
    assert history.timing["time"] == pytest.approx([2.5, 2.5])
    assert history.batches["step"].tolist() == [1, 2, 3] * 2
    assert history.batches["size"].tolist() == [4, 4, 2] * 2
    text = out.getvalue()
    assert "Epoch 1/2 - 3 steps - 2.5s" in text
    assert text.count("forecast: epoch") == 1  # none after the last epoch
    assert "gap loss: reported 0.6000 -> now 0.6000" in text


def test_observer_keeps_the_frameworks_value_for_a_metric_without_batch_values():
    obs = RunObserver(Progress(0), "trend", FakeClock())
    obs.begin_train(epochs=1, steps=2)
    obs.begin_epoch(0)
    obs.batch_end(1, {"loss": 1.0}, {"loss": 8}, 8, reported={"auc": 0.7})
    obs.batch_end(2, {"loss": 0.0}, {"loss": 0}, 0, reported={"auc": 0.8})
    logs = obs.end_epoch()
    assert logs["loss"] == 1.0  # the weightless batch counts for nothing
    assert logs["auc"] == 0.8 and math.isnan(logs["auc_now"])
    assert obs.history.batches["loss"].tolist()[0] == 1.0
