"""Tightness of reconstruct.py's bounds and picks, pinned where containment alone would pass.

Each test pins a number or a choice worked by hand, so that a looser bound (an infinite side,
``max`` for ``min``), a dropped window or a wrong pick fails. They were written against the
survivors of a mutation run (``benchmarks/mutation_reconstruct.sh``); the numbers carry the
float64 slack the code adds (``reconstruct._SLACK``, 1e-12 relative).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from fitlens.explain.epochs import Shown
from fitlens.explain.reconstruct import (
    bounds_rows,
    end_bounds,
    first_within,
    last_window,
    narrowest_end_window,
    ranged_end_candidates,
    ranged_end_window,
    reconstruct,
    reconstruct_arrays,
    trailing_windows,
    window_bounds,
    window_columns,
)

_H = 0.5e-4
# Float64 slack the bounds carry: 1e-12 relative, see reconstruct._SLACK.
_EPS = 1e-11


def _pair(first: float = 0.5, last: float = 0.75) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Displays at steps 2 and 4 (± 0.00005): batches 3-4 average 2·last − first."""
    return np.array([2, 4]), np.array([first, last]), np.array([_H, _H])


def test_first_within_gives_each_metric_its_first_precise_window_or_minus_one():
    # Metric 0, last batch of any size (end weight 3 to 4): batches 3-4 are 0.99985 to 1.25025
    # (half-width 0.1252), the whole epoch 0.75 ± 0.00005. Metric 1, exact: batches 3-4 are
    # 1.0 ± 0.00015.
    held = ranged_end_candidates([_pair(), _pair()], [(3.0, None), (None, None)], [None, None], 2)
    assert first_within(held, np.array([0.001, 0.001])) == [1, 0]
    assert first_within(held, np.array([1.0, 1.0])) == [0, 0]
    assert first_within(held, np.array([1e-6, 1e-6])) == [-1, -1]
    assert first_within(held, np.array([1e-6, 0.001])) == [-1, 0]
    assert first_within([], np.array([])) == []
    (one,) = ranged_end_candidates([_pair()], [(None, None)], [None], 2)
    exact = float(one.batch.width[0, 0])  # a window exactly as wide as enough is precise
    assert first_within([one], np.array([exact])) == [0]


def test_picking_among_candidates_with_an_empty_window_is_refused():
    # End weight at most 2: the window after the display at step 2 is empty.
    (held,) = ranged_end_candidates([_pair()], [(1.0, 2.0)], [None], 2)
    assert held.empty == 0
    assert held.scan(2, 1.0) is None
    with pytest.raises(ValueError, match=r"^an empty window among those held: scan them instead$"):
        held.pick(2, 1.0)


def test_picking_gives_the_first_precise_window_else_the_narrowest():
    (held,) = ranged_end_candidates([_pair()], [(3.0, None)], [None], 2)
    window, precise = held.pick(2, 0.001)
    assert precise and (window.first_batch, window.last_batch) == (1, 4)
    assert (window.low, window.high) == pytest.approx((0.74995, 0.75005), abs=_EPS)
    assert (held.size, held.empty) == (2, 2)  # no window is empty
    # 0.1 is below batches 3-4's half-width 0.1252: the whole epoch is the first precise one.
    window, precise = held.pick(2, 0.1)
    assert precise and (window.first_batch, window.last_batch) == (1, 4)
    window, precise = held.pick(2, 1.0)
    assert precise and (window.first_batch, window.last_batch) == (3, 4)
    assert (window.low, window.high) == pytest.approx((0.99985, 1.25025), abs=_EPS)
    window, precise = held.pick(2, 1e-6)
    assert not precise and window.first_batch == 1
    window, precise = held.pick(1, 1e-6)
    assert not precise and window.first_batch == 3
    with pytest.raises(ValueError, match=r"^count must be at least 1$"):
        held.scan(0, 1.0)
    # The scalar scan it copies: the same picks, the same refusal of count 0.
    weights = {"end_weight_low": 3.0, "end_weight_high": None}
    window, precise = ranged_end_window(*_pair(), 2, 0.1, **weights)
    assert precise and window.first_batch == 1
    with pytest.raises(AssertionError, match=r"^count must be at least 1$"):
        ranged_end_window(*_pair(), 0, 1.0, **weights)
    with pytest.raises(AssertionError, match=r"^count must be at least 1$"):
        narrowest_end_window(*_pair(), 0, 1.0)
    assert math.isfinite(window.high)


