"""Read many progress lines at once by the position of their digits (the parser's fast path).

Keras pads the counter to the target's width and prints every averaged value as ``%.4f``, so
within a bar (and usually across a whole log) every progress line is the same bytes with other
digits in the same places: ``  7/200 [=>....] - ETA: 3s - loss: 0.4299 - acc: 0.5220``. A
:class:`Layout` is taken from one line that the regexes have read; :meth:`Layout.read` then
checks every other line against it and reads its counter and values with a few NumPy passes,
whatever the number of lines. Lines that differ anywhere it looks are marked, and the parser
reads them with its regexes instead.

Exactness: a value ``d...d.dddd`` is the integer of its digits divided by 10**4. Both are exact
in float64 (at most 15 digits), so the quotient is the correctly rounded decimal: the same
double as ``float(text)``.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fitlens.explain.records import Plain

_ZERO = np.uint8(ord("0"))
_SPACE = np.uint8(ord(" "))
_POINT = np.uint8(ord("."))
_BACKSPACE = np.uint8(8)
#: Longest counter slot and value (in digits) read by position: integers below 10**15 are
#: exact in float64.
_MAX_DIGITS = 15
#: Most trailing spaces stripped from a piece read by position (Keras pads a redraw with one
#: per column it lost, a few at most); a piece with more takes the regex path.
_MAX_PAD = 64


def decimal_points(data: np.ndarray) -> np.ndarray:
    """Positions of every ``.`` in ``data`` (bytes as uint8) with a digit on each side.

    Every value the parser's regexes accept (``\\d+\\.\\d{4}``) holds one, so a line with no
    more of them than its layout's tail holds no value anywhere else (bars print ``.`` too, but
    never between digits).
    """
    points = data[1:-1] == _POINT
    if np.count_nonzero(points) * 8 < len(data):
        # Few points (a Keras 3 bar prints none): test the neighbours of each, not every byte.
        at = np.flatnonzero(points) + 1
        return at[((data[at - 1] - _ZERO) <= 9) & ((data[at + 1] - _ZERO) <= 9)]
    # A Keras 2 bar is a third points: one pass over every byte for the digits instead.
    digit = (data - _ZERO) <= 9
    points &= digit[:-2]
    points &= digit[2:]
    return np.flatnonzero(points) + 1


def unit_marks(data: np.ndarray) -> np.ndarray:
    """Positions of every ``s/s`` in ``data`` (uint8), where ``ms/step`` and ``us/sample``
    print the counter's unit."""
    if len(data) < 3:
        return np.zeros(0, dtype=np.intp)
    s, slash = ord("s"), ord("/")
    at = np.flatnonzero(data[1:-1] == slash)  # the slashes (a few per line), then neighbours
    return at[(data[at] == s) & (data[at + 2] == s)]


def name_marks(data: np.ndarray, name: bytes, colons: np.ndarray) -> np.ndarray:
    """Positions of the ``:`` of every ``" - name:"`` in ``data`` (uint8).

    Args:
        data: The text.
        name: A metric name as printed.
        colons: Positions of every ``:`` in ``data``, increasing.
    """
    pattern = b" - " + name
    at = colons[colons >= len(pattern)]
    # Byte by byte from the colon back: most colons drop out at the first bytes.
    for back, byte in enumerate(reversed(pattern), 1):
        at = at[data[at - back] == byte]
    return at


