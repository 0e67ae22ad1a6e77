"""The numeric core: exact window means and interval bounds that contain the truth."""

from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fitlens.explain.epochs import Shown
from fitlens.explain.reconstruct import (
    Window,
    bounds_rows,
    end_bounds,
    exact_window,
    last_window,
    narrowest_end_window,
    ranged_end_candidates,
    ranged_end_window,
    reconstruct,
    reconstruct_arrays,
    trailing_windows,
    window_bounds,
    window_columns,
    window_mean,
)

#: Examples per property test. A mutation run sets FITLENS_EXPLAIN_EXAMPLES lower so that each of
#: its hundreds of test runs stays short; the suite's own runs use the default.
_EXAMPLES = int(os.environ.get("FITLENS_EXPLAIN_EXAMPLES", "200"))


def test_window_mean_recovers_the_items_between_two_running_means():
    values = [0.2, 0.4, 0.9, 0.7]
    means = np.cumsum(values) / np.arange(1, 5)
    assert window_mean(2, means[1], 4, means[3]) == pytest.approx((0.9 + 0.7) / 2)
    assert window_mean(0, 0.0, 1, means[0]) == pytest.approx(0.2)


def test_window_mean_of_an_empty_window_fails():
    with pytest.raises(ValueError, match="w_k > w_j"):
        window_mean(3, 0.5, 3, 0.5)


def _rounded(x: float) -> float:
    return float(f"{x:.4f}")


def _displays(values: list[float], weights: list[int], shown: list[int]) -> tuple[list, list]:
    """Running means as Keras computes them, and the displayed (rounded) subset."""
    totals = np.cumsum(np.array(values) * np.array(weights))
    counts = np.cumsum(weights)
    exact = totals / counts
    points = [Shown(int(counts[i]), _rounded(exact[i]), 0.5e-4) for i in shown]
    return points, list(zip(counts.tolist(), exact.tolist(), strict=True))


batch_values = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=300)


@settings(derandomize=True, max_examples=_EXAMPLES, deadline=None)
@given(batch_values, st.data())
def test_every_window_contains_the_true_mean_of_its_batches(values, data):
    n = len(values)
    shown = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
    points, _exact = _displays(values, [1] * n, shown)
    tol = data.draw(st.sampled_from([1e-4, 5e-3, 0.05, 1.0]))
    for window in reconstruct(points, tol):
        truth = float(np.mean(values[window.first_batch - 1 : window.last_batch]))
        assert window.low <= truth <= window.high


@settings(derandomize=True, max_examples=_EXAMPLES, deadline=None)
@given(batch_values, st.data())
def test_sample_weighted_windows_contain_the_truth_with_a_partial_last_batch(values, data):
    n = len(values)
    batch = data.draw(st.integers(2, 64))
    last = data.draw(st.integers(1, batch))
    weights = [batch] * (n - 1) + [last]
    shown = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)) | {n - 1})
    # Keras 3 counts steps but weights by samples: express weights in batches.
    totals = np.cumsum(np.array(values) * np.array(weights))
    counts = np.cumsum(weights)
    points = [Shown(i + 1, _rounded(totals[i] / counts[i]), 0.5e-4) for i in shown]
    min_fraction = data.draw(st.floats(0.01, last / batch))
    windows = reconstruct(points, 5e-3, end_weight_low=n - 1 + min_fraction)
    for window in windows:
        a, b = window.first_batch - 1, window.last_batch
        truth = float(np.dot(values[a:b], weights[a:b]) / np.sum(weights[a:b]))
        assert window.low <= truth + 1e-12 and truth - 1e-12 <= window.high