def test_a_known_partial_last_batch_sets_the_last_window_of_the_array_path():
    # End weight exactly 3.5 (half a last batch): batches 3-4 weigh 1.5 and average
    # (3.5·0.75 − 2·0.5)/1.5 = 1.08333 ± (3.5 + 2)·h/1.5; the first window is batches 1-2.
    first, last = reconstruct_arrays(*_pair(), 1.0, end_weight_low=3.5, end_weight_high=3.5)
    assert (first.first_batch, first.last_batch, last.first_batch, last.last_batch) == (1, 2, 3, 4)
    assert last.value == pytest.approx(1.625 / 1.5, abs=1e-15)
    assert last.half_width == pytest.approx(5.5 * _H / 1.5, abs=_EPS)
    assert first.value == 0.5 and first.half_width == pytest.approx(_H, abs=_EPS)


def test_trailing_windows_pin_value_clip_and_a_known_partial_last_batch():
    points = [Shown(2, 0.5, _H), Shown(4, 0.75, _H)]
    short, whole = trailing_windows(points, clip=(0.0, 1.0))
    # Batches 3-4: 1.0 ± 0.00015, cut at 1 above; the whole epoch 0.75 ± 0.00005.
    assert (short.value, short.high) == (1.0, 1.0)
    assert short.low == pytest.approx(0.99985, abs=_EPS)
    assert whole.value == 0.75
    assert (whole.low, whole.high) == pytest.approx((0.74995, 0.75005), abs=_EPS)
    short, _ = trailing_windows(points, end_weight_low=3.5, end_weight_high=3.5)
    assert short.value == pytest.approx(1.625 / 1.5, abs=1e-15)
    assert short.half_width == pytest.approx(5.5 * _H / 1.5, abs=_EPS)


# Displays at steps 1, 2, 4 with different roundings: batches 3-4 average
# (4·0.75 − 2·0.5)/2 = 1.0 ± (4·h + 2·100h)/2 = ± 0.0051, batches 2-4 average
# (4·0.75 − 1·0.5)/3 = 0.83333 ± (4·h + 1·h)/3 = ± 0.0000833: the longer window is narrower.
_MIXED = (np.array([1, 2, 4]), np.array([0.5, 0.5, 0.75]), np.array([_H, 100 * _H, _H]))


def test_the_narrowest_end_window_uses_each_display_s_own_rounding():
    shortest, precise = narrowest_end_window(*_MIXED, 1, -1.0)
    assert not precise and (shortest.first_batch, shortest.last_batch) == (3, 4)
    assert shortest.value == pytest.approx(1.0, abs=1e-15)
    assert shortest.half_width == pytest.approx(0.0051, abs=_EPS)
    narrowest, precise = narrowest_end_window(*_MIXED, 2, -1.0)
    assert not precise and (narrowest.first_batch, narrowest.last_batch) == (2, 4)
    assert narrowest.value == pytest.approx(2.5 / 3, abs=1e-15)
    assert narrowest.half_width == pytest.approx(5 * _H / 3, abs=_EPS)


def test_a_window_exactly_as_wide_as_enough_is_precise():
    shortest, _ = narrowest_end_window(*_MIXED, 1, -1.0)
    enough = (shortest.high - shortest.low) / 2  # the very double the scan compares
    assert narrowest_end_window(*_MIXED, 2, enough) == (shortest, True)


