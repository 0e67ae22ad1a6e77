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
from functools import cache
from typing import BinaryIO

import numpy as np

from fitlens.explain.layout import Layout, decimal_points, name_marks, per_range, unit_marks
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


# Regexes that most logs never need are compiled on first use (each compile costs 0.05-0.3 ms
# at every start of the command).
@cache
def _ansi() -> re.Pattern[bytes]:
    """ANSI escape sequences (colours, cursor moves)."""
    return re.compile(rb"\x1b\[[0-9;?]{0,32}[A-Za-z]")


@cache
def _backspaces() -> re.Pattern[bytes]:
    """A run of backspaces, which erases the previous redraw like a carriage return."""
    return re.compile(rb"\x08+")


_BAR3 = "━".encode()
# First bytes of a line that may start with a counter (Keras pads it with spaces).
_COUNTER_START = frozenset(b" \t0123456789")
# By first byte: a line that cannot start with a counter, or a blank one (its first byte is
# the next line break). Such lines are the breaks between runs of progress lines in text
# without carriage returns.
_BREAKS_RUN = np.ones(256, dtype=bool)
_BREAKS_RUN[list(_COUNTER_START)] = False
# Regexes are anchored and free of nested quantifiers, so each runs in time linear in the segment.
_HEAD = re.compile(rb"[ \t]{0,64}(\d{1,15})/(\d{1,15}|Unknown)(?![\d/])[ \t]?(\[|\xe2\x94\x81)?")
_EPOCH = re.compile(rb"[ \t]{0,64}Epoch (\d{1,12})/(\d{1,12})[ \t]{0,64}$")


@cache
def _summary() -> re.Pattern[bytes]:
    """The start of a Keras 1.x/2.x ``verbose=2`` epoch line: elapsed seconds (optionally a
    time per step or sample), up to the `` - `` before the metrics; no counter."""
    return re.compile(rb"[ \t]{0,8}(?:- )?\d{1,12}s(?: \d{1,12}[mu]?s/(?:step|sample))?(?= - )")


_METRIC = re.compile(
    rb" - ([A-Za-z_][A-Za-z0-9_.\-/]{0,127}): ?"
    rb"(-?(?:\d{1,40}\.\d{4}(?:e[+-]\d{2,3})?|nan|inf))(?=[ \t\x08]|$)"
)
# The redraw fast path reads a whole line of redraws with two regex passes: counters at piece
# starts, and values alone (names are checked by counting). Same rules as _HEAD and _METRIC.
_RUN_HEAD = re.compile(rb"\r(?:\x1b\[[0-9;]{0,8}m)?[ \t]{0,64}(\d{1,15})/(\d{1,15})(?![\d/])")


