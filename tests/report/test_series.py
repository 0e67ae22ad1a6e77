"""Per-batch curves: running means against a naive loop, the replayed now estimate against fit."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fitlens.core.estimators import (
    DEFAULT_NOW,
    EMA,
    AdaptiveTrend,
    EMATrend,
    EpochMean,
    WindowMean,
    make_estimator,
)
from fitlens.report.series import (
    history_curves,
    now_estimator,
    positions,
    replay_now,
    running_mean,
)

from .runs import train


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 3),  # epoch increments (0 stays, 1 moves on)
            st.floats(-1e3, 1e3, allow_nan=False),
            st.integers(1, 64),
        ),
        min_size=1,
        max_size=200,
    )
)
def test_running_mean_matches_a_naive_per_epoch_loop(rows):
    epochs = np.cumsum([1] + [r[0] % 2 for r in rows[1:]])
    values = np.array([r[1] for r in rows])
    sizes = np.array([r[2] for r in rows])
    got = running_mean(values, sizes, epochs)
    mean = EpochMean()
    for i in range(len(rows)):
        if i and epochs[i] != epochs[i - 1]:
            mean.reset()
        mean.update(values[i], sizes[i])
        # Cumulative sums and the estimator add the same terms in the same order.
        assert got[i] == mean.value


def test_a_nan_batch_spoils_the_rest_of_its_epoch_only():
    got = running_mean(np.array([1.0, np.nan, 3.0, 4.0]), np.ones(4), np.array([1, 1, 1, 2]))
    assert got[0] == 1.0 and np.isnan(got[1]) and np.isnan(got[2]) and got[3] == 4.0


def test_positions_put_each_epoch_in_its_unit_interval_and_a_running_epoch_in_part():
    epochs = np.array([1, 1, 1, 1, 2, 2])
    steps = np.array([1, 2, 3, 4, 1, 2])
    assert positions(epochs, steps, 4).tolist() == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    assert positions(epochs, steps, None).tolist() == [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]


def test_now_estimator_reads_back_what_fit_stores_in_params():
    for est in (
        EMATrend(memory=400.0),
        EMA(beta=0.9),
        WindowMean(window=7),
        EMATrend(beta=0.5),
        AdaptiveTrend(memories=(200.0, 900.0)),
    ):
        assert repr(now_estimator(repr(est))) == repr(est)
    assert repr(now_estimator(repr("ema"))) == repr(make_estimator("ema"))
    # Something fit cannot have written falls back to the default rather than running code.
    assert repr(now_estimator("__import__('os').system('true')")) == repr(
        make_estimator(DEFAULT_NOW)
    )


def test_summary_json_names_the_now_estimator_plainly_and_the_reader_takes_both_forms(tmp_path):
    train(tmp_path, epochs=2)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["now"] == DEFAULT_NOW  # the name, not its repr in a string
    for stored in ("ema_trend", "'ema_trend'"):  # this version's form and the earlier one
        assert repr(now_estimator(stored)) == repr(make_estimator("ema_trend"))
    assert repr(now_estimator("window")) == repr(make_estimator("window"))
    assert repr(now_estimator("no_such_estimator")) == repr(make_estimator(DEFAULT_NOW))


def test_the_replayed_now_and_mean_equal_fits_values_at_every_epoch_end_bit_for_bit():
    # 180 samples in batches of 8: 23 steps per epoch, so blocks of 64 straddle epoch ends.
    history, _ = train(epochs=6, batch_size=8)
    curves = history_curves(history)
    for name, c in curves.items():
        at_end = np.isin(c.now_x, c.epoch_mean.x)
        assert c.now[at_end].tolist() == history.history[f"{name}_now"]
        assert c.epoch_mean.value.tolist() == history.history[name]


def test_replay_reads_a_bounded_number_of_points():
    n = 100_000
    rng = np.random.default_rng(0)
    epochs = np.repeat(np.arange(1, 11), n // 10)
    rows, now = replay_now(rng.normal(size=(n, 2)), np.full(n, 32), epochs, "'ema_trend'", 500)
    assert len(rows) <= 500 + 10
    assert now.shape == (len(rows), 2)
    assert rows[-1] == n - 1
