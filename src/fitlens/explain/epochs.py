"""Group parsed progress records into epochs, one progress bar each.

An epoch here is one run of the progress bar from its first step to its last, whatever the
``Epoch k/N`` header says: a loop of ``fit(..., epochs=1)`` calls prints ``Epoch 1/1`` every time
and each call is its own epoch. A new epoch starts at an ``Epoch`` header, when the target
changes, when the counter goes back to the start (a new bar without a header: ``evaluate``,
another ``fit`` call), or when a ``verbose=2`` line (no bar) shows the full count again after a
complete epoch (Keras 3 prints no header for ``fit(epochs=1)``, so a loop of them is a run of
``406/406 - 1s ...`` lines).

Keras 3 runs batch-end callbacks in a thread pool when every callback allows it, so its
progress bar sometimes prints an older update after a newer one (``156/200``, ``155/200``,
``186/200``; behind a slow callback, ``26/40``, ``5/40``, ``30/40``). A step that goes back
to 2 or more, with the same target, no header in between, and the same values wherever that
step was already shown, is such an out-of-order update: it is merged in step order
(:class:`Series` sorts). A step back to 1 is one too when it is redrawn on the bar's own line:
batch 1's callbacks may run after batch 2's (the first update is always drawn, whichever it
is), and a late batch 1 is drawn when the bar's 0.05 s interval has passed, which a loaded
machine makes likely. Every Keras bar ends with a line break, so a bar that restarts
(``evaluate``, another ``fit`` call) starts on a line of its own: back to step 1 on a new line
is a new bar. (A bar drawn one update per line, as Keras does where the output is not a
dynamic display, cannot tell the two apart: there a late step 1 still starts a new bar.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

from fitlens.explain.records import (
    CounterUnit,
    EpochHeader,
    Plain,
    Progress,
    ProgressRun,
    Record,
    Value,
)


class Shown(NamedTuple):
    """One displayed running mean.

    Attributes:
        step: The counter on that line (the window end, in counter units).
        mean: The displayed value.
        half: Rounding half-width of the display (``0.5e-4`` for ``%.4f``).
    """

    step: int
    mean: float
    half: float


class Series:
    """One metric's displays within one epoch, stored as columns.

    Single records append to plain lists; bulk runs append NumPy chunks. :meth:`arrays`
    concatenates them once, puts out-of-order displays in step order (stable, so arrival order
    is kept among equal steps) and drops repeated steps, keeping the last display of each (Keras 3
    redraws the final step once more at epoch end).
    """

    def __init__(self) -> None:
        # Bulk chunks keep their one half-width as a float until arrays() joins them.
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray | float]] = []
        self._steps: list[int] = []
        self._means: list[float] = []
        self._halves: list[float] = []
        self._merged: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def add(self, step: int, mean: float, half: float) -> None:
        """Append one display."""
        self._steps.append(step)
        self._means.append(mean)
        self._halves.append(half)
        self._merged = None

    def add_run(self, steps: np.ndarray, means: np.ndarray, half: float) -> None:
        """Append displays in bulk (``means`` is one column of a run)."""
        self._flush()
        self._chunks.append((steps, means, half))
        self._merged = None

    def _flush(self) -> None:
        if self._steps:
            self._chunks.append(
                (
                    np.array(self._steps, dtype=np.int64),
                    np.array(self._means, dtype=np.float64),
                    np.array(self._halves, dtype=np.float64),
                )
            )
            self._steps, self._means, self._halves = [], [], []

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, means, halves)``, steps strictly increasing."""
        if self._merged is None:
            self._flush()
            chunks = [
                (s, m, np.full(len(s), h) if isinstance(h, float) else h)
                for s, m, h in self._chunks
            ]
            if len(chunks) == 1:
                steps, means, halves = chunks[0]
            else:
                steps, means, halves = (np.concatenate(c) for c in zip(*chunks, strict=True))
            # Usually strictly increasing already: one test, no sort and no copy.
            if len(steps) > 1 and not bool((steps[1:] > steps[:-1]).all()):
                if bool((steps[1:] < steps[:-1]).any()):
                    order = np.argsort(steps, kind="stable")
                    steps, means, halves = steps[order], means[order], halves[order]
                keep = np.ones(len(steps), dtype=bool)
                keep[:-1] = steps[1:] != steps[:-1]
                if not keep.all():
                    steps, means, halves = steps[keep], means[keep], halves[keep]
            self._chunks = [(steps, means, halves)]
            self._merged = (steps, means, halves)
        return self._merged

    def points(self) -> list[Shown]:
        """The displays as :class:`Shown` objects, in step order."""
        steps, means, halves = self.arrays()
        return [
            Shown(s, m, h)
            for s, m, h in zip(steps.tolist(), means.tolist(), halves.tolist(), strict=True)
        ]

    def __len__(self) -> int:
        return len(self.arrays()[0])

    def shown_at(self, step: int) -> Shown | None:
        """The display at ``step``, if there is one."""
        steps, means, halves = self.arrays()
        i = int(np.searchsorted(steps, step))
        if i < len(steps) and int(steps[i]) == step:
            return Shown(step, float(means[i]), float(halves[i]))
        return None