@cache
def _run_value() -> re.Pattern[bytes]:
    """The values of a whole line of redraws (the fast path's fallback when no layout fits)."""
    return re.compile(
        rb" - ([A-Za-z_][A-Za-z0-9_.\-/]{0,127}): ?"
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

    def block(self, block: bytes, line: int) -> int:
        """Parse a block of whole lines starting at input line ``line``.

        Returns:
            The number of line breaks in ``block``.
        """
        # ANSI colours and backspace runs are left in place here: the redraw fast path reads
        # around them, and segment() removes them from any piece it parses.
        if b"\r" not in block:
            return self._plain_block(block, line)
        group: list[bytes] = []  # consecutive plain lines that may be progress lines
        texts = block.split(b"\n")
        bulk = _bulk_redraws(texts)
        for i, text in enumerate(texts):
            if text and text[0] in _COUNTER_START and b"\r" not in text:
                group.append(text)
            else:
                if group:
                    self.lines(b"\n".join(group), line - len(group))
                    group = []
                found = bulk.get(i)
                if found is not None:
                    self._take_redraws(found, line)
                elif b"\r" in text:
                    self.redraws(text, line)
                elif text:
                    self.segment(text, line)
            line += 1
        if group:
            self.lines(b"\n".join(group), line - len(group))
        return len(texts) - 1

    def _plain_block(self, block: bytes, line: int) -> int:
        """:meth:`block` for text without ``\\r`` (pipes, files, one line per step).

        The lines that cannot start a progress record (headers, the user's prints, blank lines)
        are found by one regex pass; the runs of lines between them are progress lines, read
        all at once by :func:`_bulk_lines` where they share a layout, else by :meth:`lines`.
        """
        data = b"\n" + block  # every line now follows a line break, which _BREAK starts with
        text = np.frombuffer(data, dtype=np.uint8)
        breaks = np.flatnonzero(text == ord("\n"))
        items = _items(data, text, breaks)
        # An item's line: the block's first, plus the line breaks before it (but data[0]).
        lines = (np.searchsorted(breaks, [start for start, _, _ in items]) + (line - 1)).tolist()
        bulk = _bulk_lines(data, text, breaks, [(start, end) for start, end, run in items if run])
        labels: dict[tuple[bytes, ...], tuple[str, ...]] = {}
        for (start, end, run), at in zip(items, lines, strict=True):
            if not run:
                self.segment(data[start:end], at)
                continue
            found = bulk.get(start)
            if found is None:
                self.lines(data[start:end], at)
                continue
            steps, means, target, names = found
            cut = data.rfind(b"\n", start, end)
            head = data[start : data.find(b"\n", start, end)]
            label = labels.get(names)
            if label is None:
                label = labels[names] = tuple(map(_label, names))
            self._take_run(
                ProgressRun(
                    steps,
                    target,
                    label,
                    means,
                    _HALF_FIXED,
                    _unit(head),
                    "keras3" if _BAR3 in head else _bar_style(head),
                    at,
                ),
                data[cut + 1 : end],
            )
        return len(breaks) - 1

    def _take_run(self, run: ProgressRun, last: bytes) -> None:
        """Emit a bulk run of lines, then parse the run's last line (it may be wrapped)."""
        self.flush()
        self.after_header = False
        self.out.append(run)
        self.stats.progress += len(run.steps)
        self.segment(last, run.line + len(run.steps))

    def lines(self, group: bytes, line: int) -> None:
        """Parse consecutive one-redraw-per-line progress lines (pipes, files, ``verbose=2``).

        Same as :meth:`segment` on each line; runs of them take the bulk path like
        :meth:`redraws` does.
        """
        cut = group.rfind(b"\n")
        if group.find(b"\n", 0, cut) >= 0:
            head = group[: group.find(b"\n")]
            style = "keras3" if _BAR3 in head else ""
            run = _fast_run(group[:cut], _unit(head), style, line, b"\n")
            if run is not None:
                self._take_run(run, group[cut + 1 :])
                return
        for offset, text in enumerate(group.split(b"\n")):
            self.segment(text, line + offset)

    def _take_redraws(self, found: _Redraws, line: int) -> None:
        """Emit a line of redraws read by :func:`_bulk_redraws`, as :meth:`redraws` would."""
        steps, means, target, names, unit, style, last = found
        self.flush()
        self.after_header = False
        self.out.append(
            ProgressRun(
                steps, target, tuple(map(_label, names)), means, _HALF_FIXED, unit, style, line
            )
        )
        self.stats.progress += len(steps)
        if last:
            self.segment(last, line, style)

    def redraws(self, text: bytes, line: int) -> None:
        """Parse one line holding many ``\\r`` redraws.

        A terminal capture is almost all such lines, so this is the hot loop of the command.
        When every piece but the last is a progress redraw with the same target and metric
        names (what Keras writes), they become one :class:`ProgressRun`, read by position
        (:mod:`fitlens.explain.layout`) or by two regex passes; otherwise, and always for the last piece (the epoch's
        final line, with its ``val_*`` values), each piece takes the general path.
        """
        style, body, last = _split_redraws(text)
        if body:
            # Units, when in-progress redraws print them at all (Keras 3), are in every one.
            cut_first = body.find(b"\r")
            first = body if cut_first < 0 else body[:cut_first]
            run = _fast_run(body, _unit(first), style, line)
            if run is not None:
                self.flush()
                self.after_header = False
                self.out.append(run)
                self.stats.progress += len(run.steps)
            else:
                for seg in body.split(b"\r"):
                    if seg:
                        self.segment(seg, line, style)
        if last:
            self.segment(last, line, style)

    def segment(self, seg: bytes, line: int, style: str = "") -> None:
        """Parse one redraw (one ``\\r``/``\\n``-free piece of text).

        ``style`` overrides the bar style read from the text (the redraw path strips the bar).
        """
        if b"\x1b" in seg:
            seg = _ansi().sub(b"", seg)
        if b"\x08" in seg:
            seg = seg.rstrip(b"\x08")
            if b"\x08" in seg:
                for part in _backspaces().split(seg):
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
        step, target, bar = match.groups()
        record = self._record(
            (step, target, bar or b""), parse_values(seg, match.end()), _unit(seg), line
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
        epoch = _EPOCH.match(seg)
        # An "Epoch k/N" line continues no wrapped line: after "Epoch" comes a space, where a
        # name would need its colon, and no separator or value goes on with a capital "E".
        if epoch is None and prev is not None and self._continues(prev, seg):
            return
        self.flush()
        if epoch is not None:
            self.out.append(EpochHeader(int(epoch.group(1)), int(epoch.group(2)), line))
            self.after_header = True
            return
        if self.after_header:
            summary = _summary().match(seg)
            if summary is not None:
                values = parse_values(seg, summary.end())
                if values:
                    self._hold(Progress(1, 1, values, _unit(seg), "summary", line), seg)
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


def _fast_run(
    body: bytes, unit: CounterUnit, style: str, line: int, sep: bytes = b"\r"
) -> ProgressRun | None:
    """Parse ``sep``-separated redraws in bulk, or return None to take the general path.

    Bulk parsing applies only when it gives what the general path would: every piece starts
    with a counter, all targets agree, counters never go backwards, every piece shows the same
    names (each once) and every value is in ``%.4f`` form. Pieces that all share one layout
    (the usual case) are read by position (:func:`_fixed_run`), the others by two regex passes.
    """
    fixed = _fixed_run(body, sep)
    if fixed is not None:
        steps, means, target, pairs = fixed
        cut = body.find(sep)
        first = body if cut < 0 else body[:cut]
    else:
        if sep != b"\r":
            body = body.replace(sep, b"\r")
        n = body.count(b"\r") + 1  # an empty piece has no counter, so heads would not match n
        heads = _RUN_HEAD.findall(b"\r" + body)
        if len(heads) != n:
            return None
        target_text = heads[0][1]
        if len({t for _, t in heads}) != 1:
            return None
        cut = body.find(b"\r")
        first = body if cut < 0 else body[:cut]
        # One record style and counter unit for the run: every piece prints a bar or none, and
        # the unit (a bar's last line's "ms/step") or none, as the first piece does.
        for mark in (b"s/step", b"s/sample", b"/" + target_text + b" ["):
            if body.count(mark) != n * first.count(mark):
                return None
        pairs = tuple(name for name, _ in _METRIC.findall(first))
        found = list(_run_value().finditer(body))
        values = [m.group(2) for m in found]
        joined = b"".join(values)
        if len(values) != n * len(pairs) or b"e" in joined or b"n" in joined:
            return None
        for name in pairs:
            if body.count(b" - " + name + b":") != n:
                return None
        # Each piece shows the first piece's names in its order (a piece whose value is cut
        # short must not shift the next piece's values into it).
        if [m.group(1) for m in found] != list(pairs) * n:
            return None
        starts = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == ord("\r"))
        piece = np.searchsorted(starts, [m.start() for m in found])
        if not np.array_equal(piece, np.repeat(np.arange(n), len(pairs))):
            return None
        # map() over Python's own parsers beats NumPy's bytes-to-number casts here.
        steps = np.array(list(map(int, [s for s, _ in heads])), dtype=np.int64)
        target = int(target_text)
        means = np.array(list(map(float, values)), dtype=np.float64).reshape(n, len(pairs))
    if target > MAX_COUNTER or int(steps[-1]) > target or int(steps[0]) < 1:
        return None
    if bool((np.diff(steps) < 0).any()):
        return None
    if not bool((np.abs(means) <= MAX_VALUE).all()):
        return None
    names = tuple(_label(name) for name in pairs)
    style = style or _bar_style(first)
    return ProgressRun(steps, target, names, means, _HALF_FIXED, unit, style, line)


#: A line of redraws read in bulk: steps, means, target, names, unit, style, and its last piece.
_Redraws = tuple[np.ndarray, np.ndarray, int, tuple[bytes, ...], CounterUnit, str, bytes]


def _split_redraws(text: bytes) -> tuple[str, bytes, bytes]:
    """A line of redraws as :meth:`_Parser.redraws` cuts it: ``(style, body, last)``, the body
    being every redraw but the last (empty when there is one redraw)."""
    # The bar, when there is one, is within the first redraws: no need to scan the line.
    style = "keras3" if text.find(_BAR3, 0, 4096) >= 0 else ""
    # A chunk boundary can leave the tail of a backspace run at the start of a line.
    text = text.lstrip(b"\x08").strip(b"\r")
    cut = text.rfind(b"\r")
    return style, (text[:cut] if cut > 0 else b""), text[cut + 1 :]


def _bulk_redraws(texts: list[bytes]) -> dict[int, _Redraws]:
    """Read the redraws of every terminal line in ``texts`` that shares one layout at once.

    Each line (with ``\\r``) is cut as :meth:`_Parser.redraws` cuts it; the bodies of all of
    them are read by one :meth:`Layout.read` (the layout of the first bodies' first piece), and a
    line is kept only where :func:`_fast_run` would read its body by position with the same
    result: every piece has the layout, the names show once per piece, no ``nan``/``inf``, the
    counters never go back, start at 1 or more and stay within the target. The others are left
    to :meth:`_Parser.redraws`.

    Returns:
        ``{index in texts: line read}``.
    """
    lines = []
    for i, text in enumerate(texts):
        if b"\r" in text:
            style, body, last = _split_redraws(text)
            if body:
                lines.append((i, style, body, last))
    if len(lines) < 2:
        return {}
    layout = None
    for _, _, body, _ in lines[:3]:  # a line that starts oddly (an evaluate bar) should not decide
        cut = body.find(b"\r")
        layout = _layout(body if cut < 0 else body[:cut])
        if layout is not None:
            break
    if layout is None or layout.target > MAX_COUNTER:
        return {}
    data = b"\r".join(body for _, _, body, _ in lines)
    chars = np.frombuffer(data, dtype=np.uint8)
    seps = np.flatnonzero(chars == ord("\r"))
    starts = np.concatenate(([0], seps + 1))
    ends = np.append(seps, len(data))
    # Body k spans edges[2k]:edges[2k + 1]; the "\r" that joins two bodies lies in neither.
    sizes = np.array([len(body) for _, _, body, _ in lines])
    edges = np.empty(2 * len(lines), dtype=np.int64)
    edges[1::2] = np.cumsum(sizes + 1) - 1
    edges[0::2] = edges[1::2] - sizes
    counts = per_range(seps, edges) + 1
    offsets = np.concatenate(([0], np.cumsum(counts)))
    found = _marks(chars, layout)
    units = found[1] if layout.units else None
    ok, steps, means = layout.read(chars, starts, ends, None, units)
    bad = _bad_runs(ok, steps, offsets, layout.target)
    bad |= _refused(data, found, layout, edges, counts)
    good = [
        (line, o, n)
        for line, o, n, b in zip(
            lines, offsets[:-1].tolist(), counts.tolist(), bad.tolist(), strict=True
        )
        if not b
    ]
    out: dict[int, _Redraws] = {}
    for (i, style, body, last), o, n in good:
        cut = body.find(b"\r")
        first = body if cut < 0 else body[:cut]
        out[i] = (
            steps[o : o + n],
            means[o : o + n],
            layout.target,
            layout.names,
            _unit(first),
            style or _bar_style(first),
            last,
        )
    return out


def _fixed_run(
    body: bytes, sep: bytes
) -> tuple[np.ndarray, np.ndarray, int, tuple[bytes, ...]] | None:
    """Read ``sep``-separated pieces that all share the first piece's :class:`Layout`.

    Accepts only what :func:`_fast_run`'s regex passes accept, and gives the same numbers.

    Returns:
        ``(steps, means, target, names)``, or None when any piece differs.
    """
    cut = body.find(sep)
    first = body if cut < 0 else body[:cut]
    layout = _layout(first)
    if layout is None:
        return None
    n = body.count(sep) + 1
    if not _same_names(body, 0, len(body), layout.names, n):
        return None
    data = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero(data == sep[0])
    starts = np.empty(n, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends + 1
    ends = np.append(ends, len(body))
    ok, steps, means = layout.read(data, starts, ends, decimal_points(data), unit_marks(data))
    if not bool(ok.all()):
        return None
    return steps, means, layout.target, layout.names


def _layout(first: bytes) -> Layout | None:
    """The :class:`Layout` of a run's first piece, if the run's regexes accept it."""
    head = _RUN_HEAD.match(b"\r" + first)
    if head is None:
        return None
    return Layout.of(first, head, list(_METRIC.finditer(first)))


def _nan_or_inf(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` holds ``nan`` or ``inf``.

    Both hold an ``n``, which most logs never print (a one-byte search runs at memory speed,
    a three-byte one about twenty times slower), so the words are looked for only after one.
    """
    if data.find(b"n", start, end) < 0:
        return False
    return data.find(b"nan", start, end) >= 0 or data.find(b"inf", start, end) >= 0


def _same_names(data: bytes, start: int, end: int, names: tuple[bytes, ...], n: int) -> bool:
    """What the regex path checks of ``n`` pieces in ``data[start:end]``: each name shows once
    per piece, and no ``nan``/``inf`` is anywhere (the layout cannot see the middle of a piece)."""
    if _nan_or_inf(data, start, end):
        return False
    return all(data.count(b" - " + name + b":", start, end) == n for name in names)


def _unit(head: bytes) -> CounterUnit:
    """The counter's unit as a progress line prints it, if it does."""
    if b"s/step" in head:
        return "step"
    if b"s/sample" in head:
        return "sample"
    return "unknown"


def _bar_style(first: bytes) -> str:
    """``bracket`` or ``plain``, from the first piece of a run (no Keras 3 bar in it)."""
    if first[:1] == b"\x08":
        first = first.lstrip(b"\x08")
    if b"\x1b" in first:
        first = _ansi().sub(b"", first)
    bar = _HEAD.match(first)
    return "plain" if bar is None or not bar.group(3) else "bracket"


def _items(data: bytes, text: np.ndarray, breaks: np.ndarray) -> list[tuple[int, int, bool]]:
    """Cut text without ``\\r`` into runs of lines that may be progress lines and the lines
    between them.

    Args:
        data: The text, starting with ``\\n`` (so every line follows one).
        text: ``data`` as uint8.
        breaks: Positions of every ``\\n`` in ``data``.

    Returns:
        ``(start, end, is a run)`` in order: a run is consecutive lines that start with a space,
        a tab or a digit; the others are single lines that start otherwise (a blank line ends a
        run and is left out). A line the text does not end with a line break belongs to a run.
    """
    items = []
    pos = 1
    # Line k runs from breaks[k] + 1 to breaks[k + 1]; the last, unterminated line (if any)
    # is never a break.
    cuts = np.flatnonzero(_BREAKS_RUN[text[breaks[:-1] + 1]])
    for start, stop in zip(breaks[cuts].tolist(), breaks[cuts + 1].tolist(), strict=True):
        if start > pos:
            items.append((pos, start, True))
        if stop > start + 1:
            items.append((start + 1, stop, False))
        pos = stop + 1
    # The last run of progress lines: no break line follows it, only the block's own end.
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    if end > pos:
        items.append((pos, end, True))
    return items


def _bulk_lines(
    data: bytes, text: np.ndarray, breaks: np.ndarray, runs: list[tuple[int, int]]
) -> dict[int, tuple[np.ndarray, np.ndarray, int, tuple[bytes, ...]]]:
    """Read every run of one-per-line progress lines in ``data`` that shares one layout at once.

    A run ``data[start:end]`` of three lines or more is read as :meth:`_Parser.lines` would read
    it in bulk: all its lines but the last (which may continue on the next line, and is parsed
    on its own). The layout is the first run's first line's; a run with any line that differs
    from it, or that the regex path would refuse, is left out and read by :meth:`_Parser.lines`.

    Args:
        data: Text that starts with ``\\n`` (so every line follows one) and holds no ``\\r``.
        text: ``data`` as uint8.
        breaks: Positions of every ``\\n`` in ``data``.
        runs: ``(start, end)`` of each run of progress lines, in order.

    Returns:
        ``{start: (steps, means, target, names)}`` for the runs read.
    """
    bodies = []
    for start, end in runs:
        cut = data.rfind(b"\n", start, end)
        if cut > start and data.find(b"\n", start, cut) >= 0:
            bodies.append((start, cut))
    layout = None
    for start, cut in bodies[:3]:  # a run that starts oddly (an evaluate bar) should not decide
        layout = _layout(data[start : data.find(b"\n", start, cut)])
        if layout is not None:
            break
    if layout is None or layout.target > MAX_COUNTER:
        return {}
    # Line i of the text starts after breaks[i] and ends at breaks[i + 1].
    first = np.searchsorted(breaks, [start - 1 for start, _ in bodies])
    last = np.searchsorted(breaks, [cut for _, cut in bodies])
    chosen = np.zeros(len(breaks), dtype=bool)
    for i, j in zip(first.tolist(), last.tolist(), strict=True):
        chosen[i:j] = True
    rows = np.flatnonzero(chosen)
    found = _marks(text, layout)
    units = found[1] if layout.units else None
    ok, steps, means = layout.read(text, breaks[rows] + 1, breaks[rows + 1], None, units)
    counts = last - first
    offsets = np.concatenate(([0], np.cumsum(counts)))
    edges = np.array([edge for body in bodies for edge in body], dtype=np.int64)
    bad = _bad_runs(ok, steps, offsets, layout.target)
    bad |= _refused(data, found, layout, edges, counts)
    good = [
        (start, o, n)
        for (start, _), o, n, b in zip(
            bodies, offsets[:-1].tolist(), counts.tolist(), bad.tolist(), strict=True
        )
        if not b
    ]
    return {
        start: (steps[o : o + n], means[o : o + n], layout.target, layout.names)
        for start, o, n in good
    }


def _bad_runs(ok: np.ndarray, steps: np.ndarray, offsets: np.ndarray, target: int) -> np.ndarray:
    """Per run of pieces (run ``r`` holds pieces ``offsets[r]:offsets[r + 1]``, at least one),
    whether the regex path would refuse it: a piece without the layout, or counters that go back
    within the run, start below 1 or pass the target."""
    bad = np.add.reduceat(~ok, offsets[:-1]) > 0
    back = np.flatnonzero(steps[1:] < steps[:-1]) + 1
    back = back[np.isin(back, offsets, invert=True)]
    bad[np.searchsorted(offsets, back, side="right") - 1] = True
    bad |= steps[offsets[:-1]] < 1
    bad |= steps[offsets[1:] - 1] > target
    return bad


def _marks(text: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """What :func:`_refused` counts in ``text``: decimals, unit marks and each name's marks."""
    colons = np.flatnonzero(text == ord(":"))
    names = [name_marks(text, name, colons) for name in layout.names]
    return decimal_points(text), unit_marks(text), names


def _refused(
    data: bytes,
    found: tuple[np.ndarray, np.ndarray, list[np.ndarray]],
    layout: Layout,
    edges: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    """Per run of pieces, whether the regex path would read it otherwise than by position.

    Run ``r`` spans ``data[edges[2r]:edges[2r + 1]]`` and holds ``counts[r]`` pieces. Each
    piece that has the layout shows its tail's decimals and each name once in its tail, so a
    run holds at least ``counts[r]`` times those; it is refused when it holds more (a value, a
    name or a counter unit outside a tail), or any ``nan``/``inf``.

    Args:
        data: The text the runs lie in.
        found: :func:`_marks` of ``data``.
        layout: The layout the pieces were read with.
        edges: Where runs start and end, alternately, increasing.
        counts: Pieces per run.
    """
    points, units, names = found
    bad = per_range(points, edges) != counts * layout.points
    if not layout.units:  # else Layout.read checks them piece by piece
        bad |= per_range(units, edges) != 0
    for marks in names:
        bad |= per_range(marks, edges) != counts
    if _nan_or_inf(data, 0, len(data)):
        pairs = edges.reshape(-1, 2).tolist()
        bad |= np.array([_nan_or_inf(data, start, end) for start, end in pairs], dtype=bool)
    return bad


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
        line += parser.block(data[: cut + 1], line)
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
