"""The estimators' shortcuts give what the long way gives: `value_with` a partial block equals
clone + load_state_dict + update + value bit for bit, a kept fit is dropped whenever the state
changes, the stacked fit of several lines equals each line fitted alone, and so does their
stacked update, and the now estimates of several metrics fitted together."""

from __future__ import annotations

import dataclasses
import warnings

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
    fit_together,
    update_blocks_together,
    update_together,
    with_batches_together,
)
from fitlens.core.estimators.discounted import update_lines
from fitlens.core.local_fit import LocalFit, _local_fit_one, local_fits
from fitlens.core.metric_range import NONNEGATIVE, RATE

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


@given(st.integers(0, 2**32 - 1), st.integers(1, 150), st.sampled_from([4.0, 32.0]))
def test_adaptive_trends_fitted_together_read_what_each_reads_alone_bit_for_bit(seed, steps, size):
    """A display reads every metric's now estimate at once (`fit_together`: one stacked solve
    for all their lines); each estimate and interval must be what the estimator gives alone."""
    rng = np.random.default_rng(seed)
    loss, acc = AdaptiveTrend(bounds=NONNEGATIVE), AdaptiveTrend(bounds=RATE)
    other = AdaptiveTrend((50.0, 500.0))  # other memories, fewer steps: fitted on its own
    for est, shift in ((loss, 1.0), (acc, 0.0)):
        est.update(shift + 0.5 * np.exp(-np.arange(steps) / 40.0) + 0.05 * rng.random(steps), size)
    other.update(rng.random(max(steps // 2, 1)), size)
    alone = [est.clone() for est in (loss, acc, other)]
    for copy, est in zip(alone, (loss, acc, other), strict=True):
        copy.load_state_dict(est.state_dict())
    fit_together([loss, acc, other, EpochMean()])
    for together, one in zip((loss, acc, other), alone, strict=True):
        assert _same_fit(together.fit(), one.fit())
        a, b = together.estimate(), one.estimate()
        for x, y in ((a.value, b.value), (a.low, b.low), (a.high, b.high)):
            assert _same(x, y)
        assert a.note == b.note


@given(st.integers(0, 2**32 - 1), st.lists(st.integers(0, 70), min_size=1, max_size=3))
def test_metrics_updated_together_hold_the_states_each_updated_alone_holds_bit_for_bit(
    seed, blocks
):
    """`MetricStream` feeds every metric's now estimate a block at once (`update_together`:
    all AdaptiveTrend lines in one stacked update); every state must be what the estimator
    reaches updated alone, including estimators that cannot join (other kinds, NaN ignored)."""
    rng = np.random.default_rng(seed)

    def make() -> list[Estimator]:
        return [
            AdaptiveTrend(bounds=NONNEGATIVE),
            AdaptiveTrend(bounds=RATE),
            AdaptiveTrend((30.0, 90.0)),
            AdaptiveTrend(nan_policy="ignore"),
            EMATrend(beta=0.9),
        ]

    together, alone = make(), make()
    for n in blocks:
        values = rng.random((n, len(together)))
        values[rng.random(values.shape) < 0.03] = np.nan
        weights = rng.choice([0.0, 8.0, 32.0], (n, len(together)), p=[0.1, 0.3, 0.6])
        update_together(together, values, weights)
        for i, est in enumerate(alone):
            est.update(values[:, i], weights[:, i])
    for a, b in zip(together, alone, strict=True):
        mine, theirs = a.state_dict(), b.state_dict()
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert np.array_equal(mine[key], theirs[key], equal_nan=True), key


def test_metrics_updated_together_refuse_negative_weights_as_update_does():
    ests = [AdaptiveTrend(), AdaptiveTrend()]
    with pytest.raises(ValueError, match="finite and >= 0"):
        update_together(ests, np.full((3, 2), 0.5), np.array([[8.0, 8.0], [8.0, -1.0], [8.0, 8.0]]))
    assert all(est.steps == 0 for est in ests)


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_a_non_finite_batch_propagates_to_the_estimate_without_a_numpy_warning(bad):
    # fp16 overflow or a diverging run feeds inf/NaN batch means; under "propagate" the estimate
    # says so (NaN), and numpy's warnings from the stacked sums must not reach the user's run
    estimator = AdaptiveTrend()
    estimator.update(np.linspace(1.0, 0.5, 64), 10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimator.update(np.array([0.4, bad, 0.4, bad]), np.array([0.0, 10.0, 0.0, 10.0]))
        assert not np.isfinite(estimator.value)
        estimator.update(np.linspace(0.4, 0.3, 64), 10.0)  # the NaN sums carried on
        assert not np.isfinite(estimator.estimate().value)


@given(st.integers(0, 2**32 - 1), st.integers(0, 200), st.integers(1, 63))
def test_copies_with_batches_added_together_equal_each_with_batches_and_leave_the_originals(
    seed, seen, tail
):
    """A display adds the partial block to every metric's now estimate at once
    (`with_batches_together`: shared state arrays, one stacked update); each copy must be what
    `with_batches` gives for its column, bit for bit, and the estimators must not change."""
    rng = np.random.default_rng(seed)
    ests: list[Estimator] = [
        AdaptiveTrend(bounds=NONNEGATIVE),
        AdaptiveTrend(bounds=RATE),
        AdaptiveTrend(nan_policy="ignore"),
        EMATrend(beta=0.9),
        EpochMean(),
    ]
    for i, est in enumerate(ests):
        if seen:
            est.update(rng.random(seen) + i, rng.choice([0.0, 32.0], seen, p=[0.1, 0.9]))
    before = [est.state_dict() for est in ests]
    values = rng.random((tail, len(ests)))
    values[rng.random(values.shape) < 0.03] = np.nan
    weights = rng.choice([0.0, 8.0, 32.0], (tail, len(ests)), p=[0.1, 0.3, 0.6])
    together = with_batches_together(ests, values, weights)
    for i, (est, copy) in enumerate(zip(ests, together, strict=True)):
        alone = est.with_batches(values[:, i], weights[:, i])
        mine, theirs = copy.state_dict(), alone.state_dict()
        for key in theirs:
            assert np.array_equal(mine[key], theirs[key], equal_nan=True), key
        a, b = copy.estimate(), alone.estimate()
        assert all(_same(x, y) for x, y in ((a.value, b.value), (a.low, b.low), (a.high, b.high)))
        after = est.state_dict()
        assert all(np.array_equal(after[k], before[i][k], equal_nan=True) for k in after)


def _update_lines_reference(lines, values, weights):
    """`update_lines` as it was before its gathers and scatters were cut (fitlens b2e7391): one
    line's values per row, the old sums stacked from tuples. Kept to pin the rounding."""
    import math

    from fitlens.core.estimators.discounted import _block_factors

    for i, line in enumerate(lines):
        if math.isnan(line.decay):
            first_size = weights[0] if weights.ndim == 1 else weights[i, 0]
            line.decay = line._initial_decay(float(first_size))
    first = lines[0]
    n, size, k = values.shape[-1], first.m.size, first.my.size
    discounts, powers_t, move_t, carry = _block_factors(
        tuple(line.decay for line in lines), n, size
    )[:4]
    with np.errstate(invalid="ignore", over="ignore"):
        wv = weights * values
        parts = np.array([weights, weights, wv, wv * values, weights > 0])
        if parts.ndim == 3:
            parts = parts.swapaxes(0, 1)
        new = (discounts * parts) @ powers_t
    mt, my, sb = new[:, :2], new[:, 2, :k], new[:, 3:, 0]
    if first.steps:
        old = np.array([(line.m, line.t) for line in lines])
        mt = mt + carry * (old @ move_t)
        old_my = np.array([line.my for line in lines])[:, None, :]
        my = my + carry[:, 0] * (old_my @ move_t[:k, :k])[:, 0]
        sb = sb + carry[:, 0] * np.array([(line.syy, line.batches) for line in lines])
    for i, line in enumerate(lines):
        line.m, line.t = mt[i]
        line.my = my[i]
        line.syy, line.batches = float(sb[i, 0]), float(sb[i, 1])
        line.steps += n
        line._fit = None


@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(1, 70), min_size=1, max_size=4),
    st.integers(1, 3),
    st.sampled_from([4.0, 32.0]),
)
def test_metrics_lines_updated_a_row_per_metric_hold_the_sums_of_the_reference_update_bit_for_bit(
    seed, blocks, metrics, size
):
    """`update_together` hands `update_lines` one row of values per metric for its five lines
    (``per_row``) and the old sums are gathered in one array: the sums must be those of the
    update that stacked one row per line from tuples, bit for bit, NaN and weightless batches
    included (the History of every entry point rests on them)."""
    rng = np.random.default_rng(seed)
    memories = (300.0, 600.0, 1200.0, 2400.0, 4800.0)
    new = [EMATrend(m) for _ in range(metrics) for m in memories]
    reference = [EMATrend(m) for _ in range(metrics) for m in memories]
    for n in blocks:
        v = rng.random((metrics, n))
        v[rng.random(v.shape) < 0.05] = np.nan
        w = rng.choice([0.0, size], (metrics, n), p=[0.1, 0.9])
        update_lines(new, v, w, per_row=len(memories))
        _update_lines_reference(reference, np.repeat(v, 5, axis=0), np.repeat(w, 5, axis=0))
    for mine, theirs in zip(new, reference, strict=True):
        a, b = mine.state_dict(), theirs.state_dict()
        for key in b:
            assert np.array_equal(a[key], b[key], equal_nan=True), key


@given(
    st.integers(0, 2**32 - 1),
    st.lists(
        st.sampled_from(["update", "read", "reload", "extend", "merge", "reset", "set_syy"]),
        min_size=1,
        max_size=8,
    ),
)
def test_sums_left_in_a_stack_are_each_lines_own_through_every_change_of_state(seed, changes):
    """`update_lines` leaves the new sums in one stack and each line reads its row when first
    read; the next update starts from the stack only while no line changed since. Whatever
    happens in between (a read, a reload, an extend, a merge, a reset, a sum set directly),
    every line must hold what lines that always keep their own sums hold, bit for bit."""
    rng = np.random.default_rng(seed)
    memories = (300.0, 1200.0, 4800.0)
    lazy = [EMATrend(m) for _ in range(2) for m in memories]
    kept = [EMATrend(m) for _ in range(2) for m in memories]

    def block() -> None:
        n = int(rng.integers(1, 70))
        v, w = rng.random((2, n)), rng.choice([0.0, 16.0], (2, n), p=[0.1, 0.9])
        update_lines(lazy, v, w, per_row=len(memories))
        _update_lines_reference(kept, np.repeat(v, 3, axis=0), np.repeat(w, 3, axis=0))

    block()
    for change in changes:
        i = int(rng.integers(len(lazy)))
        if change == "read":
            assert _same(lazy[i].value, kept[i].value)
        elif change == "reload":
            for lines in (lazy, kept):
                lines[i].load_state_dict(lines[i].state_dict())
        elif change in ("extend", "merge"):  # every line, so that they stay at the same steps
            for j, memory in enumerate(memories * 2):
                other = EMATrend(memory)
                other.decay = lazy[j].decay  # sized by the first batch: the same as theirs
                other.update(rng.random(lazy[j].steps if change == "merge" else 9), 16.0)
                for lines in (lazy, kept):
                    getattr(lines[j], change)(other)
        elif change == "reset":
            for line in (*lazy, *kept):
                line.reset()
        elif change == "set_syy":
            for lines in (lazy, kept):
                lines[i].syy = 0.5
        block()
    for mine, theirs in zip(lazy, kept, strict=True):
        a, b = mine.state_dict(), theirs.state_dict()
        for key in b:
            assert np.array_equal(a[key], b[key], equal_nan=True), key


@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.sampled_from([64, 64, 64, 17, 1]), min_size=1, max_size=6),
    st.integers(1, 3),
    st.booleans(),
)
def test_blocks_updated_in_one_call_hold_the_sums_of_one_update_per_block_bit_for_bit(
    seed, lengths, metrics, uneven
):
    """`MetricStream` hands the now estimates every block gathered since their last read in
    one `update_blocks_together` (one stacked product for the blocks of a length, the aging
    block by block): every state must be that of one `update_together` per block, in order,
    including a tail shorter than a block between whole ones, NaN and weightless batches."""
    rng = np.random.default_rng(seed)

    def make() -> list[Estimator]:
        ests: list[Estimator] = [AdaptiveTrend(bounds=RATE) for _ in range(metrics)]
        if uneven:  # fewer lines than the others: one row per line
            ests.append(AdaptiveTrend((30.0, 90.0)))
        return [*ests, EMATrend(beta=0.9)]

    together, one_by_one = make(), make()
    blocks = []
    for n in lengths:
        v = rng.random((n, len(together)))
        v[rng.random(v.shape) < 0.03] = np.nan
        blocks.append((v, rng.choice([0.0, 8.0, 32.0], v.shape, p=[0.1, 0.3, 0.6])))
    update_blocks_together(together, blocks)
    for v, w in blocks:
        update_together(one_by_one, v, w)
    for a, b in zip(together, one_by_one, strict=True):
        mine, theirs = a.state_dict(), b.state_dict()
        for key in theirs:
            assert np.array_equal(mine[key], theirs[key], equal_nan=True), key