def per_range(marks: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """How many of ``marks`` (increasing positions) lie in each range ``[edges[2k],
    edges[2k + 1])``."""
    at = np.searchsorted(marks, edges)
    return at[1::2] - at[::2]


def _weights(widths: list[int]) -> np.ndarray:
    """Matrix turning consecutive groups of digit columns into the integers they spell."""
    out = np.zeros((sum(widths), len(widths)))
    col = 0
    for k, width in enumerate(widths):
        out[col : col + width, k] = 10.0 ** np.arange(width - 1, -1, -1)
        col += width
    return out


class Layout(Plain):
    """Where the counter and the values sit in a progress line, taken from one example.

    A line has the layout when its first ``head`` bytes equal the example's except in the
    counter's slot (right-aligned digits after spaces), its last ``len(tail)`` bytes equal the
    example's except in the value digits, the two do not overlap, and nothing between them holds
    a digit-point-digit.

    Attributes:
        names: Metric names in display order (bytes, as printed).
        target: The counter's target.
        head: The example's bytes up to the target and the byte after it, as uint8.
        slot: ``(start, end)`` of the counter's digits and padding within ``head``.
        tail: The example's bytes from its first ``" - name: "`` to its end, as uint8.
        head_fixed: Mask of ``head`` bytes that every line must repeat.
        tail_fixed: Mask of ``tail`` bytes that every line must repeat.
        digits: Columns of ``tail`` that hold value digits, value after value.
        weights: Turns those columns into one integer per value.
        negative: Per value, whether it is printed with a minus sign.
        points: Digit-point-digit sequences in ``tail``.
        units: ``s/s`` sequences in the line (the counter's unit, ``ms/step`` or
            ``us/sample``, which a bar's last line prints and the others do not).
    """

    _fields = (
        "names",
        "target",
        "head",
        "slot",
        "tail",
        "head_fixed",
        "tail_fixed",
        "digits",
        "weights",
        "negative",
        "points",
        "units",
    )
    __slots__ = _fields

    def __init__(
        self,
        names: tuple[bytes, ...],
        target: int,
        head: np.ndarray,
        slot: tuple[int, int],
        tail: np.ndarray,
        head_fixed: np.ndarray,
        tail_fixed: np.ndarray,
        digits: np.ndarray,
        weights: np.ndarray,
        negative: np.ndarray,
        points: int,
        units: int,
    ) -> None:
        self.names = names
        self.target = target
        self.head = head
        self.slot = slot
        self.tail = tail
        self.head_fixed = head_fixed
        self.tail_fixed = tail_fixed
        self.digits = digits
        self.weights = weights
        self.negative = negative
        self.points = points
        self.units = units

    @classmethod
    def of(
        cls, line: bytes, head: re.Match[bytes], metrics: list[re.Match[bytes]]
    ) -> Layout | None:
        """The layout of ``line``, or None when it cannot be read by position.

        Args:
            line: One progress line (or redraw), trailing spaces and backspaces included.
            head: The parser's counter regex matched on ``b"\\r" + line``.
            metrics: The parser's ``name: value`` regex matches in ``line``, in order.

        Returns:
            None unless the values are contiguous, end the line (up to trailing spaces then
            backspaces, which :meth:`read` ignores in every line),
            each name shows once, every value is a plain ``%.4f`` number of at most 15 digits,
            and the counter's slot is at most 15 bytes of spaces and digits.
        """
        if not metrics or any(a.end() != b.start() for a, b in itertools.pairwise(metrics)):
            return None
        end = _content_end(line)
        if metrics[-1].end() != end:
            return None
        names = tuple(m.group(1) for m in metrics)
        if len(set(names)) != len(names):
            return None
        step_end = head.end(1) - 1  # ``head`` was matched with a leading "\r"
        slot_start = len(line[: head.start(1) - 1].rstrip(b" "))
        # up to the target, plus the byte after it and the next: "[" for a bar, "-" without one
        # (the record's style)
        head_len = head.end() + 1
        tail_start = metrics[0].start()
        if not 0 < step_end - slot_start <= _MAX_DIGITS or head_len > tail_start:
            return None
        tail = line[tail_start:end]
        tail_fixed = np.ones(len(tail), dtype=bool)
        columns: list[int] = []
        widths: list[int] = []
        negative = []
        for m in metrics:
            text = m.group(2)
            if not re.fullmatch(rb"-?\d+\.\d{4}", text):
                return None
            sign = text.startswith(b"-")
            start, end = m.start(2) - tail_start + sign, m.end(2) - tail_start
            digits = [i for i in range(start, end) if tail[i] != ord(".")]
            if len(digits) > _MAX_DIGITS:
                return None
            tail_fixed[digits] = False
            columns.extend(digits)
            widths.append(len(digits))
            negative.append(sign)
        head_fixed = np.ones(head_len, dtype=bool)
        head_fixed[slot_start:step_end] = False
        tail_bytes = np.frombuffer(tail, dtype=np.uint8)
        return cls(
            names,
            int(head.group(2)),
            np.frombuffer(line[:head_len], dtype=np.uint8),
            (slot_start, step_end),
            tail_bytes,
            head_fixed,
            tail_fixed,
            np.array(columns, dtype=np.intp),
            _weights(widths),
            np.array(negative, dtype=bool),
            len(decimal_points(tail_bytes)),
            len(unit_marks(np.frombuffer(line, dtype=np.uint8))),
        )

    def read(
        self,
        data: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        points: np.ndarray | None,
        units: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Check and read lines ``data[starts[i]:ends[i]]``.

        Args:
            data: The text as uint8.
            starts: Where each line starts, shape ``(n,)``.
            ends: Where each ends (exclusive), shape ``(n,)``.
            points: :func:`decimal_points` of ``data``, or None when the caller checks them
                (each line holds at least the tail's: :func:`per_range` can check whole runs).
            units: :func:`unit_marks` of ``data``, or None when the caller checks them.

        Returns:
            ``(ok, steps, means)``: whether each line has the layout, its counter (int64) and
            its values (float64, shape ``(n, len(names))``); rows that are not ok hold garbage.
        """
        head_len, tail_len = len(self.head), len(self.tail)
        ends = _content_ends(data, starts, ends)
        ok = ends - starts >= head_len + tail_len
        if len(data) < max(head_len, tail_len):
            return np.zeros(len(starts), dtype=bool), starts, np.zeros((len(starts), 0))
        # Rows that are too short read from the start of the text instead (and stay not ok).
        # Whole rows of a sliding view: one copy per line, no index array per byte.
        head = sliding_window_view(data, head_len)[np.where(ok, starts, 0)]
        tail = sliding_window_view(data, tail_len)[np.where(ok, ends - tail_len, 0)]
        # Only the fixed columns, compared with != and any (numpy's fastest row test).
        fixed = np.flatnonzero(self.head_fixed)
        ok &= ~(head[:, fixed] != self.head[fixed]).any(axis=1)
        fixed = np.flatnonzero(self.tail_fixed)
        ok &= ~(tail[:, fixed] != self.tail[fixed]).any(axis=1)
        steps, counter_ok = _counters(head[:, self.slot[0] : self.slot[1]])
        ok &= counter_ok
        values = tail[:, self.digits] - _ZERO
        ok &= (values <= 9).all(axis=1)
        # Integers below 2**53: every product and partial sum is exact, in any order.
        means = values.astype(np.float64) @ self.weights / 1e4
        if self.negative.any():
            means[:, self.negative] = -means[:, self.negative]
        if points is not None:  # padding holds no decimals: the content's ends will do
            inside = np.searchsorted(points, ends) - np.searchsorted(points, starts)
            ok &= inside == self.points
        if units is not None:
            ok &= np.searchsorted(units, ends - 2) - np.searchsorted(units, starts) == self.units
        return ok, steps, means


def _content_end(line: bytes) -> int:
    """Where a piece's text ends: before its trailing backspaces, then before the spaces
    that come before them."""
    return len(line.rstrip(b"\x08").rstrip(b" "))


def _content_ends(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """:func:`_content_end` of every piece ``data[starts[i]:ends[i]]`` (uint8).

    Keras 3 ends each redraw with as many backspaces as the previous one was wide, and pads
    a redraw narrower than the previous one with spaces: both change with the width of the
    elapsed time or ETA (``9s``, ``10s``, ``1:02``), so the layout's tail is matched against the
    text before them. A piece made only of padding gets its start.
    """
    ends = ends.copy()
    last = ends - 1
    erased = (last >= starts) & (data[np.maximum(last, 0)] == _BACKSPACE)
    if erased.any():
        # Each backspace run that ends a piece starts where the bytes turn into backspaces:
        # a few such places per piece, found in two passes over the text.
        back = data == _BACKSPACE
        turns = np.flatnonzero(back[1:] & ~back[:-1]) + 1
        if back[0]:
            turns = np.concatenate(([0], turns))
        at = np.flatnonzero(erased)
        run_start = turns[np.searchsorted(turns, last[at], side="right") - 1]
        ends[at] = np.maximum(run_start, starts[at])
    # Spaces: one per column the redraw lost (a few at most), one vector pass each.
    # Past _MAX_PAD, a piece still ends with a space and fails the tail's last digit.
    at = np.flatnonzero((ends > starts) & (data[np.maximum(ends - 1, 0)] == _SPACE))
    for _ in range(_MAX_PAD):
        if not len(at):
            break
        ends[at] -= 1
        at = at[(ends[at] > starts[at]) & (data[np.maximum(ends[at] - 1, 0)] == _SPACE)]
    return ends


def _counters(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read right-aligned counters: ``raw`` holds one counter slot per row (uint8).

    Returns:
        ``(steps, ok)``: the integers (int64) and whether each slot is spaces then digits, with
        at least one digit; rows that are not ok hold garbage.
    """
    n, width = raw.shape
    steps = np.zeros(n, dtype=np.int64)
    ok = np.ones(n, dtype=bool)
    seen = np.zeros(n, dtype=bool)  # a digit came before: no space may follow
    digit = seen
    for j in range(width):  # a few columns: one vector pass each
        column = raw[:, j]
        value = column - _ZERO
        digit = value <= 9
        ok &= digit | ((column == _SPACE) & ~seen)
        seen |= digit
        steps *= 10
        steps += np.where(digit, value, 0)
    ok &= digit
    return steps, ok