@settings(derandomize=True, max_examples=_EXAMPLES // 2, deadline=None)
@given(batch_values, st.data())
def test_vectorized_reconstruction_matches_the_reference_loop(values, data):
    n = len(values)
    shown = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
    points, _ = _displays(values, [1] * n, shown)
    tol = data.draw(st.sampled_from([1e-5, 1e-4, 5e-3, 0.05]))
    steps = np.array([p.step for p in points])
    means = np.array([p.mean for p in points])
    halves = np.full(len(points), 0.5e-4)
    fast = reconstruct_arrays(steps, means, halves, tol)
    slow = reconstruct(points, tol)
    assert [(w.first_batch, w.last_batch) for w in fast] == [
        (w.first_batch, w.last_batch) for w in slow
    ]
    for a, b in zip(fast, slow, strict=True):
        assert a.low == pytest.approx(b.low, abs=1e-12)
        assert a.high == pytest.approx(b.high, abs=1e-12)


def test_windows_tile_the_epoch_without_gaps():
    points = [Shown(s, 0.5, 0.5e-4) for s in (1, 2, 3, 10, 50, 200, 406)]
    windows = reconstruct(points, 5e-3)
    assert windows[0].first_batch == 1
    assert windows[-1].last_batch == 406
    for a, b in itertools.pairwise(windows):
        assert b.first_batch == a.last_batch + 1


def test_bounds_narrow_as_the_window_widens():
    end = Shown(406, 0.8918, 0.5e-4)
    starts = [Shown(405, 0.8917, 0.5e-4), Shown(404, 0.8917, 0.5e-4), Shown(3, 0.7279, 0.5e-4)]
    widths = [window_bounds(s, end).half_width for s in starts]
    assert widths == sorted(widths, reverse=True)
    assert widths[-1] < 1e-4 < widths[0]


def test_a_single_late_batch_has_wide_bounds_and_an_early_one_tight_bounds():
    late = window_bounds(Shown(405, 0.8917, 0.5e-4), Shown(406, 0.8918, 0.5e-4))
    early = window_bounds(Shown(1, 0.5996, 0.5e-4), Shown(2, 0.6587, 0.5e-4))
    assert late.half_width == pytest.approx((406 + 405) * 0.5e-4, rel=1e-6)
    assert early.half_width == pytest.approx(3 * 0.5e-4, rel=1e-6)
    assert early.value == pytest.approx(2 * 0.6587 - 0.5996)


def test_accuracy_bounds_are_clipped_to_the_unit_interval():
    window = window_bounds(Shown(405, 0.9999, 0.5e-4), Shown(406, 0.9999, 0.5e-4), clip=(0, 1))
    assert window.high == 1.0
    assert window.low < 0.9999


def test_a_last_batch_that_may_be_empty_is_unbounded():
    window = window_bounds(Shown(9, 0.5, 0.5e-4), Shown(10, 0.5, 0.5e-4), end_weight_low=9.0)
    assert math.isinf(window.low) and math.isinf(window.high)


def test_trailing_windows_go_from_shortest_to_whole_epoch():
    points = [Shown(s, 0.5, 0.5e-4) for s in (1, 2, 3, 404, 405, 406)]
    windows = trailing_windows(points)
    assert [w.first_batch for w in windows] == [406, 405, 4, 3, 2, 1]


@settings(derandomize=True, max_examples=_EXAMPLES, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1e3, 1e3, allow_nan=False), st.integers(1, 512).map(float)),
        min_size=1,
        max_size=200,
    )
)
def test_window_mean_batch_by_batch_gives_back_each_batch_from_float64_running_means(batches):
    """What the Keras callback does with the running means Keras hands it."""
    values = np.array([v for v, _ in batches])
    counts = np.cumsum([w for _, w in batches])
    means = np.cumsum(values * np.diff(counts, prepend=0.0)) / counts
    recovered = [window_mean(0.0, 0.0, counts[0], means[0])]
    recovered += [
        window_mean(counts[k - 1], means[k - 1], counts[k], means[k]) for k in range(1, len(values))
    ]
    scale = np.abs(values).max() + 1.0
    np.testing.assert_allclose(recovered, values, atol=1e-9 * scale * len(values), rtol=0)


