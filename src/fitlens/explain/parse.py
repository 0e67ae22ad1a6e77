"""Streaming parser for Keras progress output: bytes in, records out; it never prints.

Handles what Keras writes in every version we know of:

* Keras 1.x/2.x standalone: ``  1/406 [.....] - ETA: 11726s - loss: 0.7993 - acc: 0.5996``;
* tf.keras 2.x: ``406/406 [=====] - 12s 30ms/step - loss: 0.3539 - accuracy: 0.8918``;
* Keras 3: ``406/406 ━━━━━━━━ 12s 30ms/step - accuracy: 0.8918 - loss: 0.3539``;
* ``verbose=2`` (one line per epoch): ``406/406 - 12s - 30ms/step - loss: 0.3539``.

Terminal captures mix in ``\\b`` runs, ``\\r`` redraws and ANSI colour codes; Keras 3 writes them
even into files on Linux (its ``Progbar`` treats ``"posix" in sys.modules`` as a dynamic
display). Every ``\\r``/``\\b``-separated segment is one redraw, parsed on its own.

Only values printed in Keras's ``%.4f``/``%.4e`` forms (exactly four decimals) are kept: the
progress bar prints nothing else for averaged metrics, and a value with fewer digits is almost
always a line trimmed by a paste, whose rounding bound would be a lie.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Literal, NamedTuple

CounterUnit = Literal["step", "sample", "unknown"]

#: Longest segment we try to parse (bytes). Keras lines are far shorter; a cap keeps the time per
#: line bounded on garbage such as a binary file with no newlines.
MAX_SEGMENT = 16_384
#: Largest step/sample counter accepted; beyond this a number is garbage, not a log.
MAX_COUNTER = 10**12
#: Largest metric magnitude kept; larger values are garbage or overflow, and would make
#: ``weight * value`` products lose all precision.
MAX_VALUE = 1e30

_ANSI = re.compile(rb"\x1b\[[0-9;?]{0,32}[A-Za-z]")
# Regexes are anchored and free of nested quantifiers, so each runs in time linear in the segment.
_HEAD = re.compile(rb"[ \t]{0,64}(\d{1,15})/(\d{1,15}|Unknown)(?![\d/])")
_EPOCH = re.compile(rb"[ \t]{0,64}Epoch (\d{1,12})/(\d{1,12})[ \t]{0,64}$")
_METRIC = re.compile(
    rb" - ([A-Za-z_][A-Za-z0-9_.\-/]{0,127}): ?"
    rb"(-?(?:\d{1,40}\.\d{4}(?:e[+-]\d{2,3})?|nan|inf))(?=[ \t]|$)"
)
_UNIT = re.compile(rb"\d(?:s|ms|us)/(step|sample)")


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
            ``verbose=2`` lines without a bar.
        line: 1-based line number in the input (counting ``\\n`` only).
    """

    step: int
    target: int | None
    values: tuple[Value, ...]
    unit: CounterUnit
    style: str
    line: int


@dataclass(frozen=True)
class EpochHeader:
    """An ``Epoch k/N`` line. ``number`` is as printed; a loop of ``fit`` calls repeats 1/1."""

    number: int
    total: int
    line: int


Record = Progress | EpochHeader


@dataclass
class ParseStats:
    """Counts the parser keeps while it streams; read them after the records are consumed.

    Attributes:
        bytes_read: Input size in bytes.
        lines: Newline-separated lines seen.
        progress: Progress redraws parsed.
        other: Segments that were neither progress nor epoch headers (user prints, noise).
        rejected: Progress-looking segments dropped as garbled (counter beyond target, absurd).
        binary: True when the input looks like a binary file (NUL bytes).
        first_rejected_line: Line number of the first rejected segment, for messages.
    """

    bytes_read: int = 0
    lines: int = 0
    progress: int = 0
    other: int = 0
    rejected: int = 0
    binary: bool = False
    first_rejected_line: int | None = None
    notes: list[str] = field(default_factory=list)


_HALF_FIXED = 0.5e-4


def _half(text: bytes) -> float:
    """Half a unit in the last place of a ``%.4f`` or ``%.4e`` string."""
    e = text.find(b"e")
    if e < 0:
        return _HALF_FIXED
    return _HALF_FIXED * 10.0 ** int(text[e + 1 :])


def parse_values(segment: bytes) -> tuple[Value, ...]:
    """Extract the ``name: value`` pairs of one progress segment.

    Args:
        segment: One redraw, ANSI codes already removed.

    Returns:
        The finite values in display order (``nan``/``inf`` dropped: they bound nothing).

    Example:
        >>> parse_values(b"3/9 [==>...] - ETA: 1s - loss: 0.7993 - acc: 5.0000e-04")[1].half
        5e-09
    """
    out = []
    for name, text in _METRIC.findall(segment):
        if text[-1:] in (b"n", b"f"):  # nan, inf
            continue
        value = float(text)
        if not abs(value) <= MAX_VALUE:  # also drops nan
            continue
        out.append(Value(name.decode("ascii"), value, _half(text)))
    return tuple(out)


