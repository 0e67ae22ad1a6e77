"""Estimators against plain numpy recomputation, with uneven batch sizes, merges and restores."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fitlens.core.estimators import (
    EMA,
    EpochMean,
    LastValue,
    TrendWindow,
    WindowMean,
    make_estimator,
)

values_st = st.lists(
    st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=1, max_size=60
)


@st.composite
def batches(draw, min_size=1):
    vals = draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=min_size, max_size=60))
    sizes = draw(st.lists(st.integers(1, 64), min_size=len(vals), max_size=len(vals)))
    return np.array(vals), np.array(sizes, dtype=float)


def naive_mean(v, w):
    return float(np.sum(v * w) / np.sum(w))


def naive_ema(v, w, beta):
    decay = beta ** np.arange(len(v) - 1, -1, -1)
    return float(np.sum(decay * v * w) / np.sum(decay * w))


def naive_trend(v, w):
    if len(v) < 3:
        return naive_mean(v, w)
    x = np.arange(len(v), dtype=float)
    coef = np.polyfit(x, v, 1, w=np.sqrt(w))
    return float(np.polyval(coef, len(v) - 1))


def feed(est, v, w, chunks):
    """Feed in several chunks, as the loop does at each refresh."""
    bounds = sorted({0, len(v), *[c % (len(v) + 1) for c in chunks]})
    for a, b in itertools.pairwise(bounds):
        est.update(v[a:b], w[a:b])
    return est


@given(batches(), st.lists(st.integers(0, 60), max_size=4))
def test_epoch_mean_equals_sample_weighted_numpy_mean(data, chunks):
    v, w = data
    est = feed(EpochMean(), v, w, chunks)
    assert est.value == pytest.approx(naive_mean(v, w), rel=1e-9, abs=1e-9)
    assert est.weight == pytest.approx(w.sum())


@given(batches(), st.floats(0.0, 0.999), st.lists(st.integers(0, 60), max_size=4))
def test_ema_equals_debiased_numpy_ema_whatever_the_chunking(data, beta, chunks):
    v, w = data
    est = feed(EMA(beta), v, w, chunks)
    assert est.value == pytest.approx(naive_ema(v, w, beta), rel=1e-7, abs=1e-7)


def test_ema_with_equal_weights_is_the_bias_corrected_ema():
    beta, v = 0.9, np.array([1.0, 2.0, 3.0])
    corrected = (1 - beta) * sum(beta ** (2 - i) * x for i, x in enumerate(v)) / (1 - beta**3)
    est = EMA(beta)
    est.update(v)
    assert est.value == pytest.approx(corrected)


@given(batches(), st.integers(1, 20), st.lists(st.integers(0, 60), max_size=4))
def test_window_mean_equals_numpy_mean_of_last_batches(data, window, chunks):
    v, w = data
    est = feed(WindowMean(window), v, w, chunks)
    assert est.value == pytest.approx(naive_mean(v[-window:], w[-window:]), rel=1e-9, abs=1e-9)


@given(batches(), st.integers(1, 20))
def test_trend_window_equals_numpy_weighted_line_fit_at_newest_batch(data, window):
    v, w = data
    est = TrendWindow(window)
    est.update(v, w)
    expected = naive_trend(v[-window:], w[-window:])
    assert est.value == pytest.approx(expected, rel=1e-6, abs=1e-6 * (1 + np.abs(v).max()))


def test_trend_window_follows_a_linear_climb_without_lag():
    steps = np.arange(100, dtype=float)
    v = 0.5 + 0.004 * steps
    trend, window = TrendWindow(40), WindowMean(40)
    trend.update(v, 32)
    window.update(v, 32)
    assert trend.value == pytest.approx(v[-1])
    assert v[-1] - window.value == pytest.approx(0.004 * 19.5)


@given(batches())
def test_last_value_is_the_last_batch(data):
    v, w = data
    est = LastValue()
    est.update(v, w)
    assert est.value == pytest.approx(v[-1])


@pytest.mark.parametrize(
    "make", [EpochMean, lambda: EMA(0.9), lambda: WindowMean(7), lambda: TrendWindow(7), LastValue]
)
@given(data=batches(min_size=1), split=st.integers(0, 60))
def test_extend_equals_one_estimator_over_the_whole_sequence(make, data, split):
    v, w = data
    k = split % (len(v) + 1)
    whole, first, second = make(), make(), make()
    whole.update(v, w)
    first.update(v[:k], w[:k])
    second.update(v[k:], w[k:])
    first.extend(second)
    assert first.value == pytest.approx(whole.value, rel=1e-7, abs=1e-7)


@pytest.mark.parametrize(
    "make", [EpochMean, lambda: EMA(0.9), lambda: WindowMean(7), lambda: TrendWindow(7), LastValue]
)
@given(data=batches(), shards=st.integers(2, 4))
def test_merge_of_ranks_equals_one_estimator_over_global_batches(make, data, shards):
    """Each rank sees a shard of every global batch (DDP); merged sums equal the global ones."""
    v, w = data
    rng = np.random.default_rng(len(v))
    fractions = rng.dirichlet(np.ones(shards), size=len(v))
    # rank r's batch: same value, weight w * fraction (a shard with the same batch mean)
    ranks = [make() for _ in range(shards)]
    for r, est in enumerate(ranks):
        est.update(v, w * fractions[:, r])
    merged = ranks[0]
    for other in ranks[1:]:
        merged.merge(other)
    whole = make()
    whole.update(v, w)
    assert merged.value == pytest.approx(whole.value, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize(
    "make", [EpochMean, lambda: EMA(0.9), lambda: WindowMean(7), lambda: TrendWindow(7), LastValue]
)
def test_state_dict_round_trip_restores_the_estimate_and_its_future(make):
    rng = np.random.default_rng(0)
    v, w = rng.normal(size=30), rng.integers(1, 33, size=30).astype(float)
    a = make()
    a.update(v[:20], w[:20])
    b = make()
    b.load_state_dict(a.state_dict())
    a.update(v[20:], w[20:])
    b.update(v[20:], w[20:])
    assert b.value == pytest.approx(a.value)


def test_merging_estimators_with_different_settings_fails():
    with pytest.raises(ValueError, match="same kind and settings"):
        EMA(0.9).merge(EMA(0.8))
    with pytest.raises(ValueError, match="same kind and settings"):
        EpochMean().merge(LastValue())


def test_merging_emas_over_different_step_counts_fails_and_points_to_extend():
    a, b = EMA(0.9), EMA(0.9)
    a.update([1.0, 2.0])
    b.update([1.0])
    with pytest.raises(ValueError, match="use `extend`"):
        a.merge(b)


def test_nan_propagates_by_default_and_is_ignored_on_request():
    prop, ign = EpochMean(), EpochMean(nan_policy="ignore")
    for est in (prop, ign):
        est.update([1.0, math.nan, 3.0], [1, 1, 1])
    assert math.isnan(prop.value)
    assert ign.value == 2.0


def test_empty_estimators_report_nan():
    for est in (EpochMean(), EMA(), WindowMean(), TrendWindow(), LastValue()):
        assert math.isnan(est.value)


def test_invalid_settings_are_rejected_with_the_received_value():
    with pytest.raises(ValueError, match=r"beta.*Received: 1\.0"):
        EMA(1.0)
    with pytest.raises(ValueError, match=r"window.*Received: 0"):
        WindowMean(0)
    with pytest.raises(ValueError, match="nan_policy"):
        EpochMean(nan_policy="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights"):
        EpochMean().update([1.0], [-1.0])


def test_make_estimator_accepts_names_and_clones_instances():
    assert isinstance(make_estimator("ema"), EMA)
    proto = WindowMean(5)
    proto.update([1.0])
    clone = make_estimator(proto)
    assert isinstance(clone, WindowMean) and clone.window == 5 and math.isnan(clone.value)
    with pytest.raises(ValueError, match="Expected an estimator name"):
        make_estimator("median")


@settings(max_examples=50)
@given(values_st)
def test_update_is_constant_memory_per_batch(vals):
    est = WindowMean(4)
    est.update(np.array(vals))
    assert est.sums.shape == (4,)