def test_window_mean_over_a_group_of_batches_is_their_weighted_mean():
    # batches 0.5 (32 samples), 1.0 (16), 2.0 (16); the last two arrive together
    assert window_mean(32, 0.5, 64, (16 + 16 + 32) / 64) == pytest.approx(1.5)


@settings(derandomize=True, max_examples=_EXAMPLES // 2, deadline=None)
@given(batch_values, st.data())
def test_windows_with_a_last_batch_range_tile_the_epoch_and_match_the_reference(values, data):
    n = len(values)
    shown = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)) | {n - 1})
    points, _ = _displays(values, [1] * n, shown)
    low_weight = data.draw(st.sampled_from([n - 1, n - 0.5]))
    clip = data.draw(st.sampled_from([None, (0.0, 1.0)]))
    tol = data.draw(st.sampled_from([1e-4, 5e-3, 0.05]))
    steps = np.array([p.step for p in points])
    means = np.array([p.mean for p in points])
    halves = np.full(len(points), 0.5e-4)
    fast = reconstruct_arrays(steps, means, halves, tol, end_weight_low=low_weight, clip=clip)
    slow = reconstruct(points, tol, end_weight_low=low_weight, clip=clip)
    assert [(w.first_batch, w.last_batch) for w in fast] == [
        (w.first_batch, w.last_batch) for w in slow
    ]
    assert fast[0].first_batch == 1 and fast[-1].last_batch == n
    for a, b in itertools.pairwise(fast):
        assert b.first_batch == a.last_batch + 1
    for a, b in zip(fast, slow, strict=True):
        assert a.low <= a.value <= a.high
        if clip is not None:
            assert clip[0] <= a.low and a.high <= clip[1]
        assert (a.low, a.value, a.high) == pytest.approx((b.low, b.value, b.high), abs=1e-12)


def _shown_arrays(values: list[float], data: st.DataObject, least: int = 1) -> tuple:
    """``(steps, means, halves)`` of a random subset (``least`` or more) of the displays."""
    n = len(values)
    shown = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=least)))
    points, _ = _displays(values, [1] * n, shown)
    steps = np.array([p.step for p in points])
    means = np.array([p.mean for p in points])
    return steps, means, np.full(len(points), 0.5e-4)


@settings(derandomize=True, max_examples=_EXAMPLES, deadline=None)
@given(batch_values, st.data())
def test_the_last_window_alone_is_bit_identical_to_the_last_of_all_windows(values, data):
    steps, means, halves = _shown_arrays(values, data)
    if data.draw(st.booleans()):  # a %.4e display: mixed roundings
        halves[data.draw(st.integers(0, len(steps) - 1))] = 0.5e-8
    tol = data.draw(st.sampled_from([1e-5, 1e-4, 5e-3, 0.05]))
    clip = data.draw(st.sampled_from([None, (0.0, 1.0), (0.2, 0.3)]))
    weights = data.draw(
        st.sampled_from([{}, {"end_weight_low": float(steps[-1] - 1)}, {"end_weight_low": 0.5}])
    )
    alone = last_window(steps, means, halves, tol, clip=clip, **weights)
    assert alone == window_columns(steps, means, halves, tol, clip=clip, **weights).row(-1)
    assert last_window(steps[:0], means[:0], halves[:0], tol) is None


@settings(derandomize=True, max_examples=_EXAMPLES, deadline=None)
@given(batch_values, st.data())
def test_the_scalar_end_window_scan_picks_what_the_array_bounds_pick(values, data):
    steps, means, halves = _shown_arrays([*values, 0.5], data, least=2)
    count = data.draw(st.integers(1, len(steps) - 1))
    enough = data.draw(st.sampled_from([-1.0, 0.0, 1e-4, 1e-3, 0.01, math.inf]))
    clip = data.draw(st.sampled_from([None, (0.0, 1.0), (0.4, 0.41)]))
    window, precise = narrowest_end_window(steps, means, halves, count, enough, clip)
    first, value, low, high = end_bounds(steps, means, halves, clip=clip, with_start=False)
    width = (high[:count] - low[:count]) / 2
    fits = np.flatnonzero(width <= enough)
    i = int(fits[0]) if len(fits) else int(np.argmin(width))
    expected = Window(int(first[i]), int(steps[-1]), float(value[i]), float(low[i]), float(high[i]))
    assert (window, precise) == (expected, bool(len(fits)))