class _Parser:
    """Turns segments into records, joining a wrapped progress line with its continuation."""

    def __init__(self, stats: ParseStats) -> None:
        self.stats = stats
        self.pending: tuple[Progress, bytes] | None = None

    def segment(self, seg: bytes, line: int) -> Iterator[Record]:
        seg = seg.strip(b" \t\x00")
        if not seg:
            return
        if len(seg) > MAX_SEGMENT:
            self._reject(line)
            return
        head = _HEAD.match(seg)
        if head is None:
            yield from self._non_progress(seg, line)
            return
        record = self._progress(seg, head, line)
        if record is None:
            return
        yield from self.flush()
        self.pending = (record, seg)

    def flush(self) -> Iterator[Record]:
        if self.pending is not None:
            self.stats.progress += 1
            yield self.pending[0]
            self.pending = None

    def _non_progress(self, seg: bytes, line: int) -> Iterator[Record]:
        if self.pending is not None:
            # A paste wrapped at the terminal width: rejoin the pieces, but only when that reveals
            # more values (a user's own print after a progress line would instead corrupt it).
            prev, prev_seg = self.pending
            joined = prev_seg + seg
            values = parse_values(joined)
            if len(values) > len(prev.values) and len(joined) <= MAX_SEGMENT:
                self.pending = (_replace_values(prev, values), joined)
                return
        epoch = _EPOCH.match(seg)
        yield from self.flush()
        if epoch is not None:
            yield EpochHeader(int(epoch.group(1)), int(epoch.group(2)), line)
        else:
            self.stats.other += 1

    def _progress(self, seg: bytes, head: re.Match[bytes], line: int) -> Progress | None:
        step = int(head.group(1))
        target_text = head.group(2)
        target = None if target_text == b"Unknown" else int(target_text)
        if step > MAX_COUNTER or (target is not None and (target > MAX_COUNTER or step > target)):
            self._reject(line)
            return None
        rest = seg[head.end() : head.end() + 8]
        if "━".encode() in rest:
            style: Literal["keras3", "bracket", "plain"] = "keras3"
        elif b"[" in rest:
            style = "bracket"
        else:
            style = "plain"
        unit_match = _UNIT.search(seg)
        unit: CounterUnit = "unknown"
        if unit_match is not None:
            unit = "step" if unit_match.group(1) == b"step" else "sample"
        return Progress(step, target, parse_values(seg), unit, style, line)

    def _reject(self, line: int) -> None:
        self.stats.rejected += 1
        if self.stats.first_rejected_line is None:
            self.stats.first_rejected_line = line


def _replace_values(record: Progress, values: tuple[Value, ...]) -> Progress:
    return Progress(record.step, record.target, values, record.unit, record.style, record.line)


def iter_records(chunks: Iterable[bytes], stats: ParseStats | None = None) -> Iterator[Record]:
    """Parse a Keras log given as a stream of byte chunks.

    Memory stays bounded by the chunk size plus one line: chunks are split at the last line
    break and the tail carried over.

    Args:
        chunks: The raw bytes, in any chunking (a file read in 1 MiB blocks, a test string).
        stats: Filled in as the stream is consumed; pass one to read counts afterwards.

    Yields:
        :class:`Progress` and :class:`EpochHeader` records in input order.
    """
    stats = stats if stats is not None else ParseStats()
    parser = _Parser(stats)
    carry = b""
    line = 1
    for chunk in chunks:
        stats.bytes_read += len(chunk)
        if not stats.binary and b"\x00" in chunk:
            stats.binary = True
        data = carry + chunk
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"), data.rfind(b"\x08"))
        if cut < 0:
            # No break at all: keep accumulating, but never beyond one overlong segment.
            carry = data if len(data) <= MAX_SEGMENT else data[-MAX_SEGMENT:]
            continue
        carry = data[cut + 1 :]
        yield from _parse_block(parser, data[: cut + 1], line)
        line += data.count(b"\n", 0, cut + 1)
    if carry:
        yield from _parse_block(parser, carry, line)
    yield from parser.flush()
    stats.lines = line


def _parse_block(parser: _Parser, block: bytes, first_line: int) -> Iterator[Record]:
    if b"\x1b" in block:
        block = _ANSI.sub(b"", block)
    block = block.replace(b"\x08", b"\r")
    line = first_line
    for text in block.split(b"\n"):
        if b"\r" in text:
            for seg in text.split(b"\r"):
                if seg:
                    yield from parser.segment(seg, line)
        elif text:
            yield from parser.segment(text, line)
        line += 1


def read_chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    """Yield ``size``-byte chunks from a binary stream until it is exhausted."""
    while True:
        chunk = stream.read(size)
        if not chunk:
            return
        yield chunk
