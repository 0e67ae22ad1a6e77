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
    end_bounds,
    reconstruct,
    reconstruct_arrays,
    trailing_windows,
    window_bounds,
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


@settings(max_examples=_EXAMPLES, deadline=None)
@given(batch_values, st.data())
def test_every_window_contains_the_true_mean_of_its_batches(values, data):
    n = len(values)
    shown = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
    points, _exact = _displays(values, [1] * n, shown)
    tol = data.draw(st.sampled_from([1e-4, 5e-3, 0.05, 1.0]))
    for window in reconstruct(points, tol):
        truth = float(np.mean(values[window.first_batch - 1 : window.last_batch]))
        assert window.low <= truth <= window.high


@settings(max_examples=_EXAMPLES, deadline=None)
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


@settings(max_examples=_EXAMPLES // 2, deadline=None)
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


@settings(max_examples=_EXAMPLES, deadline=None)
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


# Hand-worked cases. Displays at steps 2 and 4 of 0.5000 and 0.7500 (each ± 0.00005):
# batches 3-4 averaged (4·0.75 − 2·0.5)/2 = 1.0 ± (4 + 2)·0.00005/2 = ± 0.00015. With the last
# batch of any size (end weight 3 to 4), the weight-3 corners give (3·0.75005 − 2·0.49995)/1 =
# 1.25025 at most, and the low stays at the weight-4 corner, 0.99985.
_H = 0.5e-4
# Float64 slack the bounds carry: 1e-12 relative, see reconstruct._SLACK.
_EPS = 1e-11


def _pair(first: float = 0.5, last: float = 0.75) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.array([2, 4]), np.array([first, last]), np.array([_H, _H])


def test_a_window_with_an_exact_end_weight_has_the_hand_worked_bounds():
    w = window_bounds(Shown(2, 0.5, _H), Shown(4, 0.75, _H))
    assert (w.first_batch, w.last_batch) == (3, 4)
    assert w.value == pytest.approx(1.0, abs=1e-15)
    assert w.low == pytest.approx(0.99985, abs=_EPS)
    assert w.high == pytest.approx(1.00015, abs=_EPS)


def test_a_last_batch_of_any_size_widens_only_the_side_its_corners_reach():
    first, value, low, high = end_bounds(*_pair(), end_weight_low=3.0)
    # Shortest window first, then the whole epoch.
    assert first.tolist() == [3, 1]
    assert value.tolist() == pytest.approx([1.0, 0.75], abs=1e-15)
    assert low.tolist() == pytest.approx([0.99985, 0.74995], abs=_EPS)
    assert high.tolist() == pytest.approx([1.25025, 0.75005], abs=_EPS)


def test_a_known_partial_last_batch_gives_exact_weights():
    # A last batch of half a batch: weight 3.5, so batches 3-4 weigh 1.5.
    _, value, low, high = end_bounds(*_pair(), end_weight_low=3.5, end_weight_high=3.5)
    truth = (3.5 * 0.75 - 2 * 0.5) / 1.5
    spread = (3.5 * _H + 2 * _H) / 1.5
    assert value[0] == pytest.approx(truth, abs=1e-15)
    assert low[0] == pytest.approx(truth - spread, abs=_EPS)
    assert high[0] == pytest.approx(truth + spread, abs=_EPS)


def test_a_last_batch_that_may_be_empty_leaves_its_own_window_unbounded_both_ways():
    _, _, low, high = end_bounds(*_pair(), end_weight_low=2.0)
    assert (low[0], high[0]) == (-math.inf, math.inf)
    assert math.isfinite(low[1]) and math.isfinite(high[1])


def test_clipping_cuts_both_sides_to_the_metric_range():
    _, value, low, high = end_bounds(*_pair(), end_weight_low=3.0, clip=(0.0, 1.0))
    assert (value[0], high[0]) == (1.0, 1.0)
    assert low[0] == pytest.approx(0.99985, abs=_EPS)
    # Falling to zero: (4·0.25 − 2·0.5)/2 = 0 ± 0.00015, clipped below at 0.
    _, value, low, high = end_bounds(*_pair(0.5, 0.25), clip=(0.0, 1.0))
    assert (value[0], low[0]) == (0.0, 0.0)
    assert high[0] == pytest.approx(0.00015, abs=_EPS)


def test_displays_that_contradict_the_range_get_the_whole_range_not_an_empty_interval():
    # Batches 3-4 would average (4·0.9 − 2·0.5)/2 = 1.3: impossible for an accuracy.
    _, value, low, high = end_bounds(*_pair(0.5, 0.9), clip=(0.0, 1.0))
    assert (low[0], value[0], high[0]) == (0.0, 1.0, 1.0)
    points = [Shown(2, 0.5, _H), Shown(4, 0.9, _H)]
    windows = reconstruct(points, 1.0, clip=(0.0, 1.0))
    assert [(w.first_batch, w.last_batch) for w in windows] == [(1, 2), (3, 4)]
    assert (windows[-1].low, windows[-1].value, windows[-1].high) == (0.0, 1.0, 1.0)


def test_empty_input_gives_no_windows():
    empty = np.array([], dtype=np.int64)
    assert reconstruct_arrays(empty, empty.astype(float), empty.astype(float), 5e-3) == []
    assert reconstruct([], 5e-3) == []
    assert trailing_windows([]) == []


def test_a_single_display_is_one_window_from_the_epoch_start():
    (w,) = reconstruct_arrays(np.array([5]), np.array([0.4]), np.array([_H]), 5e-3)
    assert (w.first_batch, w.last_batch) == (1, 5)
    assert (w.low, w.high) == pytest.approx((0.4 - _H, 0.4 + _H), abs=_EPS)


def test_the_last_window_with_an_unknown_last_batch_stretches_until_it_meets_the_tolerance():
    # Steps 1..10 all at 0.5, end weight 9 to 10. Batch 10 alone may weigh nothing: unbounded.
    # Batches 9-10 weigh 1 to 2: the weight-9 corners give 0.5 ± (9·h + 8·h)/1 = ± 0.00085, the
    # weight-10 ones ± (10·h + 8·h)/2: within ±0.005, so the window stops there.
    steps = np.arange(1, 11)
    means = np.full(10, 0.5)
    halves = np.full(10, _H)
    windows = reconstruct_arrays(steps, means, halves, 5e-3, end_weight_low=9.0)
    last = windows[-1]
    assert (last.first_batch, last.last_batch) == (9, 10)
    assert last.half_width == pytest.approx(9 * _H + 8 * _H, abs=_EPS)
    assert windows[0].first_batch == 1
    for a, b in itertools.pairwise(windows):
        assert b.first_batch == a.last_batch + 1
    # The same windows from the reference loop.
    points = [Shown(int(s), 0.5, _H) for s in steps]
    slow = reconstruct(points, 5e-3, end_weight_low=9.0)
    assert [(w.first_batch, w.last_batch) for w in slow] == [
        (w.first_batch, w.last_batch) for w in windows
    ]
    for a, b in zip(windows, slow, strict=True):
        assert (a.low, a.high) == pytest.approx((b.low, b.high), abs=_EPS)


def test_a_last_window_that_never_meets_the_tolerance_spans_the_whole_epoch():
    steps, means, halves = np.array([1, 2]), np.array([0.1, 0.9]), np.array([_H, _H])
    (w,) = reconstruct_arrays(steps, means, halves, 1e-6, end_weight_low=1.0)
    assert (w.first_batch, w.last_batch) == (1, 2)
    # Weight 1 to 2 behind the start: the mean is m_k itself, ± h.
    assert (w.low, w.high) == pytest.approx((0.9 - _H, 0.9 + _H), abs=_EPS)


@settings(max_examples=_EXAMPLES // 2, deadline=None)
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
    halves = np.full(len(points), _H)
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