@settings(derandomize=True, max_examples=_EXAMPLES, deadline=None)
@given(batch_values, st.data())
def test_the_exact_window_on_plain_numbers_is_bit_identical_to_the_array_bounds(values, data):
    """exact_window (window_bounds' and the report's first batches' scalar path) gives the same
    doubles as end_bounds for every window that ends at the last display, epoch start included."""
    steps, means, halves = _shown_arrays([*values, 0.5], data, least=2)
    if data.draw(st.booleans()):  # a %.4e display: mixed roundings
        halves[data.draw(st.integers(0, len(steps) - 1))] = 0.5e-8
    clip = data.draw(st.sampled_from([None, (0.0, 1.0), (0.4, 0.41)]))
    first, value, low, high = end_bounds(steps, means, halves, clip=clip)
    n = len(steps)
    w_k, m_k, h_k = float(steps[-1]), float(means[-1]), float(halves[-1])
    for i in range(n):  # window i starts after display n-2-i; the last one at the epoch start
        j = n - 2 - i
        start = (0.0, 0.0, 0.0) if j < 0 else (float(steps[j]), float(means[j]), float(halves[j]))
        expected = Window(int(first[i]), int(steps[-1]), *map(float, (value[i], low[i], high[i])))
        got = exact_window(*start, w_k, m_k, h_k, int(steps[-1]), clip)
        assert got == expected
        shown_start = None if j < 0 else Shown(int(steps[j]), start[1], start[2])
        end = Shown(int(steps[-1]), m_k, h_k)
        assert window_bounds(shown_start, end, clip=clip) == expected


#: Displayed values as the parser lets them through: any sign, tiny to huge (|x| <= 1e30).
_any_value = st.one_of(
    st.floats(-1e30, 1e30, allow_nan=False),
    st.floats(-2.0, 2.0, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1.0, 1e-300, -1e-300, 5e-324]),
)


