"""Exponentially discounted fits of the batch values: `EMA` (a level) and `EMATrend` (a line),
kept as moment sums so that an update is O(1) and states merge and extend exactly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from fitlens.core.estimators.base import Estimator, NanPolicy, _check_same_steps
from fitlens.core.local_fit import LocalFit, local_fit
from fitlens.core.metric_range import UNBOUNDED, MetricRange


@lru_cache(maxsize=64)
def _move(size: int, n: int) -> np.ndarray:
    """The matrix that rewrites moment sums ``sum w x^k`` as sums of ``(x - n)^k``."""
    k = np.arange(size)
    binom = np.array([[math.comb(int(i), int(j)) for j in k] for i in k], dtype=np.float64)
    move = binom * float(-n) ** np.maximum(k[:, None] - k[None, :], 0) * (k[:, None] >= k)
    move.flags.writeable = False
    return move


@lru_cache(maxsize=64)
def _block_powers(size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` of a block of ``n`` batches (the newest at 0) and its powers ``x^k``, k < size."""
    x = -np.arange(n - 1, -1, -1, dtype=np.float64)
    powers = x[None, :] ** np.arange(size)[:, None]
    x.flags.writeable = powers.flags.writeable = False
    return x, powers


@lru_cache(maxsize=256)
def _discounts(decay: float, n: int) -> np.ndarray:
    """``decay**(-x)`` over a block of ``n`` batches: the newest batch's discount is 1."""
    d = decay ** (-_block_powers(1, n)[0])
    d.flags.writeable = False
    return d


