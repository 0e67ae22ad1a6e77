"""Bounds worked by hand: pinned values, so that a looser (or tighter) bound fails.

Containment alone lets ``(-inf, inf)`` pass; these tests pin each bound to the number the
arithmetic gives, within the float64 slack the code adds (``reconstruct._SLACK``).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fitlens.explain.epochs import Shown
from fitlens.explain.reconstruct import (
    Window,
    end_bounds,
    reconstruct,
    reconstruct_arrays,
    trailing_windows,
    window_bounds,
    window_columns,
    window_mean,
)

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


def test_trailing_windows_carry_the_end_weight_range():
    points = [Shown(2, 0.5, _H), Shown(4, 0.75, _H)]
    short, whole = trailing_windows(points, end_weight_low=3.0)
    assert (short.first_batch, short.last_batch, whole.first_batch) == (3, 4, 1)
    assert (short.low, short.high) == pytest.approx((0.99985, 1.25025), abs=_EPS)
    assert (whole.low, whole.high) == pytest.approx((0.74995, 0.75005), abs=_EPS)


@pytest.mark.parametrize(
    ("low", "high", "halves"),
    [
        (None, None, [_H] * 6),
        (5.0, None, [_H] * 6),
        (5.5, 5.5, [_H] * 6),
        (None, None, [_H, 0.5e-8, _H, _H, 0.5e-8, _H]),
    ],
    ids=["exact", "any-last-batch", "known-last-batch", "mixed-rounding"],
)
def test_the_last_window_alone_is_the_last_of_all_windows(low, high, halves):
    steps = np.array([1, 2, 3, 4, 5, 6])
    means = np.array([0.5, 0.6, 0.62, 0.64, 0.66, 0.67])
    rounding = np.array(halves)
    full = window_columns(
        steps, means, rounding, 0.002, end_weight_low=low, end_weight_high=high, clip=(0, 1)
    )
    last = window_columns(
        steps,
        means,
        rounding,
        0.002,
        end_weight_low=low,
        end_weight_high=high,
        clip=(0, 1),
        last_only=True,
    )
    assert len(last.first) == 1
    assert last.row(0) == full.row(-1)
    assert full.rows() == reconstruct(
        [Shown(int(s), float(m), float(h)) for s, m, h in zip(steps, means, rounding, strict=True)],
        0.002,
        end_weight_low=low,
        end_weight_high=high,
        clip=(0, 1),
    )
    assert full.first[0] == 1 and full.last[-1] == 6
    assert (full.first[1:] == full.last[:-1] + 1).all()


def test_a_rising_epoch_is_cut_into_the_windows_worked_by_hand():
    # Steps 1-4 at 0.5, 0.6, 0.7, 0.8 (± 0.00005), tolerance ±0.0004: batch k alone has
    # half-width (2k − 1)·h, within tolerance for k ≤ 4, so every batch is its own window:
    # batch 2 = 2·0.6 − 0.5 = 0.7, batch 3 = 3·0.7 − 2·0.6 = 0.9, batch 4 = 4·0.8 − 3·0.7 = 1.1.
    steps, means = np.array([1, 2, 3, 4]), np.array([0.5, 0.6, 0.7, 0.8])
    windows = reconstruct_arrays(steps, means, np.full(4, _H), 0.0004)
    assert [(w.first_batch, w.last_batch) for w in windows] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert [w.value for w in windows] == pytest.approx([0.5, 0.7, 0.9, 1.1], abs=1e-12)
    assert [w.half_width for w in windows] == pytest.approx([_H, 3 * _H, 5 * _H, 7 * _H], abs=_EPS)
    # At ±0.0003 batch 4 (±0.00035) no longer fits alone: batches 3-4 (±(4 + 2)·h/2) do.
    windows = reconstruct_arrays(steps, means, np.full(4, _H), 0.0003)
    assert [(w.first_batch, w.last_batch) for w in windows] == [(1, 1), (2, 2), (3, 4)]
    assert windows[-1].value == pytest.approx((4 * 0.8 - 2 * 0.6) / 2, abs=1e-12)
    assert windows[-1].half_width == pytest.approx(3 * _H, abs=_EPS)
    # Clipped to [0, 1], batch 4's 1.1 ± 0.00035 is impossible: it gets the whole range.
    clipped = reconstruct_arrays(steps, means, np.full(4, _H), 0.0004, clip=(0.0, 1.0))
    assert (clipped[-1].low, clipped[-1].value, clipped[-1].high) == (0.0, 1.0, 1.0)


def test_a_window_knows_its_batch_count_and_half_width():
    w = window_bounds(Shown(2, 0.5, _H), Shown(4, 0.75, _H))
    assert w.batches == 2
    assert w.half_width == pytest.approx(0.00015, abs=_EPS)
    assert Window(7, 7, 0.0, 0.0, 0.0).batches == 1


def test_the_float_slack_is_one_part_in_a_trillion_of_the_bounds():
    # Large means make the slack visible: 1e-12 · (|low| + |high| + 1) on each side.
    w = window_bounds(Shown(1, 1e6, _H), Shown(2, 1e6, _H))
    exact = 3 * _H  # (2·h + 1·h)/1
    slack = 1e-12 * (2 * 1e6 + 1.0)
    assert w.high - 1e6 == pytest.approx(exact + slack, rel=1e-3)
    assert 1e6 - w.low == pytest.approx(exact + slack, rel=1e-3)


def test_an_empty_window_is_refused_with_the_weights_in_the_message():
    with pytest.raises(ValueError, match=r"^Expected w_k > w_j for a non-empty window\. "):
        window_mean(3, 0.5, 3, 0.5)


def test_trailing_windows_all_end_at_the_last_display():
    points = [Shown(s, 0.5, _H) for s in (1, 2, 3, 404, 405, 406)]
    assert {w.last_batch for w in trailing_windows(points)} == {406}


def test_a_last_window_exactly_at_the_tolerance_is_short_enough():
    points = [Shown(1, 0.5, _H), Shown(5, 0.6, _H), Shown(6, 0.61, _H)]
    weights = {"end_weight_low": 5.5, "end_weight_high": 5.5}
    shortest = window_bounds(points[1], points[2], **weights)
    tolerance = shortest.half_width  # exactly: the window meets it with no margin
    assert reconstruct(points, tolerance, **weights)[-1] == shortest
    steps = np.array([p.step for p in points])
    means = np.array([p.mean for p in points])
    columns = window_columns(steps, means, np.full(3, _H), tolerance, **weights)
    assert columns.row(-1).first_batch == shortest.first_batch


def test_a_last_window_just_wider_than_the_tolerance_is_not_short_enough():
    points = [Shown(1, 0.5, _H), Shown(5, 0.6, _H), Shown(6, 0.61, _H)]
    weights = {"end_weight_low": 5.5, "end_weight_high": 5.5}
    shortest = window_bounds(points[1], points[2], **weights)
    tolerance = 0.9 * shortest.half_width
    # The next candidate starts after the display at step 1: batches 2-6.
    assert reconstruct(points, tolerance, **weights)[-1].first_batch == 2
    steps = np.array([p.step for p in points])
    means = np.array([p.mean for p in points])
    columns = window_columns(steps, means, np.full(3, _H), tolerance, **weights)
    assert columns.row(-1).first_batch == 2


def test_the_reference_loop_cuts_the_rising_epoch_as_worked_by_hand():
    points = [Shown(k, m, _H) for k, m in ((1, 0.5), (2, 0.6), (3, 0.7), (4, 0.8))]
    assert [(w.first_batch, w.last_batch) for w in reconstruct(points, 0.0004)] == [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
    ]
    assert [(w.first_batch, w.last_batch) for w in reconstruct(points, 0.0003)] == [
        (1, 1),
        (2, 2),
        (3, 4),
    ]