@st.composite
def _any_displays(draw: st.DrawFn, least: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strictly increasing counters with arbitrary values and roundings (``%.4f``/``%.4e``)."""
    steps = sorted(draw(st.sets(st.integers(1, 10**6), min_size=least, max_size=60)))
    means = [draw(_any_value) for _ in steps]
    halves = [draw(st.sampled_from([0.5e-4, 0.5e-8, 0.0, 0.5])) for _ in steps]
    return np.array(steps, dtype=np.int64), np.array(means), np.array(halves)


def _end_weight_choices(steps: np.ndarray) -> list[tuple[float | None, float | None]]:
    """End weights of a last display: any last batch, a range from far back, one starting at
    the display before, a known partial batch, a range past the counter, none."""
    last = int(steps[-1])
    return [
        (last - 1.0, None),
        (0.5, None),
        (float(steps[-2]), None),
        (last - 1 + 0.375, last - 1 + 0.375),
        (last - 0.5, last + 2.0),
        (None, None),
    ]


@settings(derandomize=True, max_examples=_EXAMPLES * 2, deadline=None)
@given(_any_displays(), st.data())
def test_the_scalar_ranged_end_window_scan_picks_what_the_corner_arrays_pick(arrays, data):
    """ranged_end_window (a partial last batch: a range of end weights, or a known fraction)
    gives the same doubles as end_bounds' eight corners and the same pick: the first window
    precise enough, else the narrowest; the epoch start comes last."""
    steps, means, halves = arrays
    n = len(steps)
    last = int(steps[-1])
    low_weight, high_weight = data.draw(st.sampled_from(_end_weight_choices(steps)))
    count = data.draw(st.integers(1, n + 2))
    enough = data.draw(st.sampled_from([-1.0, 0.0, 1e-4, 0.01, 1.0, 1e20, math.inf]))
    clip = data.draw(st.sampled_from([None, (0.0, 1.0), (-0.5, 0.25)]))
    weights = {"end_weight_low": low_weight, "end_weight_high": high_weight}
    got = ranged_end_window(steps, means, halves, count, enough, clip=clip, **weights)
    first, value, low, high = end_bounds(steps, means, halves, clip=clip, **weights)
    k = min(count, len(first))
    width = (high[:k] - low[:k]) / 2
    fits = np.flatnonzero(width <= enough)
    i = int(fits[0]) if len(fits) else int(np.argmin(width))
    expected = Window(int(first[i]), last, float(value[i]), float(low[i]), float(high[i]))
    assert got == (expected, bool(len(fits)))
    # Bit for bit, signed zeros included.
    assert [math.copysign(1.0, x) for x in got[0][2:]] == [
        math.copysign(1.0, x) for x in expected[2:]
    ]


def test_the_ranged_scan_leaves_an_empty_window_to_the_arrays():
    steps, means, halves = np.array([1, 5]), np.array([0.5, 0.6]), np.full(2, 0.5e-4)
    # The largest end weight does not pass the display before the last: no scalar answer.
    assert (
        ranged_end_window(steps, means, halves, 2, 0.0, end_weight_low=0.5, end_weight_high=1.0)
        is None
    )


@settings(derandomize=True, max_examples=_EXAMPLES * 2, deadline=None)
@given(_any_displays(least=1), st.data())
def test_the_last_window_alone_is_bit_identical_for_any_values_and_tolerance(arrays, data):
    """last_window's scalar bisection finds the start window_columns' searchsorted finds, for
    any sign and size of value and tolerances below the rounding (no valid start)."""
    steps, means, halves = arrays
    halves[:] = halves[0]  # one rounding: the scalar path
    tol = data.draw(st.sampled_from([1e-9, 0.5e-4, 1e-4, 5e-3, 0.05, 1e6]))
    clip = data.draw(st.sampled_from([None, (0.0, 1.0), (-0.5, 0.25)]))
    alone = last_window(steps, means, halves, tol, clip=clip)
    # Equal as numbers (a clipped -0.0 value keeps its sign here, NumPy's clip drops it).
    assert alone == window_columns(steps, means, halves, tol, clip=clip).row(-1)


def test_the_last_window_starts_where_the_tolerance_is_met_exactly():
    """A start whose bound meets the tolerance exactly (W_j (h + tol) == W_k (tol - h), all
    binary fractions) is taken, as window_columns takes it: the window is batches 3-4."""
    steps = np.array([1, 2, 3, 4])
    means = np.array([0.5, 0.25, 0.75, 0.5])
    halves = np.full(4, 0.25)
    alone = last_window(steps, means, halves, 0.75)
    assert alone == window_columns(steps, means, halves, 0.75).row(-1)
    assert (alone.first_batch, alone.last_batch) == (3, 4)


#: Displayed values for the batched scan: those of _any_value, and NaN and infinities too.
_odd_value = st.one_of(_any_value, st.sampled_from([math.nan, math.inf, -math.inf, -0.0]))


@st.composite
def _odd_displays(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like _any_displays, with NaN, infinities and -0.0 among the values; short or long."""
    steps = sorted(draw(st.sets(st.integers(1, 10**6), min_size=2, max_size=40)))
    means = [draw(_odd_value) for _ in steps]
    halves = [draw(st.sampled_from([0.5e-4, 0.5e-8, 0.0, 0.5])) for _ in steps]
    return np.array(steps, dtype=np.int64), np.array(means), np.array(halves)


@settings(derandomize=True, max_examples=_EXAMPLES * 2, deadline=None)
@given(st.lists(_odd_displays(), min_size=1, max_size=5), st.data())
def test_the_batched_ranged_candidates_scan_bit_for_bit_as_the_scalar_scan(series, data):
    """ranged_end_candidates (every metric of a batch of epochs at once) then
    EndCandidates.scan give exactly ranged_end_window's answer for every count and threshold:
    the same doubles (signed zeros, NaN, infinities), the same pick, the same give-up."""
    weights, clips = [], []
    for steps, _, _ in series:
        choices = [*_end_weight_choices(steps), (None, float(steps[-2]))]  # the last: all empty
        weights.append(data.draw(st.sampled_from(choices)))
        clips.append(data.draw(st.sampled_from([None, (0.0, 1.0), (-0.5, 0.25)])))
    most = data.draw(st.integers(1, 20))
    batch = ranged_end_candidates(series, weights, clips, most)
    for (steps, means, halves), (low_w, high_w), clip, held in zip(
        series, weights, clips, batch, strict=True
    ):
        assert held.size == min(most, len(steps))
        for count in {1, most, data.draw(st.integers(1, most))}:
            enough = data.draw(st.sampled_from([-1.0, 0.0, 1e-4, 0.01, 1.0, math.inf, math.nan]))
            expected = ranged_end_window(
                steps,
                means,
                halves,
                count,
                enough,
                end_weight_low=low_w,
                end_weight_high=high_w,
                clip=clip,
            )
            assert repr(held.scan(count, enough)) == repr(expected)


@settings(derandomize=True, max_examples=_EXAMPLES * 2, deadline=None)
@given(st.lists(st.tuples(_odd_displays(), st.data()), min_size=1, max_size=6))
def test_window_bounds_on_rows_is_bit_identical_to_window_bounds(rows):
    """bounds_rows (many windows at once, one per row) gives window_bounds' doubles exactly:
    exact and ranged end weights, the epoch start, unbounded windows, both clips, NaN,
    infinities and signed zeros."""
    cases = []
    for (steps, means, halves), data in rows:
        k = data.draw(st.integers(1, len(steps) - 1))
        j = data.draw(st.integers(-1, k - 1))  # -1: the epoch start
        start = None if j < 0 else Shown(int(steps[j]), float(means[j]), float(halves[j]))
        end = Shown(int(steps[k]), float(means[k]), float(halves[k]))
        low_w, high_w = data.draw(
            st.sampled_from(
                [(None, None), (end.step - 1.0, None), (0.25, None), (end.step - 0.625,) * 2]
            )
        )
        clip = data.draw(st.sampled_from([None, (0.0, 1.0), (-0.5, 0.25)]))
        cases.append((start, end, low_w, high_w, clip))
    w_j = np.array([0.0 if s is None else float(s.step) for s, *_ in cases])
    m_j = np.array([0.0 if s is None else s.mean for s, *_ in cases])
    h_j = np.array([0.0 if s is None else s.half for s, *_ in cases])
    w_hi = np.array([float(e.step) if hw is None else hw for _, e, _, hw, _ in cases])
    w_lo = np.array(
        [h if lw is None else min(lw, h) for (_, _, lw, _, _), h in zip(cases, w_hi, strict=True)]
    )
    m_k = np.array([e.mean for _, e, *_ in cases])
    h_k = np.array([e.half for _, e, *_ in cases])
    clips = [c for *_, c in cases]
    clipped = np.array([c is not None for c in clips])
    lo = np.array([0.0 if c is None else c[0] for c in clips])
    hi = np.array([0.0 if c is None else c[1] for c in clips])
    value, low, high = bounds_rows((w_j, m_j, h_j), (w_lo, w_hi, m_k, h_k), (clipped, lo, hi))
    for r, (start, end, low_w, high_w, clip) in enumerate(cases):
        expected = window_bounds(
            start, end, end_weight_low=low_w, end_weight_high=high_w, clip=clip
        )
        got = (float(value[r]), float(low[r]), float(high[r]))
        assert repr(got) == repr(tuple(expected[2:])), r