@pytest.mark.parametrize(
    ("h", "tolerance", "end", "boundary", "first"),
    [(0.1, 0.30912010276172125, 6370, 3256, 3257), (0.1, 2.887755102040816, 732, 683, 683)],
    ids=["quotient-rounds-down", "quotient-rounds-up"],
)
def test_the_last_window_s_search_corrects_a_quotient_that_rounds_the_wrong_way(
    h, tolerance, end, boundary, first
):
    """last_window guesses the start from goal / grow, then corrects with the products that
    window_columns compares. Here (found by a search over tolerances at a start's exact edge)
    the quotient says the reverse of the products: step 3256 fits by its product but not by
    the quotient (first case), step 683 by the quotient but not by its product (second)."""
    grow, goal = h + tolerance, end * (tolerance - h)
    assert (boundary * grow <= goal) != (boundary <= goal / grow)
    steps, means, halves = np.arange(1, end + 1), np.full(end, 0.5), np.full(end, h)
    alone = last_window(steps, means, halves, tolerance)
    assert alone == window_columns(steps, means, halves, tolerance).row(-1)
    assert (alone.first_batch, alone.last_batch) == (first, end)


@pytest.mark.parametrize(
    ("low", "high", "value", "half"),
    [(3.5, 3.5, 1.625 / 1.5, 5.5 * _H / 1.5), (None, 3.5, 1.625 / 1.5, 5.5 * _H / 1.5)],
    ids=["both-weights", "high-weight-only"],
)
def test_the_last_window_alone_honours_a_known_partial_last_batch(low, high, value, half):
    # End weight 3.5 (given as both weights, or as the largest alone: the smallest defaults to
    # it): batches 3-4 average (3.5·0.75 − 2·0.5)/1.5 ± (3.5 + 2)·h/1.5.
    alone = last_window(*_pair(), 1.0, end_weight_low=low, end_weight_high=high)
    assert (alone.first_batch, alone.last_batch) == (3, 4)
    assert alone.value == pytest.approx(value, abs=1e-15)
    assert alone.half_width == pytest.approx(half, abs=_EPS)


def test_empty_input_gives_empty_integer_and_float_columns():
    empty = np.array([], dtype=np.int64)
    columns = window_columns(empty, empty.astype(float), empty.astype(float), 5e-3)
    assert [c.dtype for c in columns] == [np.int64, np.int64] + [np.float64] * 3
    assert [len(c) for c in columns] == [0] * 5
    assert last_window(empty, empty.astype(float), empty.astype(float), 5e-3) is None
    # And the same types when there are windows, on the vectorized path and on the loop's.
    for halves in (np.full(2, _H), np.array([_H, 2 * _H])):
        columns = window_columns(np.array([2, 4]), np.array([0.5, 0.75]), halves, 5e-3)
        assert [c.dtype for c in columns] == [np.int64, np.int64] + [np.float64] * 3


def test_mixed_roundings_are_clipped_too():
    # The loop's path (two roundings): batches 3-4 are 1.0 ± 0.00025, cut at 1 above.
    steps, means, halves = np.array([2, 4]), np.array([0.5, 0.75]), np.array([2 * _H, _H])
    columns = window_columns(steps, means, halves, 5e-3, clip=(0.0, 1.0))
    assert (columns.value[-1], columns.high[-1]) == (1.0, 1.0)
    assert columns.low[-1] == pytest.approx(1 - 4 * _H, abs=_EPS)


def test_the_vectorized_last_window_alone_is_one_window():
    # One rounding, no end weights: the array path with last_only. Tolerance 0.0002 is met by
    # batches 3-4 (± 0.00015) and not by batch 4 alone (± 0.00035).
    steps, means, halves = np.array([1, 2, 3, 4]), np.array([0.5, 0.6, 0.7, 0.8]), np.full(4, _H)
    (first,) = window_columns(steps, means, halves, 0.0002, last_only=True).first.tolist()
    assert first == 3


