"""What every estimator promises: odd weights, exact merge/extend (intervals included), refusals
of states that cannot combine, step counts, state restore, and the tuned defaults."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fitlens.core.estimators import (
    BEND_WEIGHT,
    DEFAULT_NOW,
    EMA,
    AdaptiveTrend,
    EMATrend,
    EpochMean,
    LastValue,
    TrendWindow,
    WindowMean,
    make_estimator,
)
from fitlens.core.metric_range import NONNEGATIVE, RATE

STEPPED = {
    "ema": lambda: EMA(0.9),
    "window": lambda: WindowMean(7),
    "trend": lambda: TrendWindow(7),
    "ema_trend": lambda: EMATrend(beta=0.8),
    "adaptive": lambda: AdaptiveTrend((100.0, 400.0)),
}
ALL = {"mean": EpochMean, "last": LastValue, **STEPPED}
OTHER_SETTINGS = {
    "ema": (lambda: EMA(0.9), lambda: EMA(0.8)),
    "window": (lambda: WindowMean(7), lambda: WindowMean(8)),
    "trend": (lambda: TrendWindow(7), lambda: TrendWindow(8)),
    "ema_trend beta": (lambda: EMATrend(beta=0.8), lambda: EMATrend(beta=0.7)),
    "ema_trend memory": (lambda: EMATrend(800), lambda: EMATrend(400)),
    "adaptive": (lambda: AdaptiveTrend((100.0, 400.0)), lambda: AdaptiveTrend((100.0,))),
    "kind": (EpochMean, LastValue),
    "trend vs window": (lambda: TrendWindow(7), lambda: WindowMean(7)),
    "bounds": (lambda: EMA(0.9, bounds=RATE), lambda: EMA(0.9, bounds=NONNEGATIVE)),
}

odd_weights = st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5, 7.0, 32.0])


@st.composite
def odd_batches(draw):
    """Batches with zero and fractional weights (at least one positive)."""
    vals = draw(st.lists(st.floats(0, 1), min_size=1, max_size=40))
    w = draw(st.lists(odd_weights, min_size=len(vals), max_size=len(vals)))
    w[draw(st.integers(0, len(vals) - 1))] = draw(st.sampled_from([0.5, 3.0]))
    return np.array(vals), np.array(w)


def naive_line(v, w, d, least=3):
    """Weighted line fit at the newest batch; the weighted mean with fewer than ``least``
    batches with weight (`TrendWindow`) or steps (`EMATrend`, ``least=0`` past 3 steps), or
    with all weight on one batch."""
    x = np.arange(len(v), dtype=float) - (len(v) - 1)
    ww = d * w
    keep = ww > 0
    if keep.sum() < max(least, 2):
        return float(np.sum(ww * v) / np.sum(ww))
    coef = np.polyfit(x[keep], v[keep], 1, w=np.sqrt(ww[keep]))
    return float(np.polyval(coef, 0.0))


@given(odd_batches())
def test_zero_and_fractional_weights_count_as_that_many_samples(data):
    v, w = data
    x = np.arange(len(v))[::-1].astype(float)  # batches before the newest
    mean, ema, window = EpochMean(), EMA(0.9), WindowMean(5)
    trend, line = TrendWindow(6), EMATrend(beta=0.8)
    for est in (mean, ema, window, trend, line):
        est.update(v, w)
    close = {"rel": 1e-7, "abs": 1e-7}
    assert mean.value == pytest.approx(np.sum(v * w) / np.sum(w), **close)
    assert mean.weight == pytest.approx(np.sum(w))
    assert ema.value == pytest.approx(np.sum(0.9**x * v * w) / np.sum(0.9**x * w), **close)
    if np.sum(w[-5:]) > 0:
        assert window.value == pytest.approx(np.sum(v[-5:] * w[-5:]) / np.sum(w[-5:]), **close)
    if np.sum(w[-6:]) > 0:
        assert trend.value == pytest.approx(naive_line(v[-6:], w[-6:], 1.0), rel=1e-6, abs=1e-6)
    least = 0 if len(v) >= 3 else 3
    assert line.value == pytest.approx(naive_line(v, w, 0.8**x, least), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("name", ["mean", "ema", "window"])
def test_a_batch_with_zero_weight_leaves_an_average_unchanged(name):
    a, b = ALL[name](), ALL[name]()
    for est in (a, b):
        est.update([0.3, 0.5, 0.6, 0.7], 16)
    b.update([123.0], 0.0)
    decay = 0.9 if name == "ema" else 1.0  # the EMA's weight fades by one step
    assert b.value == pytest.approx(a.value, rel=1e-12)
    assert b.weight == pytest.approx(decay * a.weight, rel=1e-12)
    if name != "mean":
        assert b.steps == a.steps + 1  # type: ignore[attr-defined]


def test_a_last_batch_with_zero_weight_leaves_no_last_value():
    est = LastValue()
    est.update([0.3, 0.5], [16, 0])
    assert math.isnan(est.value) and est.weight == 0.0


@pytest.mark.parametrize("name", OTHER_SETTINGS)
def test_merging_or_extending_with_other_settings_is_refused(name):
    make_a, make_b = OTHER_SETTINGS[name]
    a, b = make_a(), make_b()
    a.update([0.5, 0.6, 0.7], 16)
    b.update([0.5, 0.6, 0.7], 16)
    with pytest.raises(ValueError, match="same kind and settings"):
        a.merge(b)
    with pytest.raises(ValueError, match="same kind and settings"):
        a.extend(b)


@pytest.mark.parametrize("name", STEPPED)
def test_merging_states_over_different_step_counts_is_refused_and_points_to_extend(name):
    a, b = STEPPED[name](), STEPPED[name]()
    a.update([0.5, 0.6, 0.7], 16)
    b.update([0.5, 0.6], 16)
    kind = type(a).__name__ if name != "adaptive" else "EMATrend"
    with pytest.raises(
        ValueError, match=rf"merge {kind} states.*Received 3 and 2 steps; use `extend`"
    ):
        a.merge(b)


@pytest.mark.parametrize("name", STEPPED)
@given(first=st.integers(0, 30), later=st.integers(0, 30))
def test_steps_after_extend_count_both_parts(name, first, later):
    a, b = STEPPED[name](), STEPPED[name]()
    a.update(np.linspace(0.1, 0.9, first), 8)
    b.update(np.linspace(0.2, 0.8, later), 8)
    a.extend(b)
    assert a.steps == first + later  # type: ignore[attr-defined]


@pytest.mark.parametrize("bounds", [RATE, NONNEGATIVE])
@pytest.mark.parametrize("name", ALL)
@given(split=st.integers(0, 35), seed=st.integers(0, 3))
def test_extend_gives_the_same_value_and_interval_as_one_estimator_over_everything(
    name, bounds, split, seed
):
    rng = np.random.default_rng(seed)
    n = rng.integers(1, 64, size=40).astype(float)
    n[min(split, 34)] = n[0]  # both parts size a memory in samples alike
    v = rng.binomial(n.astype(int), 0.3 + 0.01 * np.arange(40)) / n
    whole, a, b = (ALL[name]().clone(bounds) for _ in range(3))
    whole.update(v[:-5], n[:-5])
    a.update(v[:split], n[:split])
    b.update(v[split:-5], n[split:-5])
    a.extend(b)
    for est in (a, whole):  # and both go on alike (an empty one took the other's decay)
        est.update(v[-5:], n[-5:])
    assert a.value == pytest.approx(whole.value, rel=1e-9, abs=1e-9)
    assert a.interval() == pytest.approx(whole.interval(), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("name", [k for k in ALL if k not in ("last", "adaptive")])
@given(seed=st.integers(0, 5), ranks=st.integers(2, 4))
def test_merged_ranks_give_the_global_value_and_rate_interval(name, seed, ranks):
    """Each rank sees a shard of every global batch; the rate interval depends only on sums
    of samples, so it is exact too (a loss's spread would use the shards as observations)."""
    rng = np.random.default_rng(seed)
    p = np.linspace(0.4, 0.9, 30)
    shards = [rng.integers(1, 32, size=30) for _ in range(ranks)]  # rank r's share of batch i
    correct = [rng.binomial(s, p) for s in shards]
    states = []
    for s, k in zip(shards, correct, strict=True):
        est = ALL[name]().clone(RATE)
        est.update(k / s, s.astype(float))
        states.append((est, k))
    n = sum(shards)
    whole = ALL[name]().clone(RATE)
    whole.update(sum(correct) / n, n.astype(float))
    merged = states[0][0]
    for est, _ in states[1:]:
        merged.merge(est)
    assert merged.value == pytest.approx(whole.value, rel=1e-9, abs=1e-9)
    assert merged.interval() == pytest.approx(whole.interval(), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_restores_value_interval_and_future(name):
    rng = np.random.default_rng(0)
    v, w = rng.random(30), rng.integers(1, 33, size=30).astype(float)
    a = ALL[name]().clone(RATE)
    a.update(v[:20], w[:20])
    b = a.clone()
    b.load_state_dict(a.state_dict())
    assert (b.value, b.interval()) == (a.value, a.interval())
    a.update(v[20:], w[20:])
    b.update(v[20:], w[20:])
    assert b.value == pytest.approx(a.value, rel=1e-12) and b.weight == a.weight


@pytest.mark.parametrize("name", ALL)
def test_a_state_with_a_missing_key_is_refused_with_the_missing_name(name):
    est = ALL[name]()
    state = est.state_dict()
    dropped = sorted(state)[-1]
    del state[dropped]
    kind = type(est).__name__
    with pytest.raises(ValueError, match=rf"missing \['{dropped}'\].* of a {kind} "):
        ALL[name]().load_state_dict(state)


def test_the_tuned_defaults_are_the_ones_the_benchmark_chose():
    assert EMATrend().memory == 800.0 and EMATrend().beta is None
    assert EMA().beta == 0.98
    assert WindowMean().window == 50 and TrendWindow().window == 50
    assert AdaptiveTrend().memories == (300.0, 600.0, 1200.0, 2400.0, 4800.0)
    assert BEND_WEIGHT == 1.0 and EMATrend().bend_weight == 1.0
    assert AdaptiveTrend().bend_weight == 2.0
    assert DEFAULT_NOW == "adaptive_trend"
    assert make_estimator(DEFAULT_NOW).name == DEFAULT_NOW


def test_adaptive_trend_needs_a_memory_and_reads_the_line_with_the_least_estimated_error():
    with pytest.raises(ValueError, match=r"^Expected at least one memory \(samples\)"):
        AdaptiveTrend(())
    flat = AdaptiveTrend((100.0, 3200.0), bounds=RATE)
    rng = np.random.default_rng(0)
    flat.update(rng.binomial(32, 0.8, size=300) / 32, 32)
    assert flat.fit() == flat.lines[1].fit()  # nothing bends: the long, quiet memory
    bent = AdaptiveTrend((100.0, 3200.0), bounds=RATE)
    bent.update(0.95 - 0.5 * np.exp(-np.arange(300) / 20.0), 32)
    assert bent.fit() == bent.lines[0].fit()  # a fast bend: the short memory


def test_adaptive_trend_merges_and_extends_each_memory_as_its_own_ema_trend():
    rng = np.random.default_rng(3)
    v1, v2 = rng.random(20), rng.random(20)
    a, b = AdaptiveTrend((50.0, 200.0)), AdaptiveTrend((50.0, 200.0))
    a.update(v1, 8)
    b.update(v2, 8)
    lines = [EMATrend(m) for m in (50.0, 200.0)]
    others = [EMATrend(m) for m in (50.0, 200.0)]
    for line, other in zip(lines, others, strict=True):
        line.update(v1, 8)
        other.update(v2, 8)
        line.merge(other)
    a.merge(b)
    assert [x.state_dict()["m"].tolist() for x in a.lines] == [
        x.state_dict()["m"].tolist() for x in lines
    ]
    a.extend(b)
    assert a.steps == 40 and a.weight == a.lines[0].weight


def test_batches_must_be_one_value_each_with_finite_nonnegative_weights():
    with pytest.raises(ValueError, match=r"one value per batch.*shape \(1, 2\)"):
        EMATrend().update([[0.1, 0.2]])
    with pytest.raises(ValueError, match=r"finite and >= 0.*inf"):
        EMA().update([0.1, 0.2], [1.0, math.inf])
    with pytest.raises(ValueError, match=r"finite and >= 0.*-1\.0"):
        WindowMean().update([0.1], -1.0)
    est = EpochMean()
    est.update([0.2, 0.4], 8)  # one scalar weight for every batch
    assert (est.value, est.weight) == (pytest.approx(0.3), 16.0)


def test_reset_forgets_everything_and_keeps_the_settings():
    for name, make in ALL.items():
        est = make()
        est.update([0.3, 0.5, 0.7, 0.9], 16)
        est.reset()
        fresh = make()
        assert math.isnan(est.value) and est.weight == 0.0, name
        assert repr(est) == repr(fresh), name
        est.update([0.3, 0.5, 0.7, 0.9], 16)
        fresh.update([0.3, 0.5, 0.7, 0.9], 16)
        assert est.value == fresh.value, name


def test_merged_windows_of_a_loss_give_the_interval_of_one_window_over_the_global_batches():
    rng = np.random.default_rng(4)
    shards = [rng.integers(1, 16, size=30).astype(float) for _ in range(3)]
    values = [1.0 - 0.01 * np.arange(30) + rng.normal(0, 0.3, size=30) for _ in range(3)]
    ranks = []
    for v, w in zip(values, shards, strict=True):
        est = TrendWindow(12, bounds=NONNEGATIVE)
        est.update(v, w)
        ranks.append(est)
    n = sum(shards)
    whole = TrendWindow(12, bounds=NONNEGATIVE)
    whole.update(sum(v * w for v, w in zip(values, shards, strict=True)) / n, n)
    for est in ranks[1:]:
        ranks[0].merge(est)
    assert ranks[0].interval() == pytest.approx(whole.interval(), rel=1e-9)


def test_a_state_dict_is_a_copy_and_a_state_read_back_as_lists_of_ints_restores():
    est = EMATrend(beta=0.8)
    est.update([0.3, 0.5, 0.6], 16)
    state = est.state_dict()
    before = state["m"].copy()
    est.update([0.9], 16)
    assert np.array_equal(state["m"], before)  # the checkpoint did not move with the estimator
    fresh = EMA(0.9).state_dict()
    as_json = {k: [int(x) for x in v] if isinstance(v, np.ndarray) else v for k, v in fresh.items()}
    restored = EMA(0.9)
    restored.load_state_dict(as_json)
    restored.update([0.25, 0.75], 2.5)
    assert restored.value == pytest.approx(0.5 * (0.25 * 0.9 + 0.75) / 0.95)


def test_a_clone_keeps_the_nan_policy_and_the_bounds():
    est = EMATrend(400, nan_policy="ignore", bounds=RATE).clone()
    est.update([0.5, math.nan, 0.7], 8)
    assert (est.nan_policy, est.bounds, est.memory) == ("ignore", RATE, 400.0)
    decay = math.exp(-8 / 400)  # two batches: their discounted mean, the NaN left out
    assert est.value == pytest.approx((decay * 0.5 + 0.7) / (decay + 1))


def test_merging_memories_sized_from_different_batches_is_refused_with_the_fix():
    a, b = EMATrend(800), EMATrend(800)
    a.update([0.5, 0.6], 16)
    b.update([0.5, 0.6], 32)
    with pytest.raises(
        ValueError, match=r"first batches of different sizes\); pass a fixed `beta`"
    ):
        a.merge(b)


def test_a_window_state_dict_does_not_move_with_later_batches():
    est = WindowMean(3)
    est.update([0.1, 0.2], 4)
    state = est.state_dict()
    est.update([0.9, 0.9], 4)
    assert state["sums"].tolist() == [0.4, 0.8, 0.0] and state["steps"] == 2


def test_a_block_longer_than_the_window_keeps_counting_steps_and_order():
    est, one_by_one = TrendWindow(3), TrendWindow(3)
    est.update([0.1, 0.2], 4)
    est.update([0.3, 0.5, 0.4, 0.8, 0.6], 4)
    for v in [0.1, 0.2, 0.3, 0.5, 0.4, 0.8, 0.6]:
        one_by_one.update(v, 4)
    assert est.steps == 7 and est.value == pytest.approx(one_by_one.value)


def test_a_zero_weight_batch_in_a_window_leaves_a_finite_loss_interval():
    est = WindowMean(6, bounds=NONNEGATIVE)
    est.update([1.0, 0.9, 0.85, 0.8, 0.7], [16, 16, 0, 16, 16])
    low, high = est.interval()
    assert 0.0 < low < est.value < high < math.inf


def test_decays_and_memories_at_the_edges_of_their_ranges():
    with pytest.raises(ValueError, match=r"`beta` in \(0, 1\)"):
        EMATrend(beta=0.0)
    assert EMATrend(beta=1e-9).beta == 1e-9
    small = EMATrend(0.5)  # half a sample of memory is allowed: the last batch dominates
    small.update([0.2, 0.4, 0.9], 1)
    assert small.decay == pytest.approx(math.exp(-2.0))


def test_adaptive_trend_reads_the_shortest_memory_while_no_bend_can_be_measured():
    est = AdaptiveTrend((100.0, 3200.0), bounds=RATE)
    est.update([0.5, 0.7, 0.8], 32)  # three batches: a line, but no parabola to compare
    assert np.isnan(est.lines[1].fit().bend)
    assert est.fit() == est.lines[0].fit()
    loss = AdaptiveTrend((100.0, 3200.0), bounds=NONNEGATIVE)
    loss.update([0.5, 0.4, 0.35], 32)  # a loss whose spread cannot be measured yet
    assert loss.fit() == loss.lines[0].fit() and loss.interval() == (0.0, math.inf)


def test_adaptive_trend_prefers_a_memory_whose_error_it_can_estimate():
    """A loss over 6 batches of 32: 20 samples of memory leave under one batch of residual
    freedom (no spread, so an unknown error); 3200 samples leave about three."""
    est = AdaptiveTrend((20.0, 3200.0), bounds=NONNEGATIVE)
    est.update([1.0, 0.93, 0.9, 0.82, 0.8, 0.71], 32)
    assert np.isnan(est.lines[0].fit().spread) and not np.isnan(est.lines[1].fit().spread)
    assert est.fit() == est.lines[1].fit()
