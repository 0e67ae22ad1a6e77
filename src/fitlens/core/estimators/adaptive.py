"""`AdaptiveTrend`: `EMATrend` at several memories, read from the one with the smallest
estimated error (the default now estimator)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np

from fitlens.core.estimators.base import Estimator, NanPolicy, check_weights
from fitlens.core.estimators.discounted import (
    EMATrend,
    stacked_sums,
    update_lines,
    update_lines_blocks,
)
from fitlens.core.estimators.interval import _bias2, _spread
from fitlens.core.local_fit import LocalFit, local_fits
from fitlens.core.metric_range import UNBOUNDED, MetricRange


class AdaptiveTrend(Estimator):
    """`EMATrend` at several memories, read from the one with the smallest estimated error.

    A short memory follows a bending curve but is noisy; a long one is quiet but lags and
    overshoots where the curve bends. Each memory's squared error is estimated as its noise
    (``s2 * noise``, binomial for a rate) plus its squared bend beyond that bend's own noise,
    and the estimate (with its interval) is that of the memory where the sum is smallest. Every
    memory keeps its own sums, so updates stay O(1) and states merge and extend exactly.

    Picking the smallest estimate favours a memory whose bend happens to look small, so the
    interval counts the squared bend twice (``bend_weight = 2``, tuned with the memories on
    seeds 0-4 of ``benchmarks/now_estimate.py``).

    State: each memory's `EMATrend` state, keys prefixed ``"<index>."``.

    Args:
        memories: samples of memory of each line (each > 0, at least one), shortest first.
    """

    name = "adaptive_trend"
    bend_weight = 2.0

    def __init__(
        self,
        memories: tuple[float, ...] = (300.0, 600.0, 1200.0, 2400.0, 4800.0),
        nan_policy: NanPolicy = "propagate",
        bounds: MetricRange = UNBOUNDED,
    ) -> None:
        memories = tuple(float(m) for m in memories)
        if not memories:
            raise ValueError("Expected at least one memory (samples). Received: ().")
        self.memories = memories
        self.lines = [EMATrend(m) for m in memories]  # fed only finite batches, read raw
        super().__init__(nan_policy, bounds)

    def _config(self) -> dict[str, Any]:
        return {"memories": self.memories}

    def reset(self) -> None:
        for line in self.lines:
            line.reset()

    def _update(self, values: np.ndarray, weights: np.ndarray) -> None:
        update_lines(self.lines, values, weights)  # one stacked update, as each line alone

    @property
    def steps(self) -> int:
        return self.lines[0].steps

    @property
    def weight(self) -> float:
        return self.lines[0].weight

    def fit(self) -> LocalFit:
        stale = self._stale_lines()
        if len(stale) > 1:  # the lines share their steps: fit them in one stacked solve
            _fit_lines(stale, self.steps)
        fits = [line.fit() for line in self.lines]
        # a bend that cannot be measured is no evidence of a small error: only the shortest
        # memory may be read without one
        usable = [fits[0], *(f for f in fits[1:] if not math.isnan(f.bend))]
        return min(usable, key=self._error)

    def _stale_lines(self) -> list[EMATrend]:
        return [line for line in self.lines if line._fit is None]

    def _error(self, fit: LocalFit) -> float:
        """Estimated squared error of a line: noise plus squared bend beyond its noise."""
        spread = _spread(fit, self.bounds)
        error = spread * fit.noise + _bias2(fit, spread)
        return math.inf if math.isnan(error) else error

    def _copy(self) -> Estimator:
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.lines = [cast(EMATrend, line._copy()) for line in self.lines]
        return copy

    def merge(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, AdaptiveTrend)
        for i, line in enumerate(self.lines):  # same memories: `_check_compatible`
            line.merge(other.lines[i])

    def extend(self, other: Estimator) -> None:
        self._check_compatible(other)
        assert isinstance(other, AdaptiveTrend)
        for i, line in enumerate(self.lines):
            line.extend(other.lines[i])

    def state_dict(self) -> dict[str, Any]:
        return {
            f"{i}.{k}": v for i, line in enumerate(self.lines) for k, v in line.state_dict().items()
        }

    def _load(self, state: dict[str, Any]) -> None:
        for i, line in enumerate(self.lines):
            prefix = f"{i}."
            line.load_state_dict(
                {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            )


def _fit_lines(lines: Sequence[EMATrend], steps: int) -> None:
    """Fit ``lines`` (all over ``steps`` batches) in one stacked solve; each line's fit depends
    on its own sums only (`local_fits`), so it is the fit the line makes alone, bit for bit."""
    stack = stacked_sums(lines)
    if stack is not None:  # the sums of the update that made them, as they lie (same values)
        sums = [stack.mt[:, 0], stack.my, stack.mt[:, 1], stack.sb[:, 0], stack.sb[:, 1]]
        m, my, t, syy, batches = (np.ascontiguousarray(a) for a in sums)
    else:
        m, my, t = (np.array([getattr(line, k) for line in lines]) for k in ("m", "my", "t"))
        syy, batches = (np.array([getattr(line, k) for line in lines]) for k in ("syy", "batches"))
    fits = local_fits(m, my, t, syy, batches, steps, EMATrend.degree)
    for line, fit in zip(lines, fits, strict=True):
        line._fit = fit


def fit_together(estimators: Iterable[Estimator]) -> None:
    """Fit the `AdaptiveTrend` lines of several estimators at once before they are read (a
    display reads every metric's now estimate together): the stale lines of those over the
    same steps go through one stacked solve instead of one per estimator. Each fit is the one
    its line makes alone, so the estimates read after are the same, bit for bit; estimators of
    other kinds are left to fit themselves."""
    by_steps: dict[int, list[EMATrend]] = {}
    for est in estimators:
        if isinstance(est, AdaptiveTrend):
            by_steps.setdefault(est.steps, []).extend(est._stale_lines())
    for steps, lines in by_steps.items():
        if len(lines) > 1:
            _fit_lines(lines, steps)


def with_batches_together(
    estimators: Sequence[Estimator], values: np.ndarray, weights: np.ndarray
) -> list[Estimator]:
    """``[est.with_batches(values[:, i], weights[:, i]) for i, est in enumerate(estimators)]``:
    copies with the batches added, bit for bit, their lines updated in one stacked update
    (`update_together`); the estimators themselves are unchanged. A display adds the partial
    block to every metric's now estimate this way before reading them."""
    copies = [est._copy() for est in estimators]
    update_together(copies, values, weights)
    return copies


def update_together(
    estimators: Sequence[Estimator], values: np.ndarray, weights: np.ndarray
) -> None:
    """``estimators[i].update(values[:, i], weights[:, i])`` for every column ``i`` of ``(n,
    metrics)`` batches, with the lines of the `AdaptiveTrend`s (``"propagate"``, over the same
    steps) updated in one stacked `update_lines`: each line's sums are those it reaches alone,
    bit for bit. The report's replay feeds every metric's now estimate a block at a time this
    way (`fitlens.report.series`).
    """
    update_blocks_together(estimators, [(values, weights)])


def update_blocks_together(
    estimators: Sequence[Estimator], blocks: Sequence[tuple[np.ndarray, np.ndarray]]
) -> None:
    """`update_together` for each ``(values, weights)`` block in turn, oldest first: the same
    states, bit for bit, with the `AdaptiveTrend` lines' blocks in one `update_lines_blocks`
    (`MetricStream` feeds the now estimates the blocks of steps gathered since they were last
    read). Every block's weights are checked before any estimator changes."""
    blocks = [
        (np.asarray(v, dtype=np.float64), np.asarray(w, dtype=np.float64))
        for v, w in blocks
        if len(v)
    ]
    if not blocks:
        return
    groups: dict[int, list[int]] = {}
    for i, est in enumerate(estimators):
        if type(est) is AdaptiveTrend and est.nan_policy == "propagate":
            groups.setdefault(est.steps, []).append(i)
        else:
            for values, weights in blocks:
                est.update(values[:, i], weights[:, i])
    every = list(range(blocks[0][0].shape[1]))
    for columns in groups.values():
        group = [cast(AdaptiveTrend, estimators[i]) for i in columns]
        # every column in order (the common case): no copy
        picked = [(v, w) if columns == every else (v[:, columns], w[:, columns]) for v, w in blocks]
        for _, w in picked:
            check_weights(w)
        lines = [line for est in group for line in est.lines]
        per_row = len(group[0].lines)
        if len(lines) == per_row * len(group):  # as many lines each: one row per estimator
            update_lines_blocks(lines, [(v.T, w.T) for v, w in picked], per_row)
        else:
            per_line = [i for i in columns for _ in cast(AdaptiveTrend, estimators[i]).lines]
            update_lines_blocks(lines, [(v[:, per_line].T, w[:, per_line].T) for v, w in blocks])
