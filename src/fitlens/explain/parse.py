"""Streaming parser for Keras progress output: bytes in, records out; it never prints.

Handles what Keras writes in every version we know of:

* Keras 1.x/2.x standalone: ``  1/406 [.....] - ETA: 11726s - loss: 0.7993 - acc: 0.5996``;
* tf.keras 2.x: ``406/406 [=====] - 12s 30ms/step - loss: 0.3539 - accuracy: 0.8918``;
* Keras 3: ``406/406 ━━━━━━━━ 12s 30ms/step - accuracy: 0.8918 - loss: 0.3539``;
* ``verbose=2`` (one line per epoch): ``406/406 - 12s - 30ms/step - loss: 0.3539`` (tf.keras,
  Keras 3), `` - 120s - loss: 0.3539 - acc: 0.8918`` (Keras 2.x) or ``120s - loss: 0.3539``
  (Keras 1.x): the last two have no counter and are read only right after an ``Epoch k/N``
  header (``style="summary"``), so a user's own Keras-like print is never taken for one.

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
from typing import BinaryIO

import numpy as np

from fitlens.explain.records import (
    CounterUnit,
    EpochHeader,
    ParseStats,
    Progress,
    ProgressRun,
    Record,
    Value,
)

__all__ = [
    "EpochHeader",
    "ParseStats",
    "Progress",
    "ProgressRun",
    "Record",
    "Value",
    "iter_records",
    "parse_values",
    "read_chunks",
]

#: Longest segment we try to parse (bytes). Keras lines are far shorter; a cap keeps the time per
#: line bounded on garbage such as a binary file with no newlines.
MAX_SEGMENT = 16_384
#: Largest step/sample counter accepted; beyond this a number is garbage, not a log.
MAX_COUNTER = 10**12
#: Largest metric magnitude kept; larger values are garbage or overflow, and would make
#: ``weight * value`` products lose all precision.
MAX_VALUE = 1e30

_ANSI = re.compile(rb"\x1b\[[0-9;?]{0,32}[A-Za-z]")
# A run of backspaces erases the previous redraw, like a carriage return.
_BACKSPACES = re.compile(rb"\x08+")
_BAR3 = "━".encode()
# First bytes of a line that may start with a counter (Keras pads it with spaces).
_COUNTER_START = frozenset(b" \t0123456789")
# A line that cannot start with a counter, or a blank one: the breaks between runs of progress
# lines in text without carriage returns.
_BREAK = re.compile(rb"\n(?:[^ \t0-9\n][^\n]*)?(?=\n)")
# Regexes are anchored and free of nested quantifiers, so each runs in time linear in the segment.
_HEAD = re.compile(rb"[ \t]{0,64}(\d{1,15})/(\d{1,15}|Unknown)(?![\d/])[ \t]?(\[|\xe2\x94\x81)?")
_EPOCH = re.compile(rb"[ \t]{0,64}Epoch (\d{1,12})/(\d{1,12})[ \t]{0,64}$")
# Keras 1.x/2.x ``verbose=2`` epoch line: elapsed seconds (optionally a time per step or sample),
# then the metrics; no counter.
_SUMMARY = re.compile(rb"[ \t]{0,8}(?:- )?\d{1,12}s(?: \d{1,12}[mu]?s/(?:step|sample))?(?= - )")
_METRIC = re.compile(
    rb" - ([A-Za-z_][A-Za-z0-9_.\-/]{0,127}): ?"
    rb"(-?(?:\d{1,40}\.\d{4}(?:e[+-]\d{2,3})?|nan|inf))(?=[ \t\x08]|$)"
)
# The redraw fast path reads a whole line of redraws with two regex passes: counters at piece
# starts, and values alone (names are checked by counting). Same rules as _HEAD and _METRIC.
_RUN_HEAD = re.compile(rb"\r(?:\x1b\[[0-9;]{0,8}m)?[ \t]{0,64}(\d{1,15})/(\d{1,15})(?![\d/])")
_RUN_VALUE = re.compile(
    rb" - [A-Za-z_][A-Za-z0-9_.\-/]{0,127}: ?"
    rb"(-?(?:\d{1,40}\.\d{4}(?:e[+-]\d{2,3})?|nan|inf))(?=[ \t\r\x08]|$)"
)


_HALF_FIXED = 0.5e-4


def _half(text: bytes) -> float:
    """Half a unit in the last place of a ``%.4f`` or ``%.4e`` string."""
    e = text.find(b"e")
    if e < 0:
        return _HALF_FIXED
    return _HALF_FIXED * 10.0 ** int(text[e + 1 :])


_NAMES: dict[bytes, str] = {}


def parse_values(segment: bytes, pos: int = 0) -> tuple[Value, ...]:
    """Extract the ``name: value`` pairs of one progress segment.

    Args:
        segment: One redraw, ANSI codes already removed.
        pos: Where to start looking (after the counter).

    Returns:
        The finite values in display order (``nan``/``inf`` and magnitudes beyond
        ``MAX_VALUE`` dropped: they bound nothing).

    Example:
        >>> parse_values(b"3/9 [==>...] - ETA: 1s - loss: 0.7993 - acc: 5.0000e-04")[1].half
        5e-09
    """
    out = []
    names = _NAMES
    for name, text in _METRIC.findall(segment, pos):
        value = float(text)
        if not abs(value) <= MAX_VALUE:  # also drops nan
            continue
        label = names.get(name)
        if label is None:
            label = names.setdefault(name, name.decode("ascii"))
        out.append(Value(label, value, _HALF_FIXED if b"e" not in text else _half(text)))
    return tuple(out)


class _Parser:
    """Turns segments into records, joining a wrapped progress line with its continuation.

    Records are appended to ``out``, which the caller drains after each block; each progress
    record is held back one segment (``pending``) in case the next segment continues it.
    """

    def __init__(self, stats: ParseStats) -> None:
        self.stats = stats
        self.out: list[Record] = []
        self.pending: Progress | None = None
        self.pending_seg = b""
        # True between an ``Epoch k/N`` header and the next progress record: the only place a
        # counter-less Keras 1/2 ``verbose=2`` line is read as one.
        self.after_header = False

    def block(self, block: bytes, line: int) -> None:
        """Parse a block of whole lines starting at input line ``line``."""
        # ANSI colours and backspace runs are left in place here: the redraw fast path reads
        # around them, and segment() removes them from any piece it parses.
        if b"\r" not in block:
            self._plain_block(block, line)
            return
        group: list[bytes] = []  # consecutive plain lines that may be progress lines
        for text in block.split(b"\n"):
            if text and text[0] in _COUNTER_START and b"\r" not in text:
                group.append(text)
            else:
                if group:
                    self.lines(b"\n".join(group), line - len(group))
                    group = []
                if b"\r" in text:
                    self.redraws(text, line)
                elif text:
                    self.segment(text, line)
            line += 1
        if group:
            self.lines(b"\n".join(group), line - len(group))

    def _plain_block(self, block: bytes, line: int) -> None:
        """:meth:`block` for text without ``\\r`` (pipes, files, one line per step).

        The lines that cannot start a progress record (headers, the user's prints, blank lines)
        are found by one regex pass; the runs of lines between them go to :meth:`lines` whole.
        """
        data = b"\n" + block  # every line now follows a line break, which _BREAK starts with
        pos = 1
        for match in _BREAK.finditer(data):
            start = match.start()
            if start > pos:
                self.lines(data[pos:start], line)
                line += data.count(b"\n", pos, start) + 1
            if match.end() > start + 1:
                self.segment(data[start + 1 : match.end()], line)
            pos = match.end() + 1
            line += 1
        # The last run of progress lines: no break line follows it, only the block's own end.
        tail = data[pos:-1] if data.endswith(b"\n") else data[pos:]
        if tail:
            self.lines(tail, line)

    def lines(self, group: bytes, line: int) -> None:
        """Parse consecutive one-redraw-per-line progress lines (pipes, files, ``verbose=2``).

        Same as :meth:`segment` on each line; runs of them take the bulk path like
        :meth:`redraws` does.
        """
        cut = group.rfind(b"\n")
        if group.count(b"\n", 0, cut) > 0:
            end = group.find(b"\n")
            head = group[:end]
            style = "keras3" if _BAR3 in head else ""
            unit: CounterUnit = "unknown"
            if b"s/step" in head:
                unit = "step"
            elif b"s/sample" in head:
                unit = "sample"
            run = _fast_run(group[:cut].replace(b"\n", b"\r"), unit, style, line)
            if run is not None:
                self.flush()
                self.after_header = False
                self.out.append(run)
                self.stats.progress += len(run.steps)
                self.segment(group[cut + 1 :], line + len(run.steps))
                return
        for offset, text in enumerate(group.split(b"\n")):
            self.segment(text, line + offset)

    def redraws(self, text: bytes, line: int) -> None:
        """Parse one line holding many ``\\r`` redraws.

        A terminal capture is almost all such lines, so this is the hot loop of the command.
        When every piece but the last is a progress redraw with the same target and metric
        names (what Keras writes), they become one :class:`ProgressRun` parsed by two regex
        passes and a NumPy conversion; otherwise, and always for the last piece (the epoch's
        final line, with its ``val_*`` values), each piece takes the general path.
        """
        # The bar, when there is one, is within the first redraws: no need to scan the line.
        style = "keras3" if text.find(_BAR3, 0, 4096) >= 0 else ""
        # A chunk boundary can leave the tail of a backspace run at the start of a line.
        text = text.lstrip(b"\x08").strip(b"\r")
        cut = text.rfind(b"\r")
        if cut > 0:
            body = text[:cut]
            # Units, when in-progress redraws print them at all (Keras 3), are in every one.
            cut_first = body.find(b"\r")
            first = body if cut_first < 0 else body[:cut_first]
            unit: CounterUnit = "unknown"
            if b"s/step" in first:
                unit = "step"
            elif b"s/sample" in first:
                unit = "sample"
            run = _fast_run(body, unit, style, line)
            if run is not None:
                self.flush()
                self.after_header = False
                self.out.append(run)
                self.stats.progress += len(run.steps)
            else:
                for seg in body.split(b"\r"):
                    if seg:
                        self.segment(seg, line, style)
        last = text[cut + 1 :]
        if last:
            self.segment(last, line, style)

    def segment(self, seg: bytes, line: int, style: str = "") -> None:
        """Parse one redraw (one ``\\r``/``\\n``-free piece of text).

        ``style`` overrides the bar style read from the text (the redraw path strips the bar).
        """
        if b"\x1b" in seg:
            seg = _ANSI.sub(b"", seg)
        if b"\x08" in seg:
            seg = seg.rstrip(b"\x08")
            if b"\x08" in seg:
                for part in _BACKSPACES.split(seg):
                    if part:
                        self.segment(part, line, style)
                return
        if len(seg) > MAX_SEGMENT:
            self._reject(line)
            return
        match = _HEAD.match(seg)
        if match is None:
            self._non_progress(seg, line)
            return
        unit = "unknown"
        if b"s/step" in seg:
            unit = "step"
        elif b"s/sample" in seg:
            unit = "sample"
        step, target, bar = match.groups()
        record = self._record(
            (step, target, bar or b""), parse_values(seg, match.end()), unit, line
        )
        if record is not None:
            self._hold(record, seg)

    def _record(
        self,
        head: tuple[bytes, bytes, bytes],
        values: tuple[Value, ...],
        unit: str,
        line: int,
        style: str = "",
    ) -> Progress | None:
        step_text, target_text, bar = head
        step = int(step_text)
        target = None if target_text == b"Unknown" else int(target_text)
        if not 0 < step <= MAX_COUNTER or (
            target is not None and (target > MAX_COUNTER or step > target)
        ):
            self._reject(line)
            return None
        if not style:
            style = "plain" if not bar else ("bracket" if bar == b"[" else "keras3")
        return Progress(step, target, values, unit, style, line)  # type: ignore[arg-type]

    def _hold(self, record: Progress, seg: bytes) -> None:
        self.after_header = False
        if self.pending is not None:
            self.stats.progress += 1
            self.out.append(self.pending)
        self.pending = record
        self.pending_seg = seg

    def flush(self) -> None:
        """Emit the held-back record."""
        if self.pending is not None:
            self.stats.progress += 1
            self.out.append(self.pending)
            self.pending = None

    def _non_progress(self, seg: bytes, line: int) -> None:
        seg = seg.strip(b" \t\x00")
        if not seg:
            return
        prev = self.pending
        if prev is not None and self._continues(prev, seg):
            return
        self.flush()
        epoch = _EPOCH.match(seg)
        if epoch is not None:
            self.out.append(EpochHeader(int(epoch.group(1)), int(epoch.group(2)), line))
            self.after_header = True
            return
        if self.after_header:
            summary = _SUMMARY.match(seg)
            if summary is not None:
                values = parse_values(seg, summary.end())
                if values:
                    unit: CounterUnit = "unknown"
                    if b"s/step" in seg:
                        unit = "step"
                    elif b"s/sample" in seg:
                        unit = "sample"
                    self._hold(Progress(1, 1, values, unit, "summary", line), seg)
                    return
        self.stats.other += 1

    def _continues(self, prev: Progress, seg: bytes) -> bool:
        """Rejoin a progress line wrapped at the terminal width with its continuation ``seg``.

        Only a true wrap is rejoined: a value must straddle the cut, the pieces must keep every
        value already read, and no name may repeat. A user's own print after a progress line
        (``holdout - loss: 0.2000``) fails these tests and stays a line of its own.
        """
        head = self.pending_seg
        joined = head + seg
        if len(joined) > MAX_SEGMENT:
            return False
        cut = len(head)
        if not any(m.start() < cut < m.end() for m in _METRIC.finditer(joined)):
            return False
        values = parse_values(joined)
        names = [v.name for v in values]
        kept = len(prev.values)
        if len(set(names)) != len(names) or len(values) < kept:
            return False
        # The head's last value may itself have been cut (``5.0000`` of ``5.0000e-04``).
        if kept and (
            values[: kept - 1] != prev.values[: kept - 1] or names[kept - 1] != prev.values[-1].name
        ):
            return False
        self.pending = prev._replace(values=values)
        self.pending_seg = joined
        return True

    def _reject(self, line: int) -> None:
        self.stats.rejected += 1
        if self.stats.first_rejected_line is None:
            self.stats.first_rejected_line = line


def _fast_run(body: bytes, unit: CounterUnit, style: str, line: int) -> ProgressRun | None:
    """Parse ``\\r``-separated redraws in bulk, or return None to take the general path.

    Bulk parsing applies only when it gives what the general path would: every piece starts
    with a counter, all targets agree, counters never go backwards, every piece shows the same
    names (each once) and every value is in ``%.4f`` form.
    """
    n = body.count(b"\r") + 1  # an empty piece has no counter, so heads would not match n
    heads = _RUN_HEAD.findall(b"\r" + body)
    if len(heads) != n:
        return None
    target_text = heads[0][1]
    if len({t for _, t in heads}) != 1:
        return None
    cut = body.find(b"\r")
    first = body if cut < 0 else body[:cut]
    pairs = _METRIC.findall(first)
    values = _RUN_VALUE.findall(body)
    joined = b"".join(values)
    if len(values) != n * len(pairs) or b"e" in joined or b"n" in joined:
        return None
    for name, _ in pairs:
        if body.count(b" - " + name + b":") != n:
            return None
    # map() over Python's own parsers beats NumPy's bytes-to-number casts here.
    steps = np.array(list(map(int, [s for s, _ in heads])), dtype=np.int64)
    target = int(target_text)
    if target > MAX_COUNTER or int(steps[-1]) > target or int(steps[0]) < 1:
        return None
    if bool((np.diff(steps) < 0).any()):
        return None
    means = np.array(list(map(float, values)), dtype=np.float64).reshape(n, len(pairs))
    if not bool((np.abs(means) <= MAX_VALUE).all()):
        return None
    names = tuple(_label(name) for name, _ in pairs)
    if not style:
        bar = _HEAD.match(_ANSI.sub(b"", first.lstrip(b"\x08")))
        style = "plain" if bar is None or not bar.group(3) else "bracket"
    return ProgressRun(steps, target, names, means, _HALF_FIXED, unit, style, line)


def _label(name: bytes) -> str:
    label = _NAMES.get(name)
    if label is None:
        label = _NAMES.setdefault(name, name.decode("ascii"))
    return label


def iter_records(chunks: Iterable[bytes], stats: ParseStats | None = None) -> Iterator[Record]:
    """Parse a Keras log given as a stream of byte chunks.

    Memory stays bounded by the chunk size plus one line: chunks are split at the last line
    break and the tail carried over.

    Args:
        chunks: The raw bytes, in any chunking (a file read in 1 MiB blocks, a test string).
        stats: Filled in as the stream is consumed; pass one to read counts afterwards.

    Yields:
        :class:`Progress`, :class:`ProgressRun` and :class:`EpochHeader` records in input order.
    """
    stats = stats if stats is not None else ParseStats()
    parser = _Parser(stats)
    carry = b""
    line = 1
    for chunk in chunks:
        stats.bytes_read += len(chunk)
        data = carry + chunk
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"), data.rfind(b"\x08"))
        if cut < 0:
            # No break at all: keep accumulating, but never beyond one overlong segment.
            if len(data) > MAX_SEGMENT:
                parser._reject(line)
                data = data[-MAX_SEGMENT:]
            carry = data
            continue
        carry = data[cut + 1 :]
        parser.block(data[: cut + 1], line)
        line += data.count(b"\n", 0, cut + 1)
        yield from parser.out
        parser.out.clear()
    if carry:
        parser.block(carry, line)
    parser.flush()
    yield from parser.out
    stats.lines = line


def read_chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    """Yield ``size``-byte chunks from a binary stream until it is exhausted."""
    while True:
        chunk = stream.read(size)
        if not chunk:
            return
        yield chunk