def test_unusable_rows_raise_no_floating_point_warnings():
    """Empty windows (0/0, x/0) and overflowing products give meaningless numbers that the
    callers discard: the array code computes them silently, as documented."""
    w = np.array([2.0, 2.0, 2.0])
    m = np.array([0.5, 1e308, 0.5])
    m_end = np.array([1.0, 1e308, 0.75])
    h = np.full(3, _H)
    w_end = np.array([2.0, 4.0, 4.0])  # row 0 empty, row 1 overflows, row 2 fine
    w_lo = np.array([2.0, 4.0, 1.0])  # row 2: the end weight may fall below the start
    clip = (np.array([False] * 3), np.zeros(3), np.ones(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bounds_rows((w, m, h), (w_lo, w_end, m_end, h), clip)
        bounds_rows((w, m, h), (w_end, w_end, m_end, h), clip)
        ranged_end_candidates(
            [(np.array([2, 4]), np.array([1e308, 1e308]), np.full(2, _H))], [(1.0, 2.0)], [None], 2
        )
        end_bounds(*_pair(), end_weight_low=2.0)  # the corners at weight 2 divide by 0
        end_bounds(*_pair(0.5, 0.5), end_weight_low=2.0)  # and some of them are 0/0


def _one_row(start: tuple[float, float, float], end: tuple[float, float, float, float]):
    """bounds_rows on a single unclipped row: ``(value, low, high)`` as floats."""
    clip = (np.array([False]), np.zeros(1), np.ones(1))
    rows = bounds_rows(tuple(np.array([x]) for x in start), tuple(np.array([x]) for x in end), clip)
    return tuple(float(c[0]) for c in rows)


def test_a_row_whose_last_batch_may_be_empty_is_unbounded_both_ways():
    # Start at weight 2, end weight 2 to 4: the window may hold nothing. Its corners at weight 2
    # divide a positive number by 0 (all +inf), so only the rule gives the -inf below.
    _, low, high = _one_row((2.0, 0.5, _H), (2.0, 4.0, 0.75, _H))
    assert (low, high) == (-math.inf, math.inf)
    # Weight 3 to 4: the hand-worked 0.99985 to 1.25025.
    _, low, high = _one_row((2.0, 0.5, _H), (3.0, 4.0, 0.75, _H))
    assert (low, high) == pytest.approx((0.99985, 1.25025), abs=_EPS)


def test_a_bound_that_overflows_on_one_side_leaves_the_other_side_finite():
    # 1e308 ± 1e308: the high overflows to inf, the low is exactly 0 and gets no slack (the
    # slack of an infinite interval would be infinite too).
    window = window_bounds(None, Shown(1, 1e308, 1e308))
    assert (window.low, window.high) == (0.0, math.inf)
    window = window_bounds(None, Shown(1, -1e308, 1e308))
    assert (window.low, window.high) == (-math.inf, 0.0)
    # The corner path (the last batch of any size) likewise: corners 0 and inf.
    window = window_bounds(None, Shown(1, 1e308, 1e308), end_weight_low=0.5)
    assert (window.low, window.high) == (0.0, math.inf)
    _, low, high = _one_row((0.0, 0.0, 0.0), (1.0, 1.0, 1e308, 1e308))
    assert (low, high) == (0.0, math.inf)


def test_a_window_that_touches_the_clip_keeps_its_single_point():
    """A window whose low equals the clip's top is the single point low..low (it meets the
    range there), not the whole range (what a window entirely outside gets). Each function is
    clipped at its own unclipped low."""

    def touching(low: float) -> tuple[float, float]:
        return (low - 1.0, low)

    free = window_bounds(Shown(2, 0.5, _H), Shown(4, 0.75, _H))
    w = window_bounds(Shown(2, 0.5, _H), Shown(4, 0.75, _H), clip=touching(free.low))
    assert (w.low, w.value, w.high) == (free.low,) * 3
    start = (np.array([2.0]), np.array([0.5]), np.array([_H]))
    end = (np.array([4.0]), np.array([4.0]), np.array([0.75]), np.array([_H]))
    lo, hi = touching(free.low)
    rows = bounds_rows(start, end, (np.array([True]), np.array([lo]), np.array([hi])))
    assert [float(c[0]) for c in rows] == [free.low] * 3
    steps, means, halves = _pair()
    free = last_window(steps, means, halves, 1.0)
    w = last_window(steps, means, halves, 1.0, clip=touching(free.low))
    assert (w.low, w.value, w.high) == (free.low,) * 3
    (free_held,) = ranged_end_candidates([(steps, means, halves)], [(None, None)], [None], 2)
    free_low_0 = free_held.window(0).low
    (held,) = ranged_end_candidates(
        [(steps, means, halves)], [(None, None)], [touching(free_low_0)], 2
    )
    w = held.window(0)
    assert (w.low, w.value, w.high) == (free_low_0,) * 3
    free_ranged, _ = ranged_end_window(
        steps, means, halves, 1, -1.0, end_weight_low=3.0, end_weight_high=None
    )
    clip = touching(free_ranged.low)
    w, _ = ranged_end_window(
        steps, means, halves, 1, -1.0, end_weight_low=3.0, end_weight_high=None, clip=clip
    )
    assert (w.low, w.value, w.high) == (free_ranged.low,) * 3
    _, _, free_low, _ = end_bounds(steps, means, halves)
    _, value, low, high = end_bounds(steps, means, halves, clip=touching(free_low[0]))
    assert (low[0], value[0], high[0]) == (free_low[0],) * 3


@pytest.mark.parametrize("clip", [(0.0, 1.0), (-1.0, 0.0)], ids=["at-the-bottom", "at-the-top"])
def test_a_negative_zero_value_on_the_clip_edge_keeps_its_sign(clip):
    # The value (1·(-0.0) − 0·0)/1 is -0.0, equal to the clip's 0.0: the value wins the tie in
    # window_bounds and in bounds_rows alike (bit for bit, as documented).
    window = window_bounds(None, Shown(1, -0.0, _H), clip=clip)
    assert math.copysign(1.0, window.value) == -1.0
    start = (np.zeros(1), np.zeros(1), np.zeros(1))
    end = (np.ones(1), np.ones(1), np.array([-0.0]), np.array([_H]))
    value, _, _ = bounds_rows(
        start, end, (np.array([True]), np.array([clip[0]]), np.array([clip[1]]))
    )
    assert math.copysign(1.0, float(value[0])) == -1.0


def test_the_reference_loop_takes_a_start_that_meets_the_tolerance_exactly():
    """Mixed roundings go through reconstruct's loop; a start whose bound meets the tolerance
    exactly (all binary fractions: (4 + 2)·0.25 = 0.75·(4 − 2)) is taken: batches 3-4."""
    points = [Shown(1, 0.5, 0.125), Shown(2, 0.25, 0.25), Shown(3, 0.75, 0.25), Shown(4, 0.5, 0.25)]
    assert [(w.first_batch, w.last_batch) for w in reconstruct(points, 0.75)][-1] == (3, 4)


def test_end_bounds_gives_only_the_count_shortest_windows():
    steps, means, halves = _MIXED
    every = end_bounds(steps, means, halves)
    assert every[0].dtype == np.int64
    assert every[0].tolist() == [3, 2, 1]  # after step 2, after step 1, the whole epoch
    for count, firsts in [(1, [3]), (2, [3, 2]), (3, [3, 2, 1]), (9, [3, 2, 1])]:
        some = end_bounds(steps, means, halves, count=count)
        assert some[0].tolist() == firsts
        for got, all_of_them in zip(some[1:], every[1:], strict=True):
            assert got.tolist() == all_of_them[:count].tolist()


@pytest.mark.parametrize(
    ("start", "end", "weights"),
    [(4, 4, {}), (4, 2, {}), (4, 6, {"end_weight_high": 4.0}), (4, 6, {"end_weight_high": 3.5})],
    ids=["same-step", "backwards", "end-weight-at-start", "end-weight-before-start"],
)
def test_an_empty_window_is_refused_with_both_weights(start, end, weights):
    high = float(weights.get("end_weight_high", end))
    message = rf"^Expected w_k > w_j for a non-empty window\. Received: w_j=4\.0, w_k={high}\.$"
    with pytest.raises(ValueError, match=message):
        window_bounds(Shown(start, 0.5, _H), Shown(end, 0.75, _H), **weights)


def test_a_known_partial_last_batch_uses_the_closed_form_bit_for_bit():
    """With one end weight (73.375) the batched candidates use the closed form value ± half,
    as end_bounds does; here the corner formula would differ from it in the last bit."""
    steps, means, halves = np.array([42, 74]), np.array([0.041, 0.2698]), np.full(2, _H)
    w, m_k, m_j = 73.375, 0.2698, 0.041
    corner = (w * (m_k - _H) - 42 * (m_j + _H)) / (w - 42)
    closed = (w * m_k - 42 * m_j) / (w - 42) - (w * _H + 42 * _H) / (w - 42)
    assert corner != closed  # the case is one that tells the two apart
    (held,) = ranged_end_candidates([(steps, means, halves)], [(w, w)], [None], 2)
    first, value, low, high = end_bounds(steps, means, halves, end_weight_low=w, end_weight_high=w)
    for i in range(2):
        assert held.window(i) == (int(first[i]), 74, value[i], low[i], high[i])


@pytest.mark.parametrize("clip", [(0.0, 1.0), (-1.0, 0.0)], ids=["at-the-bottom", "at-the-top"])
def test_the_batched_candidates_clip_a_negative_zero_value_to_the_limit(clip):
    # The epoch start's value (2·(-0.0) − 0·0)/2 is -0.0; the batched code clips as NumPy's
    # maximum/minimum do (the limit wins a tie), giving +0.0 at either end.
    steps, means, halves = np.array([1, 2]), np.array([0.5, -0.0]), np.full(2, _H)
    (held,) = ranged_end_candidates([(steps, means, halves)], [(None, None)], [clip], 2)
    assert held.window(1).first_batch == 1
    assert math.copysign(1.0, held.window(1).value) == 1.0
    (free,) = ranged_end_candidates([(steps, means, halves)], [(None, None)], [None], 2)
    assert math.copysign(1.0, free.window(1).value) == -1.0
    # ranged_end_window, whose doubles the batched code copies, the same.
    window, _ = ranged_end_window(
        steps, means, halves, 2, -1.0, end_weight_low=1.5, end_weight_high=None, clip=clip
    )
    assert window.first_batch == 1 and math.copysign(1.0, window.value) == 1.0


def test_among_equally_narrow_windows_the_shortest_is_taken():
    # Roundings 0.375, 0.125, 0 at steps 1, 2, 4, every display 0.5: batches 3-4 are
    # 0.5 ± (0 + 2·0.125)/2 and batches 2-4 0.5 ± (0 + 1·0.375)/3, the same 0.125 (binary
    # fractions, the same slack): neither is precise, the first of equals wins.
    steps, means, halves = np.array([1, 2, 4]), np.full(3, 0.5), np.array([0.375, 0.125, 0.0])
    shortest, _ = narrowest_end_window(steps, means, halves, 1, -1.0)
    longer, _ = narrowest_end_window(steps, means, halves, 2, shortest.half_width / 2)
    assert (longer.first_batch, longer.half_width) == (3, shortest.half_width)
    assert shortest.half_width == pytest.approx(0.125, abs=_EPS)
