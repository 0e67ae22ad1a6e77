"""Framework-free numeric core: per-window means, with provable bounds, from rounded running means.

Keras displays ``m_k``, the running mean over the first ``k`` batches of the epoch, weighted by a
total weight ``W_k`` (samples or steps, see below). The mean over batches ``j+1..k`` is exactly

    (W_k * m_k - W_j * m_j) / (W_k - W_j)

and, because each display is rounded to ``m ± h``, each such window mean is an interval. The
expression is linear in ``m_k`` and ``m_j`` (positive and negative coefficients) and monotone in
``W_k``, so its extremes over the box of possible inputs sit at the box's corners: evaluating the
corners gives bounds that provably contain the truth. The half-width is about
``(W_k h_k + W_j h_j) / (W_k - W_j)``: it narrows as the window widens.

Which weight ``W`` Keras uses (read from its sources):

* Keras 1.x/2.x ``Progbar.update`` adds ``value * (current - seen_so_far)``: the weight is the
  counter's increment, so steps in ``fit_generator`` (every step equal) and samples in ``fit``.
  ``W = counter`` exactly.
* tf.keras >= 2.2 and Keras 3 show ``Mean`` metrics whose ``count`` grows by the batch's sample
  count (``keras/src/backend/torch/trainer.py`` passes the batch size as ``sample_weight``), while
  the counter counts steps. With equal batch sizes ``W = counter × batch size``; only a partial
  last batch breaks proportionality, which ``end_weight_low``/``end_weight_high`` account for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from fitlens.core.window import window_mean
from fitlens.explain.epochs import Shown

# Relative slack added to every bound: covers float64 rounding in the formula itself.
_SLACK = 1e-12
_INF = math.inf


class Window(NamedTuple):
    """A reconstructed mean over batches ``first_batch..last_batch`` (1-based, inclusive).

    ``low <= truth <= high`` holds whenever the stated assumptions hold. The batch numbers are in
    the log's counter units (samples for logs that count samples).
    """

    first_batch: int
    last_batch: int
    value: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        """Half the interval's width, in the metric's units."""
        return (self.high - self.low) / 2

    @property
    def batches(self) -> int:
        """Number of counter units in the window."""
        return self.last_batch - self.first_batch + 1


def window_bounds(
    start: Shown | None,
    end: Shown,
    *,
    end_weight_low: float | None = None,
    end_weight_high: float | None = None,
    clip: tuple[float, float] | None = None,
) -> Window:
    """Bound the mean over the batches between two displayed running means.

    Args:
        start: The display that opens the window, or ``None`` for the epoch start (weight 0).
        end: The display that closes it; ``end.step > start.step``.
        end_weight_low: Smallest possible weight behind ``end`` when the last batch may be
            partial, in counter units (``n - 1`` when it may hold anything down to one sample of
            an unknown batch size); ``None`` means exactly ``end.step``.
        end_weight_high: Largest possible weight behind ``end``; ``None`` means ``end.step``.
            Give both equal for a known partial batch (``n - 1 + 6/16``).
        clip: Known range of the metric (``(0, 1)`` for accuracies), applied to the bounds.

    Returns:
        The window with its point value (from the displayed numbers, at the largest end weight)
        and provable bounds; a side that no finite number bounds is infinite.

    Example:
        >>> w = window_bounds(Shown(2, 0.5, 0.5e-4), Shown(4, 0.75, 0.5e-4))
        >>> round(w.value, 6), round(w.low, 6), round(w.high, 6)
        (1.0, 0.99985, 1.00015)
    """
    if start is None:
        w_j = m_j = h_j = 0.0
    else:
        w_j, m_j, h_j = float(start.step), start.mean, start.half
    w_hi = float(end.step) if end_weight_high is None else float(end_weight_high)
    w_lo = w_hi if end_weight_low is None else min(float(end_weight_low), w_hi)
    if not w_hi > w_j:
        window_mean(w_j, m_j, w_hi, end.mean)  # raises: the window is empty
    if w_lo == w_hi:
        return exact_window(w_j, m_j, h_j, w_hi, end.mean, end.half, end.step, clip)
    # window_mean's arithmetic, inline: this runs several times per metric and epoch.
    value = (w_hi * end.mean - w_j * m_j) / (w_hi - w_j)
    if w_lo <= w_j:
        low, high = -math.inf, math.inf
    else:
        corners = [
            window_mean(w_j, mj, w, mk)
            for w in (w_lo, w_hi)
            for mk in (end.mean - end.half, end.mean + end.half)
            for mj in (m_j - h_j, m_j + h_j)
        ]
        low, high = min(corners), max(corners)
    if math.isfinite(low) and math.isfinite(high):
        slack = _SLACK * (abs(low) + abs(high) + 1.0)
        low, high = low - slack, high + slack
    if clip is not None:
        value, low, high = _clip_one(value, low, high, clip)
    return Window(int(w_j) + 1, end.step, value, low, high)


def exact_window(
    w_j: float,
    m_j: float,
    h_j: float,
    w_k: float,
    m_k: float,
    h_k: float,
    last: int,
    clip: tuple[float, float] | None,
) -> Window:
    """:func:`window_bounds` with an exact end weight, on plain numbers: the window after weight
    ``w_j`` (mean ``m_j`` ± ``h_j``) up to weight ``w_k > w_j`` (mean ``m_k`` ± ``h_k``), whose
    last batch is ``last``. The report computes a few of these per metric and epoch."""
    span = w_k - w_j
    value = (w_k * m_k - w_j * m_j) / span
    half = (w_k * h_k + w_j * h_j) / span
    low, high = value - half, value + half
    # math.isfinite written out (the same test): the report calls this a few times per metric
    # and epoch, where the calls cost more than the arithmetic.
    if -_INF < low < _INF and -_INF < high < _INF:
        slack = _SLACK * (abs(low) + abs(high) + 1.0)
        low, high = low - slack, high + slack
    if clip is not None:
        value, low, high = _clip_one(value, low, high, clip)
    return Window(int(w_j) + 1, last, value, low, high)


def _clip_one(
    value: float, low: float, high: float, clip: tuple[float, float]
) -> tuple[float, float, float]:
    """:func:`clip_bounds` for one window."""
    lo, hi = clip
    # max() and min() written out (the same ties: the first argument wins): builtin calls cost
    # more than the comparisons, and this runs several times per metric and epoch.
    low = lo if lo > low else low
    high = hi if hi < high else high
    if low > high:
        low, high = lo, hi
    value = lo if lo > value else value
    return (hi if hi < value else value), low, high


def end_bounds(
    steps: np.ndarray,
    means: np.ndarray,
    halves: np.ndarray,
    *,
    end_weight_low: float | None = None,
    end_weight_high: float | None = None,
    clip: tuple[float, float] | None = None,
    with_start: bool = True,
    count: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bounds of every window that ends at the last display, all at once.

    The window ``(W_j, W_k]`` has mean ``(W_k m_k - W_j m_j) / (W_k - W_j)``: linear in ``m_j``
    and ``m_k`` and monotone in ``W_k`` for each of them, so its extremes over the box of
    possible inputs are at the box's corners. With an exact end weight the corners' extremes
    have the closed form ``value ± (W_k h_k + W_j h_j) / (W_k - W_j)``; with a range of end
    weights all eight corners are evaluated, and a window whose smallest end weight does not
    exceed its start is unbounded (the last batch may be arbitrarily small).

    Args:
        steps: Counters of the displays, strictly increasing, shape ``(n,)``; the last one ends
            every window.
        means: Displayed values, shape ``(n,)``.
        halves: Rounding half-widths, shape ``(n,)``.
        end_weight_low: As in :func:`window_bounds`.
        end_weight_high: As in :func:`window_bounds`.
        clip: Known range of the metric.
        with_start: Also give the window from the epoch start (weight 0) after the others.
        count: Give only the ``count`` shortest windows (the same numbers as the first
            ``count`` of all), or all of them when there are no more.

    Returns:
        ``(first_batch, value, low, high)``, shortest window first: one per earlier display,
        then (with ``with_start``) the whole epoch.
    """
    w_hi = float(steps[-1]) if end_weight_high is None else float(end_weight_high)
    w_lo = w_hi if end_weight_low is None else min(float(end_weight_low), w_hi)
    m_k, h_k = float(means[-1]), float(halves[-1])
    w_j, m_j, h_j = steps[-2::-1].astype(np.float64), means[-2::-1], halves[-2::-1]
    if count is not None and count < len(w_j) + with_start:
        w_j, m_j, h_j, with_start = w_j[:count], m_j[:count], h_j[:count], False
    if with_start:
        w_j, m_j, h_j = (np.append(a, 0.0) for a in (w_j, m_j, h_j))
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (w_hi * m_k - w_j * m_j) / (w_hi - w_j)
        if w_lo == w_hi:
            half = (w_hi * h_k + w_j * h_j) / (w_hi - w_j)
            low, high = value - half, value + half
        else:
            corners = [
                (w * mk - w_j * mj) / (w - w_j)
                for w in (w_lo, w_hi)
                for mk in (m_k - h_k, m_k + h_k)
                for mj in (m_j - h_j, m_j + h_j)
            ]
            low, high = np.minimum.reduce(corners), np.maximum.reduce(corners)
            empty = w_lo <= w_j
            low, high = np.where(empty, -math.inf, low), np.where(empty, math.inf, high)
    slack = _SLACK * (np.abs(low) + np.abs(high) + 1.0)
    finite = np.isfinite(slack)
    low, high = np.where(finite, low - slack, low), np.where(finite, high + slack, high)
    value, low, high = clip_bounds(value, low, high, clip)
    return (w_j + 1).astype(np.int64), value, low, high