class Epoch(Plain):
    """The progress lines of one epoch, by metric.

    Attributes:
        index: 1-based position in the log.
        header: The ``Epoch k/N`` text that preceded it, if any.
        target: The counter's target (steps or samples per epoch), if printed.
        last_step: The largest counter seen.
        unit: Counter unit, when the log says.
        style: Bar style of the last line (``keras3``, ``bracket``, ``plain``).
        series: Per metric, displayed means in increasing ``step`` order; a repeated step keeps
            its last display (Keras 3 redraws the final step once more at epoch end).
        final: Values on the line that reached the target (includes ``val_*``), if any.
        first_line: Input line where the epoch starts.
        last_line: Input line of its latest record.
    """

    _fields = (
        "index",
        "header",
        "target",
        "last_step",
        "unit",
        "style",
        "series",
        "final",
        "first_line",
        "last_line",
    )
    __slots__ = _fields

    def __init__(
        self,
        index: int,
        header: str | None = None,
        target: int | None = None,
        last_step: int = 0,
        unit: CounterUnit = "unknown",
        style: str = "plain",
        series: dict[str, Series] | None = None,
        final: dict[str, Shown] | None = None,
        first_line: int = 0,
        last_line: int = 0,
    ) -> None:
        self.index = index
        self.header = header
        self.target = target
        self.last_step = last_step
        self.unit = unit
        self.style = style
        self.series = {} if series is None else series
        self.final = {} if final is None else final
        self.first_line = first_line
        self.last_line = last_line

    @property
    def complete(self) -> bool:
        """True when a line reached the target (the bar finished)."""
        return self.target is not None and self.last_step >= self.target

    @property
    def summary_only(self) -> bool:
        """True for a Keras 1/2 ``verbose=2`` epoch: one counter-less line of epoch means."""
        return self.style == "summary"

    def continues_with(
        self, step: int, target: int | None, values: Iterable[Value], line: int
    ) -> bool:
        """Whether a record at ``step`` belongs to this bar (see the module docs).

        Args:
            step: The record's first counter.
            target: Its target.
            values: Its displayed values (for the out-of-order consistency check).
            line: Its input line (a redraw on the same line continues the bar).
        """
        if self.target is not None and target != self.target:
            return False
        if step > self.last_step:
            return True
        if step == self.last_step:
            # Keras 3 redraws the last step once more at epoch end; a bar-less verbose=2 line
            # prints once per epoch, so a second one at the full count is the next epoch.
            return not (
                self.complete and self.style in ("plain", "summary") and line > self.last_line
            )
        if step < 2 and line != self.last_line:
            return False
        for name, value, half in values:
            series = self.series.get(name)
            seen = series.shown_at(step) if series is not None else None
            if seen is not None and abs(seen.mean - value) > seen.half + half:
                return False
        return True

    def add(self, record: Progress) -> None:
        """Record one redraw (an out-of-order one is sorted into place by :class:`Series`)."""
        self.target = record.target
        self.style = record.style
        if record.unit != "unknown":
            self.unit = record.unit
        step = record.step
        if step > self.last_step:
            self.last_step = step
        series = self.series
        for name, value, half in record.values:
            if name not in series:
                series[name] = Series()
            series[name].add(step, value, half)
        if record.target is not None and step >= record.target:
            self.final = {v.name: Shown(step, v.value, v.half) for v in record.values}

    def add_run(self, run: ProgressRun) -> None:
        """Record a bulk run of redraws (none of which is the final line)."""
        self.target = run.target
        self.style = run.style
        if run.unit != "unknown":
            self.unit = run.unit
        self.last_step = max(self.last_step, int(run.steps[-1]))
        for i, name in enumerate(run.names):
            if name not in self.series:
                self.series[name] = Series()
            self.series[name].add_run(run.steps, run.means[:, i], run.half)
        if int(run.steps[-1]) >= run.target:
            last = run.means[-1].tolist()
            step = int(run.steps[-1])
            self.final = {n: Shown(step, v, run.half) for n, v in zip(run.names, last, strict=True)}


def split_epochs(records: Iterable[Record]) -> Iterator[Epoch]:
    """Group records into epochs, streaming: only the current epoch is held in memory.

    Args:
        records: Output of :func:`fitlens.explain.parse.iter_records`.

    Yields:
        Epochs with at least one progress line, in log order.
    """
    current: Epoch | None = None
    header: str | None = None
    index = 0
    for record in records:
        if isinstance(record, EpochHeader):
            if current is not None:
                yield current
                current = None
            header = f"Epoch {record.number}/{record.total}"
            continue
        if isinstance(record, ProgressRun):
            first_step = int(record.steps[0])
            first_values: Iterable[Value] = (
                Value(n, float(v), record.half)
                for n, v in zip(record.names, record.means[0].tolist(), strict=True)
            )
        else:
            first_step, first_values = record.step, record.values
        if current is not None and not current.continues_with(
            first_step, record.target, first_values, record.line
        ):
            yield current
            current = None
        if current is None:
            index += 1
            current = Epoch(index=index, header=header, first_line=record.line)
            header = None
        if isinstance(record, ProgressRun):
            current.add_run(record)
        else:
            current.add(record)
        current.last_line = record.line
    if current is not None:
        yield current