@lru_cache(maxsize=256)
def _block_factors(
    decays: tuple[float, ...], n: int, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What a block of ``n`` batches does to the sums of lines with these ``decays``.

    Returns (read-only):
        discounts: ``(lines, 5, n)``: each batch's discount in the sums ``m``, ``t``, ``my``,
            ``syy``, ``batches``: ``d``, ``d**2``, ``d``, ``d``, ``d`` (``d = decay**-x``).
        powers_t: ``(n, size)``: ``x**j`` of each batch.
        move_t: ``(size, size)``: `_move`, transposed (the sums are rows).
        carry: ``(lines, 2, 1)``: ``decay**n`` and ``decay**2n``, the old sums' decay.
        move_my: ``move_t[:k, :k]`` for ``my`` (``k = (size + 1) // 2`` sums); carry_one:
            ``carry[:, 0]``: views kept with the rest, so that an update slices nothing.
    """
    d = np.array([_discounts(decay, n) for decay in decays])  # (lines, n)
    discounts = np.stack([d, d * d, d, d, d], axis=1)
    powers_t = np.ascontiguousarray(_block_powers(size, n)[1].T)
    move_t = np.ascontiguousarray(_move(size, n).T)
    c = np.array([decay**n for decay in decays])
    carry = np.stack([c, c * c], axis=1)[:, :, None]
    for array in (discounts, powers_t, move_t, carry):
        array.flags.writeable = False
    k = (size + 1) // 2
    return discounts, powers_t, move_t, carry, move_t[:k, :k], carry[:, 0]


#: The sums of a discounted fit: what `update_lines` leaves in a stack, read on demand.
_SUMS = frozenset(("m", "t", "my", "syy", "batches"))


class _Stacked(NamedTuple):
    """The sums of lines updated together, one row per line (never written in place)."""

    mt: np.ndarray  # (lines, 2, size): m and t
    my: np.ndarray  # (lines, k)
    sb: np.ndarray  # (lines, 2): syy and batches


def stacked_sums(lines: Sequence[_Discounted]) -> _Stacked | None:
    """The stack holding the sums of ``lines``, row ``i`` for line ``i``, when the last
    `update_lines` left them there and nothing changed them since; else None."""
    src = lines[0].__dict__.get("_src")
    if src is None or len(src[0].sb) != len(lines):
        return None
    stack = src[0]
    for i, line in enumerate(lines):
        state = line.__dict__
        src = state.get("_src")
        if src is None or src[0] is not stack or src[1] != i or not _SUMS.isdisjoint(state):
            return None
    return stack


def update_lines(
    lines: Sequence[_Discounted], values: np.ndarray, weights: np.ndarray, per_row: int = 1
) -> None:
    """Add ``n`` batches (oldest first) to discounted fits of one degree that have seen the same
    number of batches so far; their decays may differ.

    All the lines' sums are updated together in a few numpy calls (`AdaptiveTrend` updates
    five lines per metric at every block of steps). Each line's products are its own matrix
    product of a stack (numpy runs one per line, of the same shape whatever the lines), so a
    line updated with others rounds exactly as when it is updated alone: `_Discounted._update`
    is this function with one line.

    The new sums stay in their stack (`_Stacked`); each line reads its row when it is first
    read (`_Discounted.__getattr__`), and the next update of the same lines starts from the
    stack: no per-line arrays are made or gathered between two blocks of steps.

    Args:
        lines: the fits. values, weights: ``(n,)`` batches for every line, or ``(rows, n)``,
            one row per ``per_row`` consecutive lines (several metrics' lines at once: a row
            per metric, ``per_row`` lines each; ``rows * per_row == len(lines)``).
    """
    update_lines_blocks(lines, [(values, weights)], per_row)


def update_lines_blocks(
    lines: Sequence[_Discounted],
    blocks: Sequence[tuple[np.ndarray, np.ndarray]],
    per_row: int = 1,
) -> None:
    """`update_lines` for several blocks of batches in turn, oldest first: the sums, bit for
    bit, of one `update_lines` per block, in fewer numpy calls (the blocks' new sums of a
    length come from one stacked product; only the aging of the old sums goes block by block).

    Args:
        lines, per_row: as `update_lines`. blocks: ``(values, weights)`` of each block, shaped
            as `update_lines` takes them (all ``(n,)`` or all ``(rows, n)``).
    """
    if not blocks:
        return
    decays = [line.decay for line in lines]
    if math.isnan(sum(decays)):  # a decay not known yet: the first batches size the memory
        weights = blocks[0][1]
        for i, line in enumerate(lines):
            if math.isnan(line.decay):
                first_size = weights[0] if weights.ndim == 1 else weights[i // per_row, 0]
                line.decay = line._initial_decay(float(first_size))
        decays = [line.decay for line in lines]
    if blocks[0][0].ndim == 1:  # one row of batches for every line
        per_row = len(lines)
    first = lines[0]
    count, steps = len(lines), first.steps
    stack = stacked_sums(lines) if steps else None
    size = first.m.size if stack is None else stack.mt.shape[-1]
    k = first.my.size if stack is None else stack.my.shape[-1]
    old: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    if stack is not None:
        old = (stack.mt, stack.my, stack.sb)
    elif steps:  # the old sums in one array; each line's blocks keep their shapes (and so the
        # products their rounding): (2, size) for m and t, (1, k) for my
        gathered = np.concatenate([a for line in lines for a in (line.m, line.t, line.my)])
        gathered = gathered.reshape(count, 2 * size + k)
        sums = np.array([x for line in lines for x in (line.syy, line.batches)])
        mt_my = gathered[:, : 2 * size].reshape(count, 2, size), gathered[:, 2 * size :]
        old = (*mt_my, sums.reshape(count, 2))
    start = 0
    # an inf or NaN batch (nan_policy "propagate") makes the sums NaN, as it should: numpy's
    # warnings about it would only reach the user's run as noise
    with np.errstate(invalid="ignore", over="ignore"):
        while start < len(blocks):  # the blocks of one length at a time (all but a tail's)
            n = blocks[start][0].shape[-1]
            stop = start + 1
            while stop < len(blocks) and blocks[stop][0].shape[-1] == n:
                stop += 1
            discounts, powers_t, move_t, carry, move_my, carry_one = _block_factors(
                tuple(decays), n, size
            )
            if stop - start == 1:
                values, weights = blocks[start]
            else:
                values = np.stack([v for v, _ in blocks[start:stop]])
                weights = np.stack([w for _, w in blocks[start:stop]])
            values = values.reshape(stop - start, -1, n)  # (blocks, rows, n)
            weights = weights.reshape(values.shape)
            wv = weights * values
            parts = np.array([weights, weights, wv, wv * values, weights > 0])
            # (blocks, rows, 1, 5, n): a row's parts serve its lines, elementwise the same
            # products as line by line
            parts = np.moveaxis(parts, 0, 2)[:, :, None]
            weighted = discounts.reshape(-1, per_row, 5, n) * parts
            new = weighted.reshape(stop - start, count, 5, n) @ powers_t  # (.., lines, 5, size)
            for block in new:
                mt, my, sb = block[:, :2], block[:, 2, :k], block[:, 3:, 0]
                if old is not None:
                    mt = mt + carry * (old[0] @ move_t)
                    my = my + carry_one * (old[1][:, None, :] @ move_my)[:, 0]
                    sb = sb + carry_one * old[2]
                old = (mt, my, sb)
                steps += n
            start = stop
    assert old is not None
    lazy = stack is not None  # then no line holds its sums (`stacked_sums`)
    stack = _Stacked(*old)
    for i, line in enumerate(lines):
        state = line.__dict__
        if not lazy:
            for key in _SUMS:
                state.pop(key, None)
        state["_src"] = (stack, i)
        state["_fit"] = None
        line.steps = steps


class _Discounted(Estimator):
    """A polynomial fit of ``degree`` with exponentially fading weights, read at the newest batch.

    Batch ``i`` of ``t`` sits at ``x = i - t`` (the newest at 0) with weight ``decay**(t - i) *
    samples``. State: the moment sums of `fitlens.core.local_fit` up to the degree above
    (``m``, ``my``, ``t``; ``syy``; ``batches``, the discounted count of batches with weight),
    ``steps`` (batches seen) and ``decay`` (per batch; NaN until it is known). An update is O(1)
    per batch; ranks' states add, later states append after aging ours by their steps.
    """

    degree = 0
    _state_names = ("m", "my", "t", "syy", "batches", "steps", "decay")

    def _initial_decay(self, first_size: float) -> float:
        raise NotImplementedError

    def reset(self) -> None:
        size = 2 * self.degree + 3
        self.m = np.zeros(size)
        self.t = np.zeros(size)
        self.my = np.zeros(self.degree + 2)
        self.syy = 0.0
        self.batches = 0.0
        self.steps = 0
        self.decay = self._initial_decay(math.nan)
        self._fit: LocalFit | None = None
        self._src: tuple[_Stacked, int] | None = None  # see `__getattr__`

    def __getattr__(self, name: str) -> Any:
        """The sums an `update_lines` left in its stack: read (and kept) at the first access.

        Python calls this only for attributes the instance does not hold."""
        if name in _SUMS:
            src = self.__dict__.get("_src")
            if src is not None:
                stack, i = src
                state = self.__dict__
                m, t = stack.mt[i]
                syy, batches = stack.sb[i].tolist()
                for key, value in (("m", m), ("t", t), ("my", stack.my[i]), ("syy", syy)):
                    state.setdefault(key, value)
                state.setdefault("batches", batches)
                state["_src"] = None
                return state[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _shift(self, n: int) -> None:
        """Age the sums by ``n`` batches: every x decreases by n, every weight decays (the
        products of `update_lines`, so a shift rounds as an update's)."""
        if n == 0 or self.steps == 0:
            return
        self._fit = None
        _, _, move_t, carry, _, _ = _block_factors((self.decay,), n, self.m.size)
        k = self.my.size
        self.m, self.t = carry[0] * (np.array([(self.m, self.t)]) @ move_t)[0]
        self.my = carry[0, 0] * (self.my[None, None, :] @ move_t[:k, :k])[0, 0]
        self.syy *= float(carry[0, 0, 0])
        self.batches *= float(carry[0, 0, 0])

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        update_lines([self], values, weights)

    def _copy(self) -> Estimator:
        """An independent copy that shares the state arrays: every change of state (update,
        shift, merge, load) assigns new arrays and never writes into the old ones, so sharing
        them is safe and saves copying them (a display copies every line at each read)."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        return copy

    def fit(self) -> LocalFit:
        if self._fit is None:  # the fit depends on the state only: kept until it changes
            self._fit = local_fit(
                self.m, self.my, self.t, self.syy, self.batches, self.steps, self.degree
            )
        return self._fit

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        self._fit = None
        self._src = None

    @property
    def weight(self) -> float:
        return float(self.m[0])

    def merge(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, _Discounted)
        _check_same_steps(type(self).__name__, self.steps, other.steps)
        self._check_decay(other)
        self._add(other)

    def _add(self, other: _Discounted) -> None:
        self._fit = None
        self.m = self.m + other.m
        self.t = self.t + other.t
        self.my = self.my + other.my
        self.syy += other.syy
        self.batches += other.batches

    def _check_decay(self, other: _Discounted) -> None:
        if math.isnan(self.decay):
            self.decay = other.decay
        elif not math.isnan(other.decay) and other.decay != self.decay:
            raise ValueError(
                f"Can only combine trends with the same decay per batch. Received {self.decay!r} "
                f"and {other.decay!r} (memory in samples sized from first batches of "
                "different sizes); pass a fixed `beta` instead."
            )

    def extend(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, _Discounted)
        self._check_decay(other)
        self._shift(other.steps)
        self._add(other)
        self.steps += other.steps


class EMA(_Discounted):
    """Debiased, sample-weighted exponential moving average (the smoothing fastai uses for loss).

    After batches 1..t it returns ``sum_i beta**(t-i) * v_i * w_i / sum_i beta**(t-i) * w_i``:
    an EMA of sums divided by an EMA of weights. With equal weights this equals the
    bias-corrected EMA ``(1 - beta) * sum beta**(t-i) v_i / (1 - beta**t)``, so the first batches
    are not pulled towards zero. Its effective memory is about ``1 / (1 - beta)`` batches. Its
    interval adds to the noise the lag a straight line through the same memory shows.

    Args:
        beta: decay per batch, in [0, 1). 0 keeps only the last batch.
    """

    name = "ema"
    degree = 0

    def __init__(
        self,
        beta: float = 0.98,
        nan_policy: NanPolicy = "propagate",
        bounds: MetricRange = UNBOUNDED,
    ) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Expected `beta` in [0, 1). Received: {beta!r}.")
        self.beta = float(beta)
        super().__init__(nan_policy, bounds)

    def _config(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def _initial_decay(self, first_size: float) -> float:
        return self.beta


class EMATrend(_Discounted):
    """Lag-free level from an exponentially weighted straight-line fit, read at the newest batch.

    Fits ``value ~ a + b * x`` by weighted least squares where batch ``i`` of ``t`` sits at
    ``x = i - t`` (the newest at 0) with weight ``beta**(t - i) * samples``, and returns ``a``:
    the line at the newest batch (discounted least squares, as in Brown's double exponential
    smoothing). Like `TrendWindow` it removes the lag of an average on a steady trend, but its
    memory fades smoothly instead of dropping old batches, and its state is a few sums: an
    update is O(1) and two states merge by addition. With fewer than three batches (or all
    weight on one batch) it returns their weighted mean. Its interval adds to the noise of the
    line how far a parabola through the same memory disagrees at the newest batch (the bend).

    The memory is set in *samples* by default: ``beta = exp(-n / memory)`` with ``n`` the first
    batch's size, so large batches (less noise per batch) get a shorter memory in steps (less lag
    from the model changing) and small batches a longer one. The default of 800 samples was
    tuned on ``benchmarks/now_estimate.py``. Pass ``beta`` to fix the decay per batch instead.
    Under torch.distributed each rank sizes its memory from its own shard of the batch, which
    is the same on every rank, so per-rank states still merge exactly.

    Args:
        memory: samples of memory (> 0); used when ``beta`` is None.
        beta: decay per batch, in (0, 1); overrides ``memory``.

    Example:
        >>> est = EMATrend(beta=0.9)
        >>> est.update([1.0, 2.0, 3.0, 4.0], weights=32)
        >>> round(est.value, 6)  # a straight line is followed without lag
        4.0
    """

    name = "ema_trend"
    degree = 1

    def __init__(
        self,
        memory: float = 800.0,
        beta: float | None = None,
        nan_policy: NanPolicy = "propagate",
        bounds: MetricRange = UNBOUNDED,
    ) -> None:
        if beta is not None and not 0.0 < beta < 1.0:
            raise ValueError(f"Expected `beta` in (0, 1) or None. Received: {beta!r}.")
        if not memory > 0:
            raise ValueError(f"Expected `memory` (samples) > 0. Received: {memory!r}.")
        self.memory = float(memory)
        self.beta = None if beta is None else float(beta)
        super().__init__(nan_policy, bounds)

    def _config(self) -> dict[str, Any]:
        return {"memory": self.memory, "beta": self.beta}

    def __repr__(self) -> str:
        bounds = "" if self.bounds == UNBOUNDED else f", bounds={self.bounds!r}"
        if self.beta is not None:
            return f"EMATrend(beta={self.beta!r}{bounds})"
        return f"EMATrend(memory={self.memory!r}{bounds})"

    def _initial_decay(self, first_size: float) -> float:
        if self.beta is not None:
            return self.beta
        return math.exp(-max(first_size, 1.0) / self.memory)