def clip_bounds(
    value: np.ndarray, low: np.ndarray, high: np.ndarray, clip: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip windows to the metric's known range.

    An interval entirely outside the range means the displays contradict the assumptions (a
    garbled or edited line): the truth is then only known to lie in the range itself, which is
    what such a window gets, never an interval with ``low > high``.

    Returns:
        ``(value, low, high)`` clipped; unchanged without ``clip``.
    """
    if clip is None:
        return value, low, high
    lo, hi = clip
    low, high = np.maximum(low, lo), np.minimum(high, hi)
    empty = low > high
    low, high = np.where(empty, lo, low), np.where(empty, hi, high)
    return np.minimum(np.maximum(value, lo), hi), low, high


def reconstruct(
    points: Sequence[Shown],
    tolerance: float,
    *,
    end_weight_low: float | None = None,
    end_weight_high: float | None = None,
    clip: tuple[float, float] | None = None,
) -> list[Window]:
    """Cut an epoch's displays into consecutive windows whose bounds are useful.

    Works backwards from the last display, closing each window at the shortest span whose
    half-width is at most ``tolerance``, so the end of the epoch (what a jump is compared with)
    gets the shortest windows the numbers allow. Early windows are often single batches: near the
    epoch start the weights are small and the bounds tight. A window that cannot reach the
    tolerance even when stretched to the epoch start is kept at full width.

    Args:
        points: Displays of one metric within one epoch, in increasing ``step`` order.
        tolerance: Target half-width, in the metric's units.
        end_weight_low: Passed to :func:`window_bounds` for windows that end at the last display.
        end_weight_high: Likewise.
        clip: Known range of the metric.

    Returns:
        Windows in increasing batch order that tile ``1..points[-1].step``.
    """
    windows: list[Window] = []
    k = len(points) - 1
    if (end_weight_low is not None or end_weight_high is not None) and k >= 0:
        # The last window carries the partial-batch uncertainty: the general (corner) path.
        end = points[k]
        j = k - 1
        while True:
            window = window_bounds(
                points[j] if j >= 0 else None,
                end,
                end_weight_low=end_weight_low,
                end_weight_high=end_weight_high,
                clip=clip,
            )
            if window.half_width <= tolerance or j < 0:
                break
            j -= 1
        windows.append(window)
        k = j
    while k >= 0:
        # Same bounds as window_bounds, inlined: this loop runs once per display.
        w_k, m_k, h_k = float(points[k].step), points[k].mean, points[k].half
        spread_k = w_k * h_k
        j = k - 1
        w_j = m_j = h_j = 0.0
        while j >= 0:
            w_j, m_j, h_j = float(points[j].step), points[j].mean, points[j].half
            if spread_k + w_j * h_j <= tolerance * (w_k - w_j):
                break
            j -= 1
        else:
            w_j = m_j = h_j = 0.0
        span = w_k - w_j
        value = (w_k * m_k - w_j * m_j) / span
        half = (spread_k + w_j * h_j) / span
        half += _SLACK * (abs(value) + half + 1.0)
        low, high = value - half, value + half
        if clip is not None:
            value, low, high = _clip_one(value, low, high, clip)
        windows.append(Window(int(w_j) + 1, int(w_k), value, low, high))
        k = j
    windows.reverse()
    return windows


class WindowColumns(NamedTuple):
    """Windows as columns, each of shape ``(n_windows,)``, in increasing batch order.

    What :func:`window_columns` returns: building one :class:`Window` per row costs more than
    the reconstruction itself, so callers that need only a few rows take them with :meth:`row`.
    """

    first: np.ndarray
    last: np.ndarray
    value: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def row(self, i: int) -> Window:
        """Window ``i`` (negative counts from the end)."""
        return Window(
            int(self.first[i]),
            int(self.last[i]),
            float(self.value[i]),
            float(self.low[i]),
            float(self.high[i]),
        )

    def rows(self) -> list[Window]:
        """Every window."""
        columns = (c.tolist() for c in self)
        return list(map(Window._make, zip(*columns, strict=True)))


def _columns(windows: Sequence[Window]) -> WindowColumns:
    return WindowColumns(
        np.array([w.first_batch for w in windows], dtype=np.int64),
        np.array([w.last_batch for w in windows], dtype=np.int64),
        np.array([w.value for w in windows], dtype=np.float64),
        np.array([w.low for w in windows], dtype=np.float64),
        np.array([w.high for w in windows], dtype=np.float64),
    )


def reconstruct_arrays(
    steps: np.ndarray,
    means: np.ndarray,
    halves: np.ndarray,
    tolerance: float,
    *,
    end_weight_low: float | None = None,
    end_weight_high: float | None = None,
    clip: tuple[float, float] | None = None,
) -> list[Window]:
    """:func:`window_columns` as a list of :class:`Window` (same arguments)."""
    return window_columns(
        steps,
        means,
        halves,
        tolerance,
        end_weight_low=end_weight_low,
        end_weight_high=end_weight_high,
        clip=clip,
    ).rows()


def window_columns(
    steps: np.ndarray,
    means: np.ndarray,
    halves: np.ndarray,
    tolerance: float,
    *,
    end_weight_low: float | None = None,
    end_weight_high: float | None = None,
    clip: tuple[float, float] | None = None,
    last_only: bool = False,
) -> WindowColumns:
    """:func:`reconstruct` on columns; vectorized when every display has the same rounding.

    With a common half-width ``h`` the window ``(j, k]`` meets the tolerance exactly when
    ``W_j (h + tol) <= W_k (tol - h)``; the left side grows with ``j``, so the greedy choice
    (the largest such ``j``) is one binary search per window end, done for all ends at once.
    The last window, when the last batch's weight is a range, comes from :func:`end_bounds`.
    Mixed roundings (``%.4e`` values) go through :func:`reconstruct`.

    Args:
        steps: Strictly increasing counters, shape ``(n,)``.
        means: Displayed values, shape ``(n,)``.
        halves: Rounding half-widths, shape ``(n,)``.
        tolerance: Target half-width, in the metric's units.
        end_weight_low: As in :func:`reconstruct`.
        end_weight_high: As in :func:`reconstruct`.
        clip: As in :func:`reconstruct`.
        last_only: Give only the window that ends the epoch (the same one), skipping the rest.

    Returns:
        The same windows as :func:`reconstruct` on the equivalent :class:`Shown` list.
    """
    n = len(steps)
    if n == 0:
        return _columns([])
    tail: list[Window] = []
    if end_weight_low is not None or end_weight_high is not None:
        first, value_e, low_e, high_e = end_bounds(
            steps,
            means,
            halves,
            end_weight_low=end_weight_low,
            end_weight_high=end_weight_high,
            clip=clip,
        )
        fits = np.flatnonzero((high_e - low_e) / 2 <= tolerance)
        i = int(fits[0]) if len(fits) else n - 1
        tail = [
            Window(
                int(first[i]), int(steps[-1]), float(value_e[i]), float(low_e[i]), float(high_e[i])
            )
        ]
        n -= i + 1
        steps, means, halves = steps[:n], means[:n], halves[:n]
        if n == 0 or last_only:
            return _columns(tail)
    h = float(halves[0])
    if not bool((halves == h).all()):
        points = [
            Shown(s, m, e)
            for s, m, e in zip(steps.tolist(), means.tolist(), halves.tolist(), strict=True)
        ]
        windows = reconstruct(points, tolerance, clip=clip) + tail
        return _columns(windows[-1:] if last_only else windows)
    # Index 0 is the epoch start (weight 0). Its mean never matters: it is always multiplied by
    # its zero weight, so ``means[start - 1]`` may wrap around for it.
    w = np.empty(n + 1)
    w[0] = 0.0
    w[1:] = steps
    best = np.searchsorted(w * (h + tolerance), w * (tolerance - h), side="right") - 1
    # No valid start (tolerance below the rounding): fall back to the widest window, as
    # reconstruct() does; a start is always before its end.
    best = np.minimum(np.maximum(best, 0), np.arange(-1, n)).tolist()
    ends, starts = [], []
    k = n
    while k > 0:
        j = best[k]
        ends.append(k)
        starts.append(j)
        k = 0 if last_only else j
    ends_a = np.array(ends[::-1])
    starts_a = np.array(starts[::-1])
    w_k, w_j = w[ends_a], w[starts_a]
    span = w_k - w_j
    value = (w_k * means[ends_a - 1] - w_j * means[starts_a - 1]) / span
    half = h * (w_k + w_j) / span
    half += _SLACK * (np.abs(value) + half + 1.0)
    low, high = value - half, value + half
    value, low, high = clip_bounds(value, low, high, clip)
    columns = WindowColumns((w_j + 1).astype(np.int64), w_k.astype(np.int64), value, low, high)
    if tail:
        columns = WindowColumns(
            *(np.append(c, t) for c, t in zip(columns, _columns(tail), strict=True))
        )
    return columns


def last_window(
    steps: np.ndarray,
    means: np.ndarray,
    halves: np.ndarray,
    tolerance: float,
    *,
    end_weight_low: float | None = None,
    end_weight_high: float | None = None,
    clip: tuple[float, float] | None = None,
) -> Window | None:
    """The window that ends the epoch: the last of :func:`window_columns`, computed alone.

    Same arguments and the same numbers (the same float operations, on scalars); ``None`` when
    there is no display. The report needs only this window of most epochs, and building the
    columns for one row costs more than the arithmetic.
    """
    n = len(steps)
    if n == 0:
        return None
    h = float(halves[0])
    if end_weight_low is not None or end_weight_high is not None or not bool((halves == h).all()):
        return window_columns(
            steps,
            means,
            halves,
            tolerance,
            end_weight_low=end_weight_low,
            end_weight_high=end_weight_high,
            clip=clip,
            last_only=True,
        ).row(-1)
    # window_columns' greedy choice for the last end only: the largest start j with
    # W_j (h + tol) <= W_n (tol - h), index 0 being the epoch start (weight 0), else 0. The same
    # products as window_columns' arrays, on scalars, only near the answer (they grow with j).
    w_k = float(steps[n - 1])
    grow = h + tolerance
    goal = w_k * (tolerance - h)
    j = 0  # index 0's product is 0: past the goal when the goal is negative
    if goal >= 0.0:
        # How many steps have a product within the goal: first by a search on the steps alone
        # (the quotient may round either way), then corrected by the products themselves.
        c = int(np.searchsorted(steps, goal / grow, side="right"))
        while c < n and float(steps[c]) * grow <= goal:
            c += 1
        while c > 0 and float(steps[c - 1]) * grow > goal:
            c -= 1
        j = min(c, n - 1)
    w_j = float(steps[j - 1]) if j else 0.0
    span = w_k - w_j
    # means[j - 1] wraps around for the epoch start, as in window_columns: its weight is 0.
    value = (w_k * float(means[n - 1]) - w_j * float(means[j - 1])) / span
    half = h * (w_k + w_j) / span
    half += _SLACK * (abs(value) + half + 1.0)
    low, high = value - half, value + half
    if clip is not None:
        lo, hi = clip
        low, high = max(low, lo), min(high, hi)
        if low > high:
            low, high = lo, hi
        value = min(max(value, lo), hi)
    return Window(int(w_j) + 1, int(w_k), value, low, high)


def narrowest_end_window(
    steps: np.ndarray,
    means: np.ndarray,
    halves: np.ndarray,
    count: int,
    enough: float,
    clip: tuple[float, float] | None = None,
) -> tuple[Window, bool]:
    """Among the ``count`` shortest windows that end at the last display (exact end weight),
    the shortest whose half-width is at most ``enough``, else the narrowest (the first of equals).

    The same windows and float operations as :func:`end_bounds` without end weights, on
    scalars and shortest first, so that the scan stops at the first precise window; for a few
    windows that beats :func:`end_bounds`'s array passes.

    Args:
        steps: Counters, strictly increasing, at least ``count + 1`` of them.
        means: Displayed values.
        halves: Rounding half-widths.
        count: How many windows to consider (at least 1).
        enough: Half-width that ends the search; a negative one means the narrowest.
        clip: Known range of the metric.

    Returns:
        ``(window, precise)``: ``precise`` tells whether its half-width is at most ``enough``.
    """
    w_hi, m_k, h_k = float(steps[-1]), float(means[-1]), float(halves[-1])
    rows = zip(
        steps[-count - 1 : -1].tolist()[::-1],
        means[-count - 1 : -1].tolist()[::-1],
        halves[-count - 1 : -1].tolist()[::-1],
        strict=True,
    )
    best: Window | None = None
    best_width = math.inf
    for step, m_j, h_j in rows:
        w_j = float(step)
        span = w_hi - w_j
        value = (w_hi * m_k - w_j * m_j) / span
        half = (w_hi * h_k + w_j * h_j) / span
        low, high = value - half, value + half
        slack = _SLACK * (abs(low) + abs(high) + 1.0)
        if math.isfinite(slack):
            low, high = low - slack, high + slack
        if clip is not None:
            value, low, high = _clip_one(value, low, high, clip)
        width = (high - low) / 2
        if width <= enough:
            return Window(int(w_j) + 1, int(w_hi), value, low, high), True
        if width < best_width:
            best, best_width = Window(int(w_j) + 1, int(w_hi), value, low, high), width
    assert best is not None, "count must be at least 1"
    return best, False


def trailing_windows(
    points: Sequence[Shown],
    *,
    end_weight_low: float | None = None,
    end_weight_high: float | None = None,
    clip: tuple[float, float] | None = None,
) -> list[Window]:
    """All windows that end at the last display, from the shortest to the whole epoch.

    Args:
        points: Displays of one metric within one epoch, in increasing ``step`` order.
        end_weight_low: As in :func:`window_bounds`.
        end_weight_high: As in :func:`window_bounds`.
        clip: Known range of the metric.

    Returns:
        One window per earlier display (and one from the epoch start), shortest first.
    """
    if not points:
        return []
    first, value, low, high = end_bounds(
        np.array([p.step for p in points], dtype=np.int64),
        np.array([p.mean for p in points]),
        np.array([p.half for p in points]),
        end_weight_low=end_weight_low,
        end_weight_high=end_weight_high,
        clip=clip,
    )
    last = points[-1].step
    rows = zip(first.tolist(), value.tolist(), low.tolist(), high.tolist(), strict=True)
    return [Window(f, last, v, lo, hi) for f, v, lo, hi in rows]


def ranged_end_window(
    steps: np.ndarray,
    means: np.ndarray,
    halves: np.ndarray,
    count: int,
    enough: float,
    *,
    end_weight_low: float | None,
    end_weight_high: float | None,
    clip: tuple[float, float] | None = None,
) -> tuple[Window, bool] | None:
    """:func:`narrowest_end_window` when the last display's weight is a range (a partial last
    batch): among the ``count`` shortest windows of :func:`end_bounds` (the epoch start last),
    the shortest whose half-width is at most ``enough``, else the narrowest (first of equals).

    The same doubles as :func:`end_bounds`, on scalars: each bound is linear in ``m_k`` and
    ``m_j`` with a positive and a non-positive coefficient, and IEEE arithmetic rounds
    monotonically, so of the eight corners the low is one of the two at ``(m_k - h_k, m_j +
    h_j)`` and the high one of the two at ``(m_k + h_k, m_j - h_j)``. Ties of the clip follow
    NumPy's ``maximum``/``minimum`` (the clip limit wins), as :func:`clip_bounds` does.

    Args:
        steps: Counters, strictly increasing, at least two.
        means: Displayed values.
        halves: Rounding half-widths.
        count: How many windows to consider (at least 1; more than there are means all).
        enough: Half-width that ends the search; a negative one means the narrowest.
        end_weight_low: As in :func:`end_bounds`.
        end_weight_high: As in :func:`end_bounds`.
        clip: Known range of the metric.

    Returns:
        ``(window, precise)``, or ``None`` when some window would be empty at the largest end
        weight (:func:`end_bounds` handles that case).
    """
    n = len(steps)
    w_hi = float(steps[-1]) if end_weight_high is None else float(end_weight_high)
    w_lo = w_hi if end_weight_low is None else min(float(end_weight_low), w_hi)
    end, m_k, h_k = int(steps[-1]), float(means[-1]), float(halves[-1])
    take = min(count, n - 1)
    rows = list(
        zip(
            steps[n - 1 - take : n - 1].tolist()[::-1],
            means[n - 1 - take : n - 1].tolist()[::-1],
            halves[n - 1 - take : n - 1].tolist()[::-1],
            strict=True,
        )
    )
    if count > take:
        rows.append((0, 0.0, 0.0))  # the epoch start
    mk_low, mk_high = m_k - h_k, m_k + h_k
    best: Window | None = None
    best_width = math.inf
    for step, m_j, h_j in rows:
        w_j = float(step)
        if not w_hi > w_j:
            return None
        value = (w_hi * m_k - w_j * m_j) / (w_hi - w_j)
        if w_lo == w_hi:  # a known partial batch: the closed form, as end_bounds
            half = (w_hi * h_k + w_j * h_j) / (w_hi - w_j)
            low, high = value - half, value + half
        elif w_lo <= w_j:
            low, high = -math.inf, math.inf
        else:
            mj_low, mj_high = m_j - h_j, m_j + h_j
            low = min(
                (w_lo * mk_low - w_j * mj_high) / (w_lo - w_j),
                (w_hi * mk_low - w_j * mj_high) / (w_hi - w_j),
            )
            high = max(
                (w_lo * mk_high - w_j * mj_low) / (w_lo - w_j),
                (w_hi * mk_high - w_j * mj_low) / (w_hi - w_j),
            )
        slack = _SLACK * (abs(low) + abs(high) + 1.0)
        if math.isfinite(slack):
            low, high = low - slack, high + slack
        if clip is not None:
            lo, hi = clip
            low = low if low > lo else lo
            high = high if high < hi else hi
            if low > high:
                low, high = lo, hi
            value = value if value > lo else lo
            value = value if value < hi else hi
        width = (high - low) / 2
        if width <= enough:
            return Window(int(w_j) + 1, end, value, low, high), True
        if best is None or width < best_width:
            best, best_width = Window(int(w_j) + 1, end, value, low, high), width
    assert best is not None, "count must be at least 1"
    return best, False


class _Candidates(NamedTuple):
    """Windows of many metrics, one row each, shortest first (see :func:`ranged_end_candidates`)."""

    first: np.ndarray
    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    width: np.ndarray


class EndCandidates(NamedTuple):
    """The windows :func:`ranged_end_window` scans for one metric, computed ahead.

    Attributes:
        end: The last display's counter (every window's last batch).
        size: How many windows are held: the shortest first, the epoch start last when
            within reach.
        empty: Index of the first window that is empty at the largest end weight (the scan
            gives up there), or ``size``.
        row: This metric's row in ``batch``.
        batch: The windows of every metric of the batch (first batch, value, low, high and
            half-width, one row per metric).
    """

    end: int
    size: int
    empty: int
    row: int
    batch: _Candidates

    def scan(self, count: int, enough: float) -> tuple[Window, bool] | None:
        """:func:`ranged_end_window` with these ``count`` and ``enough`` (``count`` at most the
        number of windows held, unless they are all there are)."""
        best = -1
        best_width = math.inf
        for i, w in enumerate(self.batch.width[self.row, : min(count, self.size)].tolist()):
            if i == self.empty:
                return None
            if w <= enough:
                return self.window(i), True
            if best < 0 or w < best_width:
                best, best_width = i, w
        if best < 0:
            raise ValueError("count must be at least 1")
        return self.window(best), False

    def pick(self, count: int, enough: float) -> tuple[Window, bool]:
        """:meth:`scan` when no window is empty (``empty == size``)."""
        found = self.scan(count, enough)
        if found is None:
            raise ValueError("an empty window among those held: scan them instead")
        return found

    def window(self, i: int) -> Window:
        """Window ``i``."""
        b, r = self.batch, self.row
        return Window(
            int(b.first[r, i]),
            self.end,
            float(b.value[r, i]),
            float(b.low[r, i]),
            float(b.high[r, i]),
        )


def first_within(held: Sequence[EndCandidates], enough: np.ndarray) -> list[int]:
    """For each metric, :meth:`EndCandidates.scan`'s pick over all its windows when one is
    precise: the index of the first whose half-width is at most ``enough[i]``, else -1.

    Args:
        held: Windows of one batch (from a single :func:`ranged_end_candidates` call).
        enough: Per metric, the half-width that ends the search.
    """
    if not held:
        return []
    batch = held[0].batch
    rows = np.array([h.row for h in held])
    sizes = np.array([h.size for h in held])
    fits = batch.width[rows] <= enough[:, None]
    fits &= np.arange(fits.shape[1]) < sizes[:, None]
    return np.where(fits.any(axis=1), fits.argmax(axis=1), -1).tolist()


def ranged_end_candidates(
    series: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    end_weights: Sequence[tuple[float | None, float | None]],
    clips: Sequence[tuple[float, float] | None],
    count: int,
) -> list[EndCandidates]:
    """The ``count`` shortest windows of :func:`ranged_end_window` for many metrics at once.

    :func:`ranged_end_window` evaluates its windows one by one on scalars; for a short epoch
    that loop costs more than the rest of the epoch's analysis. Here the same doubles come from
    a few array passes over every metric of a batch of epochs: the same operations in the same
    order, elementwise (IEEE arithmetic is the same on scalars and arrays), with ``min``/``max``
    and the clip written as the selections the scalar code makes, so ties, signed zeros, NaN and
    infinities come out the same.

    Args:
        series: Per metric, ``(steps, means, halves)`` with at least two displays.
        end_weights: Per metric, ``(end_weight_low, end_weight_high)`` as in
            :func:`ranged_end_window`.
        clips: Per metric, its known range or ``None``.
        count: How many windows to compute per metric (at least 1).

    Returns:
        Per metric, its first ``min(count, n)`` windows (``n`` displays: the ``n - 1`` after an
        earlier display, then the epoch start).
    """
    if not series:
        return []
    steps_all, means_all, halves_all = (np.concatenate(c) for c in zip(*series, strict=True))
    sizes = np.array([len(s) for s, _, _ in series])
    last = np.cumsum(sizes) - 1
    ends = steps_all[last]
    w_hi = np.array([math.nan if h is None else h for _, h in end_weights], dtype=np.float64)
    w_hi = np.where(np.isnan(w_hi), ends.astype(np.float64), w_hi)
    w_lo = np.array([math.nan if lo is None else lo for lo, _ in end_weights], dtype=np.float64)
    # min(low, w_hi) as the scalar code takes it: w_hi only when smaller.
    w_lo = np.where(np.isnan(w_lo) | (w_hi < w_lo), w_hi, w_lo)
    clipped = np.array([c is not None for c in clips])
    clip_lo = np.array([c[0] if c is not None else 0.0 for c in clips], dtype=np.float64)
    clip_hi = np.array([c[1] if c is not None else 0.0 for c in clips], dtype=np.float64)
    m_k, h_k = means_all[last], halves_all[last]
    takes = np.minimum(sizes - 1, count)
    column = np.arange(count)
    # Column c of row r: the display c places before its last (shortest window first), then
    # the epoch start (weight 0, mean 0), then padding that no scan reaches.
    shown = column < takes[:, None]
    index = np.where(shown, (last - 1)[:, None] - column, 0)
    w_j = np.where(shown, steps_all[index], 0).astype(np.float64)
    m_j = np.where(shown, means_all[index], 0.0)
    h_j = np.where(shown, halves_all[index], 0.0)
    w_hi, w_lo, m_k, h_k = w_hi[:, None], w_lo[:, None], m_k[:, None], h_k[:, None]
    clipped, clip_lo, clip_hi = clipped[:, None], clip_lo[:, None], clip_hi[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        value = (w_hi * m_k - w_j * m_j) / (w_hi - w_j)
        half = (w_hi * h_k + w_j * h_j) / (w_hi - w_j)
        mk_low, mk_high = m_k - h_k, m_k + h_k
        mj_low, mj_high = m_j - h_j, m_j + h_j
        a = (w_lo * mk_low - w_j * mj_high) / (w_lo - w_j)
        b = (w_hi * mk_low - w_j * mj_high) / (w_hi - w_j)
        c = (w_lo * mk_high - w_j * mj_low) / (w_lo - w_j)
        d = (w_hi * mk_high - w_j * mj_low) / (w_hi - w_j)
        exact = w_lo == w_hi
        open_ = w_lo <= w_j
        low = np.where(exact, value - half, np.where(open_, -math.inf, np.where(b < a, b, a)))
        high = np.where(exact, value + half, np.where(open_, math.inf, np.where(d > c, d, c)))
        slack = _SLACK * (np.abs(low) + np.abs(high) + 1.0)
        finite = np.isfinite(slack)
        low = np.where(finite, low - slack, low)
        high = np.where(finite, high + slack, high)
        c_low = np.where(low > clip_lo, low, clip_lo)
        c_high = np.where(high < clip_hi, high, clip_hi)
        crossed = c_low > c_high
        c_low = np.where(crossed, clip_lo, c_low)
        c_high = np.where(crossed, clip_hi, c_high)
        c_value = np.where(value > clip_lo, value, clip_lo)
        c_value = np.where(c_value < clip_hi, c_value, clip_hi)
        low = np.where(clipped, c_low, low)
        high = np.where(clipped, c_high, high)
        value = np.where(clipped, c_value, value)
        width = (high - low) / 2
    held = np.minimum(takes + 1, count)
    empty = ~(w_hi > w_j) & (column < held[:, None])
    empties = np.where(empty.any(axis=1), empty.argmax(axis=1), held)
    batch = _Candidates(w_j.astype(np.int64) + 1, value, low, high, width)
    return [
        EndCandidates(e, k, z, r, batch)
        for r, (e, k, z) in enumerate(
            zip(ends.tolist(), held.tolist(), empties.tolist(), strict=True)
        )
    ]


def bounds_rows(
    start: tuple[np.ndarray, np.ndarray, np.ndarray],
    end: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    clip: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`window_bounds` for many windows at once, one per row: the same doubles.

    The same operations in the same order as :func:`window_bounds` (its :func:`exact_window`
    path when the end weight is exact), elementwise; ``min``/``max`` of the eight corners are
    folded in the same order with the same tie rule (the earlier corner wins), and the clip is
    :func:`_clip_one`'s selections. A row whose largest end weight does not exceed its start
    is an error in :func:`window_bounds`; here its numbers are meaningless and the caller must
    not use them.

    Args:
        start: ``(w_j, m_j, h_j)``: the start's weight (0 for the epoch start), mean and
            rounding half-width.
        end: ``(w_lo, w_hi, m_k, h_k)``: the end's smallest and largest weight (equal when
            exact; ``w_lo`` already at most ``w_hi``), mean and half-width.
        clip: ``(clipped, lo, hi)``: whether each row has a known range, and the range.

    Returns:
        ``(value, low, high)``.
    """
    w_j, m_j, h_j = start
    w_lo, w_hi, m_k, h_k = end
    clipped, lo, hi = clip
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        span = w_hi - w_j
        value = (w_hi * m_k - w_j * m_j) / span
        half = (w_hi * h_k + w_j * h_j) / span
        corners = [
            (w * mk - w_j * mj) / (w - w_j)
            for w in (w_lo, w_hi)
            for mk in (m_k - h_k, m_k + h_k)
            for mj in (m_j - h_j, m_j + h_j)
        ]
        low_c = high_c = corners[0]
        for corner in corners[1:]:
            low_c = np.where(corner < low_c, corner, low_c)
            high_c = np.where(corner > high_c, corner, high_c)
        exact = w_lo == w_hi
        unbounded = w_lo <= w_j
        low = np.where(exact, value - half, np.where(unbounded, -math.inf, low_c))
        high = np.where(exact, value + half, np.where(unbounded, math.inf, high_c))
        finite = np.isfinite(low) & np.isfinite(high)
        slack = _SLACK * (np.abs(low) + np.abs(high) + 1.0)
        low = np.where(finite, low - slack, low)
        high = np.where(finite, high + slack, high)
    c_low = np.where(lo > low, lo, low)
    c_high = np.where(hi < high, hi, high)
    crossed = c_low > c_high
    c_low, c_high = np.where(crossed, lo, c_low), np.where(crossed, hi, c_high)
    c_value = np.where(lo > value, lo, value)
    c_value = np.where(hi < c_value, hi, c_value)
    return (
        np.where(clipped, c_value, value),
        np.where(clipped, c_low, low),
        np.where(clipped, c_high, high),
    )
