"""Group parsed progress records into epochs, one progress bar each.

An epoch here is one run of the progress bar from its first step to its last, whatever the
``Epoch k/N`` header says: a loop of ``fit(..., epochs=1)`` calls prints ``Epoch 1/1`` every time
and each call is its own epoch. A new epoch starts at an ``Epoch`` header, when the counter goes
backwards, or after the bar reached its target.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from fitlens.explain.parse import CounterUnit, EpochHeader, Progress, Record


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


@dataclass
class Epoch:
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
    """

    index: int
    header: str | None = None
    target: int | None = None
    last_step: int = 0
    unit: CounterUnit = "unknown"
    style: str = "plain"
    series: dict[str, list[Shown]] = field(default_factory=dict)
    final: dict[str, Shown] = field(default_factory=dict)
    first_line: int = 0

    @property
    def complete(self) -> bool:
        """True when a line reached the target (the bar finished)."""
        return self.target is not None and self.last_step >= self.target

    def add(self, record: Progress) -> None:
        """Record one redraw; steps must not go backwards (the caller splits epochs there)."""
        self.target = record.target
        self.style = record.style
        if record.unit != "unknown":
            self.unit = record.unit
        if record.step > self.last_step:
            self.last_step = record.step
        for v in record.values:
            shown = Shown(record.step, v.value, v.half)
            points = self.series.get(v.name)
            if points is None:
                self.series[v.name] = [shown]
            elif points[-1].step == record.step:
                points[-1] = shown
            else:
                points.append(shown)
        if record.target is not None and record.step >= record.target:
            self.final = {v.name: Shown(record.step, v.value, v.half) for v in record.values}


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
        if current is not None and (
            record.step < current.last_step
            or (current.target is not None and record.target != current.target)
        ):
            yield current
            current = None
        if current is None:
            index += 1
            current = Epoch(index=index, header=header, first_line=record.line)
            header = None
        current.add(record)
    if current is not None:
        yield current
