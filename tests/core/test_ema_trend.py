"""`EMATrend` against a naive numpy weighted line fit, with chunking, merges, extends, restores."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fitlens.core.estimators import EMATrend, make_estimator


@st.composite
def batches(draw, min_size=1):
    vals = draw(st.lists(st.floats(-100, 100, allow_nan=False), min_size=min_size, max_size=60))
    sizes = draw(st.lists(st.integers(1, 64), min_size=len(vals), max_size=len(vals)))
    return np.array(vals), np.array(sizes, dtype=float)


def naive_ema_trend(v, w, decay):
    """Weighted least-squares line over x = i - t with weights decay**(t - i) * w, at x = 0."""
    t = len(v) - 1
    x = np.arange(len(v), dtype=float) - t
    weights = decay ** (-x) * w
    if len(v) < 3:
        return float(np.sum(weights * v) / np.sum(weights))
    coef = np.polyfit(x, v, 1, w=np.sqrt(weights))
    return float(np.polyval(coef, 0.0))


def feed(est, v, w, chunks):
    bounds = sorted({0, len(v), *[c % (len(v) + 1) for c in chunks]})
    for a, b in itertools.pairwise(bounds):
        est.update(v[a:b], w[a:b])
    return est


def close(a, b):
    return a == pytest.approx(b, rel=1e-6, abs=1e-6)


@given(batches(), st.floats(0.5, 0.99), st.lists(st.integers(0, 60), max_size=4))
def test_ema_trend_equals_the_numpy_weighted_line_fit_whatever_the_chunking(data, beta, chunks):
    v, w = data
    est = feed(EMATrend(beta=beta), v, w, chunks)
    assert close(est.value, naive_ema_trend(v, w, beta))


@given(batches(), st.floats(50, 5000))
def test_memory_in_samples_sets_the_decay_from_the_first_batch(data, memory):
    v, w = data
    est = EMATrend(memory)
    est.update(v, w)
    decay = math.exp(-w[0] / memory)
    assert est.decay == pytest.approx(decay)
    assert close(est.value, naive_ema_trend(v, w, decay))


@given(batches(), batches(), st.floats(0.5, 0.99))
def test_extend_with_later_steps_equals_one_estimator_over_all_of_them(first, later, beta):
    (v1, w1), (v2, w2) = first, later
    a, b = EMATrend(beta=beta), EMATrend(beta=beta)
    a.update(v1, w1)
    b.update(v2, w2)
    a.extend(b)
    whole = EMATrend(beta=beta)
    whole.update(np.concatenate([v1, v2]), np.concatenate([w1, w2]))
    assert close(a.value, whole.value) and a.steps == whole.steps


@given(batches(), st.data(), st.floats(0.5, 0.99))
def test_merging_ranks_that_saw_shards_of_the_same_steps_equals_the_global_fit(data, draw, beta):
    v1, w1 = data
    v2 = np.array(draw.draw(st.lists(st.floats(-100, 100), min_size=len(v1), max_size=len(v1))))
    w2 = np.array(
        draw.draw(st.lists(st.integers(1, 64), min_size=len(v1), max_size=len(v1))), float
    )
    a, b = EMATrend(beta=beta), EMATrend(beta=beta)
    a.update(v1, w1)
    b.update(v2, w2)
    a.merge(b)
    w = w1 + w2
    assert close(a.value, naive_ema_trend((v1 * w1 + v2 * w2) / w, w, beta))


def test_ranks_with_equal_shards_merge_in_memory_mode_and_unequal_ones_are_refused():
    a, b = EMATrend(800), EMATrend(800)
    a.update([0.5, 0.6, 0.7], 16)
    b.update([0.4, 0.8, 0.6], 16)
    a.merge(b)
    c = EMATrend(800)
    c.update([0.5, 0.6, 0.7], 16)
    d = EMATrend(800)
    d.update([0.5, 0.6, 0.7], 32)
    with pytest.raises(ValueError, match="same decay per batch"):
        c.merge(d)


def test_a_straight_line_is_followed_without_lag_and_a_constant_is_returned_as_is():
    est = EMATrend(beta=0.9)
    est.update(0.1 * np.arange(50) + 2.0, 32)
    assert est.value == pytest.approx(0.1 * 49 + 2.0)
    flat = EMATrend()
    flat.update(np.full(30, 0.75), 32)
    assert flat.value == pytest.approx(0.75)


def test_state_dict_round_trip_and_clone_start_fresh_with_the_same_settings():
    est = EMATrend(400)
    est.update([0.2, 0.4, 0.5, 0.55], [32, 32, 32, 7])
    restored = EMATrend(400)
    restored.load_state_dict(est.state_dict())
    assert restored.value == est.value and restored.decay == est.decay
    fresh = est.clone()
    assert math.isnan(fresh.value) and math.isnan(fresh.decay) and fresh.memory == 400
    assert (
        repr(est) == "EMATrend(memory=400.0)" and repr(EMATrend(beta=0.9)) == "EMATrend(beta=0.9)"
    )


def test_ema_trend_is_the_default_by_name_and_rejects_bad_settings():
    assert isinstance(make_estimator("ema_trend"), EMATrend)
    with pytest.raises(ValueError, match=r"`beta` in \(0, 1\)"):
        EMATrend(beta=1.0)
    with pytest.raises(ValueError, match=r"`memory` \(samples\) > 0"):
        EMATrend(0)
