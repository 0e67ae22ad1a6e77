"""Explain the jump of each metric across each epoch boundary.

Averaging lag: the value shown at the end of epoch k is the mean over the whole epoch, so while
a model improves it trails the model's level at that moment; epoch k+1 restarts the mean and the
display jumps to the current level. The lag is ``level near the end of epoch k - shown end mean``;
the jump it explains is that amount, compared with ``first display of epoch k+1 - shown end
mean``.

The level near the end is a reconstructed window (:mod:`.reconstruct`), so the lag is an interval
and so is the fraction of the jump it explains. Verdicts, from those intervals:

* ``averaging_lag``: lag provably explains at least 75% of the jump;
* ``not_averaging_lag``: lag can explain at most 25%, or (unless the end-of-epoch window proves
  more) the epoch's own level did not move towards the new value: its second half is no further
  along than its first half by more than a tenth of the jump, so there was no lag to catch up;
* ``mixed``: lag provably explains between 25% and 75%;
* ``unknown``: the bounds allow both; the text says what the log would need to show.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np

from fitlens.explain import analysis
from fitlens.explain.analysis import (
    FIRST_BATCHES,
    SCALAR_END_WINDOWS,
    Ahead,
    EpochResult,
    MetricResult,
)
from fitlens.explain.epochs import Shown
from fitlens.explain.reconstruct import (
    EndCandidates,
    Window,
    bounds_rows,
    exact_window,
    narrowest_end_window,
    ranged_end_candidates,
    window_bounds,
)

Verdict = Literal["averaging_lag", "not_averaging_lag", "mixed", "unknown"]
#: Why the verdict: the lag bounds decided it, the epoch's flat level did, the jump is within
#: rounding, the log has no view inside the epochs (``verbose=2``), or the bounds are too wide.
Reason = Literal["lag_bounds", "flat_level", "within_rounding", "no_view_inside", "inconclusive"]

#: Fractions of the jump that separate the verdicts.
MOSTLY, LITTLE = 0.75, 0.25


class Boundary(NamedTuple):
    """One metric across one epoch boundary.

    Attributes:
        metric: Metric name.
        from_epoch: Index of the earlier epoch (1-based); the later one is ``from_epoch + 1``.
        shown_end_mean: Last display of the earlier epoch.
        next_start: First display of the later epoch (a mean over ``next_window``'s batches).
        jump: ``next_start - shown_end_mean``.
        end_level: Reconstructed level near the end of the earlier epoch.
        next_window: The later epoch's first display as a window (its batches and bounds).
        lag_low: Smallest lag consistent with the log (metric units, signed like the jump).
        lag_high: Largest lag consistent with the log.
        fraction_low: Smallest fraction of the jump the lag explains (clipped to [0, 1]).
        fraction_high: Largest fraction of the jump the lag explains (clipped to [0, 1]).
        trend: ``"towards"`` / ``"flat_or_away"`` / ``"unknown"``: how the earlier epoch's
            second half compares with its first half, relative to the jump's direction.
        early: Window over the earlier epoch's first half (``None`` if not reconstructible).
        late: Window over its second half.
        verdict: See the module docs.
        reason: What decided the verdict (see :data:`Reason`).
    """

    metric: str
    from_epoch: int
    shown_end_mean: float
    next_start: float
    jump: float
    end_level: Window
    next_window: Window
    lag_low: float
    lag_high: float
    fraction_low: float
    fraction_high: float
    trend: str
    early: Window | None
    late: Window | None
    verdict: Verdict
    reason: Reason


def _display(steps: np.ndarray, means: np.ndarray, halves: np.ndarray, i: int) -> Shown:
    return Shown(int(steps[i]), float(means[i]), float(halves[i]))


#: How many end-window candidates are tried one by one before all are computed as arrays.
_SCALAR_CANDIDATES = 8


def _second_half(steps: np.ndarray) -> int:
    """Index of the first display before the last at or after half the last one's step."""
    return int(steps[:-1].searchsorted(int(steps[-1]) / 2))


def choose_end_window(metric: MetricResult, jump: float, second_half: int | None = None) -> Window:
    """The level near the end of an epoch: the shortest trailing window that is precise enough.

    Candidates end at the epoch's last display and start in its second half (when it has
    displays there). The first whose half-width is at most a quarter of ``|jump|`` wins; if none
    is, the narrowest candidate (precision beats recency once no candidate is precise enough).
    Without displays in the second half, the window since the previous display is all there is.
    ``second_half`` is ``_second_half(steps)`` when the caller has it already.
    """
    choice = metric.end_choice
    if choice is not None and choice[0] == jump:
        return choice[1]
    steps, means, halves_ = metric.arrays
    end = int(steps[-1])
    if len(steps) == 1:
        return window_bounds(
            None,
            _display(steps, means, halves_, 0),
            end_weight_low=metric.end_weight_low,
            end_weight_high=metric.end_weight_high,
            clip=metric.clip,
        )
    # Shortest first: candidate i starts after display n-2-i; keep those in the second half
    # (steps increase, so they are the last ones), or the shortest window when there is none.
    if second_half is None:
        second_half = _second_half(steps)
    candidates = len(steps) - 1 - second_half
    if metric.end_weight_low is None and metric.end_weight_high is None:
        # The first few candidates on scalars: one of them is usually precise enough. With no
        # candidate, the shortest window, whatever its width.
        enough = abs(jump) / 4 if candidates else math.inf
        count = min(max(candidates, 1), _SCALAR_CANDIDATES)
        window, found = narrowest_end_window(steps, means, halves_, count, enough, metric.clip)
        if found or candidates <= count:
            return window
    elif (held := metric.held) is not None:
        # A partial last batch, its windows computed ahead: the same search on them.
        count = min(max(candidates, 1), held.size)
        window, found = held.pick(count, abs(jump) / 4 if candidates else -1.0)
        if found or candidates <= count:
            return window
        # None of them is precise and there are more candidates: all of them, below.
        return _end_window(metric.end_windows, candidates, abs(jump) / 4, end)
    else:
        # A partial last batch: the first few candidates on scalars (the corner bounds).
        count = min(max(candidates, 1), SCALAR_END_WINDOWS)
        scanned = metric.ranged_end_window(count, abs(jump) / 4 if candidates else -1.0)
        if scanned is not None and (scanned[1] or candidates <= count):
            return scanned[0]
    # The windows from end_bounds, shortest first (the candidates are the first ones): the
    # first few usually hold a precise one; all are computed only when they do not.
    first, value, low, high = metric.shortest_end_windows
    if candidates == 0:
        return Window(int(first[0]), end, float(value[0]), float(low[0]), float(high[0]))
    width = (high[:candidates] - low[:candidates]) / 2
    if not len(np.flatnonzero(width <= abs(jump) / 4)) and len(first) < candidates:
        return _end_window(metric.end_windows, candidates, abs(jump) / 4, end)
    return _end_window((first, value, low, high), candidates, abs(jump) / 4, end)


def _end_window(
    ends: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    candidates: int,
    enough: float,
    end: int,
) -> Window:
    """Of the first ``candidates`` windows of ``ends`` (:attr:`MetricResult.end_windows`'s
    columns), the first whose half-width is at most ``enough``, else the narrowest."""
    first, value, low, high = ends
    width = (high[:candidates] - low[:candidates]) / 2
    precise = np.flatnonzero(width <= enough)
    i = int(precise[0]) if len(precise) else int(np.argmin(width))
    return Window(int(first[i]), end, float(value[i]), float(low[i]), float(high[i]))


def halves(
    metric: MetricResult, second_half: int | None = None
) -> tuple[Window | None, Window | None]:
    """Windows over the first and second half of an epoch, split at the display nearest the middle.

    ``second_half`` is ``_second_half(steps)`` when the caller has it already.

    Returns:
        ``(early, late)``, or ``(None, None)`` when the epoch has no display strictly inside it.
    """
    steps, means, halves_ = metric.arrays
    if len(steps) < 2:
        return None, None
    end = _display(steps, means, halves_, len(steps) - 1)
    # The display nearest the middle (the first of two as near): steps increase, so it is one
    # of the two around it.
    mid = end.step / 2
    i = _second_half(steps) if second_half is None else second_half
    if i == len(steps) - 1 or (i > 0 and abs(int(steps[i - 1]) - mid) <= abs(int(steps[i]) - mid)):
        i -= 1
    middle = _display(steps, means, halves_, i)
    # window_bounds(None, middle): from the epoch start (weight 0), an exact end weight.
    early = exact_window(
        0.0, 0.0, 0.0, float(middle.step), middle.mean, middle.half, middle.step, metric.clip
    )
    if metric.end_weight_low is None and metric.end_weight_high is None:
        # window_bounds(middle, end) with an exact end weight, directly.
        late = exact_window(
            float(middle.step),
            middle.mean,
            middle.half,
            float(end.step),
            end.mean,
            end.half,
            end.step,
            metric.clip,
        )
    else:
        late = window_bounds(
            middle,
            end,
            end_weight_low=metric.end_weight_low,
            end_weight_high=metric.end_weight_high,
            clip=metric.clip,
        )
    return early, late


def explain_boundary(before: EpochResult, after: EpochResult, name: str) -> Boundary | None:
    """Explain one metric's jump from ``before`` to ``after``.

    Returns:
        ``None`` when the metric is not a running mean shown in both epochs.
    """
    a, b = before.metrics.get(name), after.metrics.get(name)
    if a is None or b is None or a.kind != "running_mean" or b.kind != "running_mean":
        return None
    ahead_a, ahead_b = a.ahead or _ahead(a), b.ahead or _ahead(b, with_halves=False)
    end, first = ahead_a.last, ahead_b.first
    jump = first.mean - end.mean
    end_level = choose_end_window(a, jump, ahead_a.second_half)
    next_window = ahead_b.first_window
    lag_low = end_level.low - (end.mean + end.half)
    lag_high = end_level.high - (end.mean - end.half)
    frac_low, frac_high = _fractions(lag_low, lag_high, jump)
    early, late = ahead_a.early, ahead_a.late
    trend = _trend(early, late, jump)
    verdict, reason = _verdict(frac_low, frac_high, trend, jump, end, first)
    sees_start = first.step < ahead_b.last.step or not after.epoch.complete
    sees_end = ahead_a.sees_end
    if not (sees_end and sees_start) and reason != "within_rounding":
        # One display per epoch (verbose=2): the log has no view inside the epochs at all.
        verdict, reason = "unknown", "no_view_inside"
    return Boundary(
        name,
        before.epoch.index,
        end.mean,
        first.mean,
        jump,
        end_level,
        next_window,
        lag_low,
        lag_high,
        frac_low,
        frac_high,
        trend,
        early,
        late,
        verdict,
        reason,
    )


def _ahead(metric: MetricResult, with_halves: bool = True) -> Ahead:
    """:class:`~fitlens.explain.analysis.Ahead` of one metric, on its own (what
    :func:`prepare` computes for a batch of epochs); without ``early``/``late`` unless
    ``with_halves`` (the epoch after a boundary needs none)."""
    steps, means, halves_ = metric.arrays
    end = _display(steps, means, halves_, len(steps) - 1)
    first = _display(steps, means, halves_, 0)
    second_half = _second_half(steps)
    # window_bounds(None, first): from the epoch start, an exact end weight.
    first_window = exact_window(
        0.0, 0.0, 0.0, float(first.step), first.mean, first.half, first.step, metric.clip
    )
    early, late = halves(metric, second_half) if with_halves else (None, None)
    # Steps increase: some display before the last is in the second half if the one before it is.
    sees_end = len(steps) > 1 and int(steps[-2]) >= end.step / 2
    return Ahead(first, end, first_window, second_half, sees_end, early, late)


def prepare(results: Sequence[EpochResult]) -> None:
    """Compute ahead, for a batch of epochs at once, what their boundaries need of each
    running mean (:class:`~fitlens.explain.analysis.Ahead`, and
    :func:`fitlens.explain.analysis.prepare`'s windows): the same numbers, bit for bit, as
    :func:`explain_boundary` computes without it, from a few array passes instead of a dozen
    scalar formulas per metric and epoch."""
    analysis.prepare(results)
    metrics = [
        m
        for result in results
        for m in result.metrics.values()
        if m.kind == "running_mean" and m.ahead is None
    ]
    if not metrics:
        return
    arrays = [m.arrays for m in metrics]
    sizes = np.array([len(a[0]) for a in arrays])
    steps = np.concatenate([a[0] for a in arrays])
    means = np.concatenate([a[1] for a in arrays])
    halves_ = np.concatenate([a[2] for a in arrays])
    rows = len(metrics)
    lasts = np.cumsum(sizes) - 1
    starts = lasts + 1 - sizes
    weights = steps.astype(np.float64)
    ends = weights[lasts]
    # _second_half of every row with one search: row r's steps shifted by r * shift keep their
    # order and sit above every earlier row's (exact in doubles), and its last step is at least
    # half of itself, so the search never leaves the row.
    shift = float(weights.max()) + 1.0 if len(weights) else 1.0
    row = np.arange(rows) * shift
    found = np.searchsorted(np.repeat(row, sizes) + weights, row + ends / 2, side="left")
    second = found - starts
    # halves(): the display nearest the middle (the first of two as near).
    mid = ends / 2
    before = np.abs(weights[found - 1] - mid) <= np.abs(weights[found] - mid)
    middle = found - ((second == sizes - 1) | ((second > 0) & before))
    many = sizes > 1
    # window_bounds' end weights: float(end_weight_high) or the last step, and
    # min(float(end_weight_low), w_hi) (w_hi only when smaller) or w_hi.
    w_hi = np.array(
        [
            e if m.end_weight_high is None else float(m.end_weight_high)
            for e, m in zip(ends.tolist(), metrics, strict=True)
        ]
    )
    w_lo = np.array(
        [
            h if m.end_weight_low is None or h < m.end_weight_low else float(m.end_weight_low)
            for h, m in zip(w_hi.tolist(), metrics, strict=True)
        ]
    )
    clips = [m.clip for m in metrics]
    clipped = np.array([c is not None for c in clips])
    lo = np.array([0.0 if c is None else c[0] for c in clips])
    hi = np.array([0.0 if c is None else c[1] for c in clips])
    zero = np.zeros(rows)
    # The report's first batches (steps 1, 2, ... while consecutive): the first display's
    # window is the first, then one window per display from the one before it. ``shown[j]`` is
    # how many rows have batches 1..j+1 displayed; an index past a row's end is never used.
    at = [np.minimum(starts + j, lasts) for j in range(FIRST_BATCHES)]
    consecutive = steps[starts] == 1
    shown = [consecutive]
    for j in range(1, FIRST_BATCHES):
        consecutive = consecutive & (sizes > j) & (steps[at[j]] == j + 1)
        shown.append(consecutive)
    later = range(1, FIRST_BATCHES)
    # Windows per metric: first display, early half, late half, then first batches 2, 3, ...
    # (rows stacked).
    w_mid = weights[middle]
    w_first = weights[starts]
    blocks = 3 + len(later)
    value, low, high = bounds_rows(
        (
            np.concatenate([zero, zero, w_mid, *(weights[at[j - 1]] for j in later)]),
            np.concatenate([zero, zero, means[middle], *(means[at[j - 1]] for j in later)]),
            np.concatenate([zero, zero, halves_[middle], *(halves_[at[j - 1]] for j in later)]),
        ),
        (
            np.concatenate([w_first, w_mid, w_lo, *(weights[at[j]] for j in later)]),
            np.concatenate([w_first, w_mid, w_hi, *(weights[at[j]] for j in later)]),
            np.concatenate(
                [means[starts], means[middle], means[lasts], *(means[at[j]] for j in later)]
            ),
            np.concatenate(
                [halves_[starts], halves_[middle], halves_[lasts], *(halves_[at[j]] for j in later)]
            ),
        ),
        (np.tile(clipped, blocks), np.tile(lo, blocks), np.tile(hi, blocks)),
    )
    # How many first batches each metric shows (0 to FIRST_BATCHES).
    counts = np.sum(shown, axis=0).tolist()
    # The scalar formulas raise on an empty window: those metrics are left to them.
    usable = (w_first > 0) & (~many | ((w_mid > 0) & (w_hi > w_mid)))
    sees_end = many & (weights[lasts - 1] >= mid)
    value_l, low_l, high_l = value.tolist(), low.tolist(), high.tolist()
    ints = [steps[starts], steps[middle], steps[lasts], w_mid.astype(np.int64) + 1]
    first_s, mid_s, last_s, late_first = (a.tolist() for a in ints)
    columns = (means[starts], halves_[starts], means[lasts], halves_[lasts])
    first_m, first_h, last_m, last_h = (a.tolist() for a in columns)
    for r, m in enumerate(metrics):
        if not usable[r]:
            continue
        early = late = None
        if many[r]:
            i, k = rows + r, 2 * rows + r
            early = Window(1, mid_s[r], value_l[i], low_l[i], high_l[i])
            late = Window(late_first[r], last_s[r], value_l[k], low_l[k], high_l[k])
        first_window = Window(1, first_s[r], value_l[r], low_l[r], high_l[r])
        m.ahead = Ahead(
            Shown(first_s[r], first_m[r], first_h[r]),
            Shown(last_s[r], last_m[r], last_h[r]),
            first_window,
            int(second[r]),
            bool(sees_end[r]),
            early,
            late,
        )
        firsts = [first_window][: counts[r]]
        for j in range(1, counts[r]):
            k = (2 + j) * rows + r  # block 2 + j: batch j + 1, from display j to display j + 1
            firsts.append(Window(j + 1, j + 1, value_l[k], low_l[k], high_l[k]))
        m.first_batches = tuple(firsts)
    _choose_ahead(results)


def _choose_ahead(results: Sequence[EpochResult]) -> None:
    """:func:`choose_end_window` for every running mean whose next epoch is in the batch, at
    once, where the windows held decide it (the first precise one among the candidates held,
    or the narrowest when they are all the candidates); the rest is left to it."""
    pairs: list[tuple[MetricResult, EndCandidates, float, int]] = []
    batch = None
    for before, after in itertools.pairwise(results):
        for name, a in before.metrics.items():
            b = after.metrics.get(name)
            held = a.held
            if b is None or held is None or a.ahead is None or b.ahead is None:
                continue
            if b.kind != "running_mean" or (batch is not None and held.batch is not batch):
                continue
            batch = held.batch
            jump = b.ahead.first.mean - a.ahead.last.mean
            pairs.append((a, held, jump, len(a.arrays[0]) - 1 - a.ahead.second_half))
    if batch is None:
        return
    rows = np.array([p[1].row for p in pairs])
    sizes = np.array([p[1].size for p in pairs])
    jumps = np.array([p[2] for p in pairs])
    candidates = np.array([p[3] for p in pairs])
    count = np.minimum(np.maximum(candidates, 1), sizes)
    enough = np.where(candidates > 0, np.abs(jumps) / 4, -1.0)
    pick, precise, clean = _pick(batch.width[rows], count, enough)
    decided = (precise | (candidates <= count)) & clean
    rest = []
    for r, ((a, held, jump, _), i, done) in enumerate(
        zip(pairs, pick.tolist(), decided.tolist(), strict=True)
    ):
        if done:
            a.end_choice = (jump, held.window(i))
        elif clean[r]:
            rest.append(r)
    if not rest:
        return
    # No held window is precise and there are more candidates: all of them, for these
    # metrics at once (the same doubles as MetricResult.end_windows, the displays being finite).
    metrics = [pairs[r][0] for r in rest]
    wide = ranged_end_candidates(
        [m.arrays for m in metrics],
        [(m.end_weight_low, m.end_weight_high) for m in metrics],
        [m.clip for m in metrics],
        int(candidates[rest].max()),
    )
    pick, _, clean = _pick(wide[0].batch.width, candidates[rest], enough[rest])
    for m, r, held, i, ok in zip(metrics, rest, wide, pick.tolist(), clean.tolist(), strict=True):
        if ok and held.empty == held.size:
            m.end_choice = (pairs[r][2], held.window(i))


def _pick(
    width: np.ndarray, count: np.ndarray, enough: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``width``, among its first ``count`` columns: the first at most ``enough``,
    else the narrowest (the first of equals), as :meth:`EndCandidates.scan` picks.

    Returns:
        ``(pick, precise, clean)``: the column, whether it is within ``enough``, and whether
        the row has no NaN (where strict comparisons and ``argmin`` could disagree).
    """
    within = np.arange(width.shape[1]) < count[:, None]
    fits = (width <= enough[:, None]) & within
    precise = np.asarray(fits.any(axis=1))
    narrowest = np.argmin(np.where(within, width, np.inf), axis=1)
    clean = np.asarray(~np.isnan(np.where(within, width, 0.0)).any(axis=1))
    return np.where(precise, fits.argmax(axis=1), narrowest), precise, clean


def _fractions(lag_low: float, lag_high: float, jump: float) -> tuple[float, float]:
    if jump == 0:
        return 0.0, 1.0
    lo, hi = sorted((lag_low / jump, lag_high / jump))
    return min(max(lo, 0.0), 1.0), min(max(hi, 0.0), 1.0)


def _trend(early: Window | None, late: Window | None, jump: float) -> str:
    if early is None or late is None:
        return "unknown"
    if late.half_width > abs(jump) / 2:
        return "unknown"
    sign = 1.0 if jump > 0 else -1.0
    # Largest move of the level towards the jump that the bounds allow.
    most_towards = (late.high - early.low) if sign > 0 else (early.high - late.low)
    if most_towards <= abs(jump) / 10:
        return "flat_or_away"
    least_towards = (late.low - early.high) if sign > 0 else (early.low - late.high)
    return "towards" if least_towards > 0 else "unknown"


def _verdict(
    frac_low: float, frac_high: float, trend: str, jump: float, end: Shown, first: Shown
) -> tuple[Verdict, Reason]:
    if abs(jump) <= 2 * (end.half + first.half):
        return "unknown", "within_rounding"
    if frac_low >= MOSTLY:
        return "averaging_lag", "lag_bounds"
    if frac_high <= LITTLE:
        return "not_averaging_lag", "lag_bounds"
    if trend == "flat_or_away" and frac_low < LITTLE:
        return "not_averaging_lag", "flat_level"
    if frac_low >= LITTLE and frac_high <= MOSTLY:
        return "mixed", "lag_bounds"
    return "unknown", "inconclusive"


def explain_all(before: EpochResult, after: EpochResult) -> list[Boundary]:
    """Explain every running-mean metric shown in both epochs, in the earlier epoch's order."""
    out = []
    for name in before.metrics:
        boundary = explain_boundary(before, after, name)
        if boundary is not None:
            out.append(boundary)
    return out


def is_training(result: EpochResult, headers_seen: bool) -> bool:
    """False for a bar that may not be a training epoch of the same ``fit``.

    Keras prints ``Epoch k/N`` before every epoch of a multi-epoch ``fit``; a bar without one
    in a log that has printed them is ``model.evaluate``/``predict`` or another ``fit`` call.
    (A loop of single-epoch ``fit`` calls in Keras 3 prints no headers at all: unaffected.)

    Args:
        result: The bar.
        headers_seen: Whether any earlier bar in the log had an ``Epoch`` header.
    """
    return result.epoch.header is not None or not headers_seen


def boundaries(results: Sequence[EpochResult]) -> list[Boundary]:
    """Explain every boundary between consecutive training epochs of a log.

    A boundary into or out of a bar that is not a training epoch (see :func:`is_training`) is
    skipped: its values come from another loop and explain nothing about training.
    """
    out: list[Boundary] = []
    training, headers_seen = [], False
    for result in results:
        training.append(is_training(result, headers_seen))
        headers_seen = headers_seen or result.epoch.header is not None
    for i, (before, after) in enumerate(itertools.pairwise(results)):
        if training[i] and training[i + 1]:
            out.extend(explain_all(before, after))
    return out
