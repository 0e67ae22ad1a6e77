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
  last batch breaks proportionality, which ``last_batch_low`` accounts for.
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
    clip: tuple[float, float] | None = None,
) -> Window:
    """Bound the mean over the batches between two displayed running means.

    Args:
        start: The display that opens the window, or ``None`` for the epoch start (weight 0).
        end: The display that closes it; ``end.step > start.step``.
        end_weight_low: Smallest possible weight behind ``end`` when the last batch may be
            partial (in counter units, e.g. ``n - 1 + 0.5``); ``None`` means exactly ``end.step``.
        clip: Known range of the metric (``(0, 1)`` for accuracies), applied to the bounds.

    Returns:
        The window with its point value (from the displayed numbers) and provable bounds.
    """
    w_j = 0.0 if start is None else float(start.step)
    m_j = 0.0 if start is None else start.mean
    h_j = 0.0 if start is None else start.half
    w_k_hi = float(end.step)
    value = window_mean(w_j, m_j, w_k_hi, end.mean)
    if end_weight_low is None:
        # The corners' extremes in closed form: m_k ± h_k against m_j ∓ h_j.
        half = (w_k_hi * end.half + w_j * h_j) / (w_k_hi - w_j)
        low, high = value - half, value + half
    else:
        low, high = _corner_bounds(w_j, m_j, h_j, max(end_weight_low, w_j), w_k_hi, end)
    if math.isfinite(low) and math.isfinite(high):
        slack = _SLACK * (abs(low) + abs(high) + 1.0)
        low, high = low - slack, high + slack
    if clip is not None:
        low, high = max(low, clip[0]), min(high, clip[1])
        value = min(max(value, clip[0]), clip[1])
    return Window(int(w_j) + 1, end.step, value, low, high)


def _corner_bounds(
    w_j: float, m_j: float, h_j: float, w_k_lo: float, w_k_hi: float, end: Shown
) -> tuple[float, float]:
    low, high = math.inf, -math.inf
    for w_k in (w_k_lo, w_k_hi):
        if w_k <= w_j:
            return -math.inf, math.inf
        for m_k in (end.mean - end.half, end.mean + end.half):
            for m in (m_j - h_j, m_j + h_j):
                v = window_mean(w_j, m, w_k, m_k)
                low, high = min(low, v), max(high, v)
    return low, high


def reconstruct(
    points: Sequence[Shown],
    tolerance: float,
    *,
    end_weight_low: float | None = None,
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
        clip: Known range of the metric.

    Returns:
        Windows in increasing batch order that tile ``1..points[-1].step``.
    """
    windows: list[Window] = []
    k = len(points) - 1
    if end_weight_low is not None and k >= 0:
        # The last window carries the partial-batch uncertainty: the general (corner) path.
        end = points[k]
        j = k - 1
        while True:
            window = window_bounds(
                points[j] if j >= 0 else None, end, end_weight_low=end_weight_low, clip=clip
            )
            if window.half_width <= tolerance or j < 0:
                break
            j -= 1
        windows.append(window)
        k = j
    lo, hi = clip if clip is not None else (-math.inf, math.inf)
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
            low, high, value = max(low, lo), min(high, hi), min(max(value, lo), hi)
        windows.append(Window(int(w_j) + 1, int(w_k), value, low, high))
        k = j
    windows.reverse()
    return windows


def reconstruct_arrays(
    steps: np.ndarray,
    means: np.ndarray,
    halves: np.ndarray,
    tolerance: float,
    *,
    end_weight_low: float | None = None,
    clip: tuple[float, float] | None = None,
) -> list[Window]:
    """:func:`reconstruct` on columns; vectorized when every display has the same rounding.

    With a common half-width ``h`` the window ``(j, k]`` meets the tolerance exactly when
    ``W_j (h + tol) <= W_k (tol - h)``; the left side grows with ``j``, so the greedy choice
    (the largest such ``j``) is one binary search per window end, done for all ends at once.
    Any other case (mixed ``%.4e`` roundings, a partial last batch) goes through
    :func:`reconstruct` unchanged.

    Args:
        steps: Strictly increasing counters, shape ``(n,)``.
        means: Displayed values, shape ``(n,)``.
        halves: Rounding half-widths, shape ``(n,)``.
        tolerance: Target half-width, in the metric's units.
        end_weight_low: As in :func:`reconstruct`.
        clip: As in :func:`reconstruct`.

    Returns:
        The same windows as :func:`reconstruct` on the equivalent :class:`Shown` list.
    """
    n = len(steps)
    if n == 0:
        return []
    h = float(halves[0])
    if end_weight_low is not None or not bool((halves == h).all()):
        points = [
            Shown(s, m, e)
            for s, m, e in zip(steps.tolist(), means.tolist(), halves.tolist(), strict=True)
        ]
        return reconstruct(points, tolerance, end_weight_low=end_weight_low, clip=clip)
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
        k = j
    ends_a = np.array(ends[::-1])
    starts_a = np.array(starts[::-1])
    w_k, w_j = w[ends_a], w[starts_a]
    span = w_k - w_j
    value = (w_k * means[ends_a - 1] - w_j * means[starts_a - 1]) / span
    half = h * (w_k + w_j) / span
    half += _SLACK * (np.abs(value) + half + 1.0)
    low, high = value - half, value + half
    if clip is not None:
        low = np.maximum(low, clip[0])
        high = np.minimum(high, clip[1])
        value = np.minimum(np.maximum(value, clip[0]), clip[1])
    firsts = (w_j + 1).astype(np.int64).tolist()
    lasts = w_k.astype(np.int64).tolist()
    rows = zip(firsts, lasts, value.tolist(), low.tolist(), high.tolist(), strict=True)
    return list(map(Window._make, rows))


def trailing_windows(
    points: Sequence[Shown],
    *,
    end_weight_low: float | None = None,
    clip: tuple[float, float] | None = None,
) -> list[Window]:
    """All windows that end at the last display, from the shortest to the whole epoch.

    Args:
        points: Displays of one metric within one epoch, in increasing ``step`` order.
        end_weight_low: As in :func:`window_bounds`.
        clip: Known range of the metric.

    Returns:
        One window per earlier display (and one from the epoch start), shortest first.
    """
    if not points:
        return []
    end = points[-1]
    starts: list[Shown | None] = [*reversed(points[:-1]), None]
    return [window_bounds(s, end, end_weight_low=end_weight_low, clip=clip) for s in starts]
