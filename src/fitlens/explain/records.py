"""The records the parser emits: one progress redraw, a bulk run of redraws, an epoch header.

Plain data only; :mod:`fitlens.explain.parse` produces them and :mod:`fitlens.explain.epochs`
consumes them.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import numpy as np

CounterUnit = Literal["step", "sample", "unknown"]


class Value(NamedTuple):
    """One metric value as displayed.

    Attributes:
        name: Metric name as printed (``loss``, ``acc``, ``val_auc``, ...).
        value: The displayed number.
        half: Half a unit in the last displayed digit: the displayed value is the true one
            rounded, so the truth lies in ``[value - half, value + half]``.
    """

    name: str
    value: float
    half: float


class Progress(NamedTuple):
    """One progress-bar redraw.

    Attributes:
        step: The counter shown before the slash (steps, or samples in old ``fit`` logs).
        target: The counter after the slash; ``None`` for ``Unknown``.
        values: Metric values in display order; non-finite values are left out.
        unit: Counter unit when the line says (``ms/step``, ``us/sample``), else ``"unknown"``.
        style: ``"keras3"`` for the ``━`` bar, ``"bracket"`` for ``[===>..]``, ``"plain"`` for
            ``verbose=2`` lines without a bar, ``"summary"`` for a Keras 1/2 ``verbose=2`` line
            with no counter at all (read as step 1 of 1: one display of the epoch's means).
        line: 1-based line number in the input (counting ``\\n`` only).
    """

    step: int
    target: int | None
    values: tuple[Value, ...]
    unit: CounterUnit
    style: str
    line: int


class ProgressRun(NamedTuple):
    """Consecutive redraws from one terminal line that share a target and metric names.

    The fast path's record: same information as one :class:`Progress` per row, in arrays.

    Attributes:
        steps: Counters, non-decreasing, shape ``(n,)``.
        target: The shared target.
        names: Metric names, in display order.
        means: Displayed values, shape ``(n, len(names))``.
        half: Rounding half-width shared by every value (all in ``%.4f`` form).
        unit: As in :class:`Progress`.
        style: As in :class:`Progress`.
        line: As in :class:`Progress`.
    """

    steps: np.ndarray
    target: int
    names: tuple[str, ...]
    means: np.ndarray
    half: float
    unit: CounterUnit
    style: str
    line: int


class Plain:
    """Base of small record classes: ``repr`` and ``==`` from their ``_fields``.

    What ``@dataclass`` would generate, written once: a dataclass costs about 0.6 ms to create
    at import (it compiles its methods), which ``fitlens explain`` pays at every start.
    """

    __slots__ = ()
    #: The fields, in declaration order (a subclass's ``__slots__``).
    _fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields)

    __hash__: Any = None  # mutable and compared by value, as a dataclass: unhashable


class EpochHeader(Plain):
    """An ``Epoch k/N`` line. ``number`` is as printed; a loop of ``fit`` calls repeats 1/1.

    Immutable (assigning an attribute raises ``AttributeError``) and hashable.
    """

    _fields = ("number", "total", "line")
    __slots__ = _fields
    number: int
    total: int
    line: int

    def __init__(self, number: int, total: int, line: int) -> None:
        set_field = object.__setattr__
        set_field(self, "number", number)
        set_field(self, "total", total)
        set_field(self, "line", line)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"EpochHeader is immutable: cannot set {name!r}")

    def __hash__(self) -> int:
        return hash((self.number, self.total, self.line))


Record = Progress | ProgressRun | EpochHeader


class ParseStats(Plain):
    """Counts the parser keeps while it streams; read them after the records are consumed.

    Attributes:
        bytes_read: Input size in bytes.
        lines: Newline-separated lines seen.
        progress: Progress redraws parsed.
        other: Segments that were neither progress nor epoch headers (user prints, noise).
        rejected: Progress-looking segments dropped as garbled (counter beyond target, absurd).
        first_rejected_line: Line number of the first rejected segment, for messages.
    """

    _fields = ("bytes_read", "lines", "progress", "other", "rejected", "first_rejected_line")
    __slots__ = _fields

    def __init__(
        self,
        bytes_read: int = 0,
        lines: int = 0,
        progress: int = 0,
        other: int = 0,
        rejected: int = 0,
        first_rejected_line: int | None = None,
    ) -> None:
        self.bytes_read = bytes_read
        self.lines = lines
        self.progress = progress
        self.other = other
        self.rejected = rejected
        self.first_rejected_line = first_rejected_line
