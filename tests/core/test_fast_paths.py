"""The estimators' shortcuts give what the long way gives: `value_with` a partial block equals
clone + load_state_dict + update + value bit for bit, a kept fit is dropped whenever the state
changes, the stacked fit of several lines equals each line fitted alone, and so does their
stacked update."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fitlens.core.estimators import (
    EMA,
    AdaptiveTrend,
    EMATrend,
    EpochMean,
    Estimator,
    LastValue,
    TrendWindow,
    WindowMean,
)
from fitlens.core.estimators.discounted import update_lines
from fitlens.core.local_fit import LocalFit, _local_fit_one, local_fits
from fitlens.core.metric_range import RATE

KINDS = {
    "mean": EpochMean,
    "last": LastValue,
    "ema": lambda: EMA(0.9),
    "window": lambda: WindowMean(7),
    "trend": lambda: TrendWindow(7),
    "ema_trend": lambda: EMATrend(beta=0.8),
    "adaptive": lambda: AdaptiveTrend((100.0, 400.0), bounds=RATE),
    "adaptive ignoring nan": lambda: AdaptiveTrend((100.0, 400.0), nan_policy="ignore"),
}

values = st.lists(st.one_of(st.floats(0, 1), st.just(float("nan"))), max_size=40)


def _long_way(est: Estimator, v: np.ndarray, w: np.ndarray) -> float:
    copy = est.clone()
    copy.load_state_dict(est.state_dict())
    copy.update(v, w)
    return copy.value


def _same(a: float, b: float) -> bool:
    return a == b or (np.isnan(a) and np.isnan(b))


@pytest.mark.parametrize("kind", KINDS)
@given(values, st.integers(0, 12), st.sampled_from([1.0, 8.0, 32.0]))
def test_value_with_rows_equals_updating_a_loaded_clone_and_leaves_the_estimator_unchanged(
    kind, seen, tail, size
):
    est = KINDS[kind]()
    rng = np.random.default_rng(len(seen))
    if seen:
        est.update(np.array(seen), size)
    before, state = est.value, est.state_dict()
    v, w = rng.random(tail), rng.choice([0.0, size], tail)
    assert _same(est.value_with(v, w), _long_way(est, v, w))
    assert _same(est.value, before)
    after = est.state_dict()
    assert all(np.array_equal(after[k], state[k], equal_nan=True) for k in state)


def _fresh_fit(est: Estimator) -> LocalFit:
    copy = est.clone()
    copy.load_state_dict(est.state_dict())
    return copy.fit()


def _same_fit(a: LocalFit, b: LocalFit) -> bool:
    return all(
        _same(x, y) for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True)
    )


@pytest.mark.parametrize("kind", ["ema_trend", "adaptive"])
def test_a_kept_fit_is_dropped_by_every_change_of_state(kind):
    rng = np.random.default_rng(5)
    est, other = KINDS[kind](), KINDS[kind]()
    other.update(rng.random(30), 16.0)
    changes = [
        lambda: est.update(rng.random(9), 16.0),
        lambda: est.extend(other),
        lambda: est.load_state_dict(other.state_dict()),
        lambda: est.merge(other),
        est.reset,
        lambda: est.update(rng.random(70), 16.0),
    ]
    for change in changes:
        kept = est.fit()
        change()
        assert est.fit() is not kept
        assert _same_fit(est.fit(), _fresh_fit(est))


@given(st.integers(0, 2**32 - 1), st.integers(3, 200), st.sampled_from([4.0, 32.0]))
def test_adaptive_trends_stacked_fit_equals_each_line_fitted_alone(seed, steps, size):
    rng = np.random.default_rng(seed)
    est = AdaptiveTrend((20.0, 100.0, 400.0, 3200.0))
    v = 0.9 - 0.5 * np.exp(-np.arange(steps) / 30.0) + 0.05 * rng.standard_normal(steps)
    est.update(v, size)
    est.fit()
    for line, memory in zip(est.lines, est.memories, strict=True):
        alone = EMATrend(memory)
        alone.update(v, size)
        assert _same_fit(line.fit(), alone.fit())


@given(st.integers(0, 2**32 - 1), st.integers(4, 300), st.floats(0.5, 0.999))
def test_stacked_solve_agrees_with_the_step_by_step_fit_up_to_the_conditioning(seed, steps, decay):
    """Both solve the same normal equations; their results differ by rounding, which a solve
    amplifies by at most the rescaled matrix's condition number (below 1e10 when used)."""
    rng = np.random.default_rng(seed)
    est = EMATrend(beta=decay)
    est.update(rng.random(steps), rng.choice([1.0, 8.0, 32.0], steps))
    args = (est.m, est.my, est.t, est.syy, est.batches, est.steps, 1)
    stacked = local_fits(
        est.m[None],
        est.my[None],
        est.t[None],
        np.array([est.syy]),
        np.array([est.batches]),
        *args[5:],
    )[0]
    one = _local_fit_one(*args)
    scale = max(np.sqrt(est.m[2] / est.m[0]), 1.0)
    hankel = est.m[np.add.outer(np.arange(3), np.arange(3))] * scale ** -np.add.outer(
        np.arange(3), np.arange(3)
    )
    tol = 64 * np.finfo(float).eps * np.linalg.cond(hankel)
    assert stacked.degree == one.degree
    for field in ("value", "noise", "effective_samples", "spread", "bend", "bend_noise"):
        a, b = getattr(stacked, field), getattr(one, field)
        assert a == pytest.approx(b, rel=tol, abs=tol * max(1.0, abs(b)), nan_ok=True)


@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(1, 70), min_size=1, max_size=4),
    st.sampled_from([4.0, 32.0]),
)
def test_lines_updated_together_hold_the_sums_each_line_updated_alone_holds_bit_for_bit(
    seed, blocks, size
):
    """`update_lines` updates AdaptiveTrend's lines in stacked numpy calls; each line's sums
    (and so its fit, estimate and interval) must not depend on the other lines, over several
    blocks (the aging of old sums), with weightless and NaN batches."""
    rng = np.random.default_rng(seed)
    memories = (20.0, 100.0, 400.0, 3200.0, 9000.0)
    lines = [EMATrend(m) for m in memories]
    alone = [EMATrend(m) for m in memories]
    for n in blocks:
        v = rng.random(n)
        v[rng.random(n) < 0.05] = np.nan
        w = rng.choice([0.0, size], n, p=[0.1, 0.9])
        update_lines(lines, v, w)
        for line in alone:
            line.update(v, w)
    for together, one in zip(lines, alone, strict=True):
        mine, theirs = together.state_dict(), one.state_dict()
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert np.array_equal(mine[key], theirs[key], equal_nan=True), key
        assert _same_fit(together.fit(), one.fit())
