"""The positional fast path (`fitlens.explain.layout`) reads exactly what the regexes read.

Every bulk path of the parser (lines read by layout, runs read by regex) must give the same
records, line numbers and, through the whole command, the same report as the general path that
parses one line at a time: these tests switch the bulk paths off and compare.
"""

from __future__ import annotations

import contextlib
import io
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fitlens.explain import parse
from fitlens.explain.analysis import Options
from fitlens.explain.command import explain_stream
from fitlens.explain.layout import (
    Layout,
    _counters,
    decimal_points,
    name_marks,
    per_range,
    unit_marks,
)
from fitlens.explain.parse import EpochHeader, Progress, ProgressRun, iter_records
from fitlens.explain.writer import render_text, to_json

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import explain_speed  # the benchmark's own log generator


def _expanded(data: bytes, chunk: int = 1 << 20) -> list[tuple]:
    """Records with runs expanded to one tuple per display, with their input lines (a run
    records only its first line: its other rows get None)."""
    out: list[tuple] = []
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for r in iter_records(chunks):
        if isinstance(r, ProgressRun):
            for i, step in enumerate(r.steps.tolist()):
                values = tuple(
                    (n, v, r.half) for n, v in zip(r.names, r.means[i].tolist(), strict=True)
                )
                line = r.line if i == 0 else None
                out.append(("p", step, r.target, values, r.unit, r.style, line))
        elif isinstance(r, Progress):
            values = tuple(tuple(v) for v in r.values)
            out.append(("p", r.step, r.target, values, r.unit, r.style, r.line))
        else:
            assert isinstance(r, EpochHeader)
            out.append(("e", r.number, r.total, r.line))
    return out


@contextlib.contextmanager
def general_path() -> Iterator[None]:
    """Switch every bulk path off: each line is parsed on its own."""
    saved = parse._fast_run, parse._bulk_lines, parse._bulk_redraws
    parse._fast_run = lambda *args: None  # type: ignore[assignment]
    parse._bulk_lines = lambda *args: {}  # type: ignore[assignment]
    parse._bulk_redraws = lambda *args: {}  # type: ignore[assignment]
    try:
        yield
    finally:
        parse._fast_run, parse._bulk_lines, parse._bulk_redraws = saved


def _same(bulk: list[tuple], general: list[tuple]) -> bool:
    """Equal, ignoring the lines of rows that a bulk run does not record."""
    if len(bulk) != len(general):
        return False
    return all(
        b == ((*g[:-1], None) if b[0] == "p" and b[-1] is None else g)
        for b, g in zip(bulk, general, strict=True)
    )


def _value(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["small", "wide", "negative", "odd"]))
    if kind == "small":
        return f"{draw(st.floats(0, 1)):.4f}"
    if kind == "wide":
        return f"{draw(st.floats(0, 1e6)):.4f}"
    if kind == "negative":
        return f"{-draw(st.floats(0, 2)):.4f}"
    return draw(st.sampled_from(["nan", "inf", "1.0000e-04", "0.5", "-0.0000", "12.3456"]))


@st.composite
def line_logs(draw: st.DrawFn) -> bytes:
    """One-line-per-step logs whose lines mostly share a layout, with what breaks it mixed in:
    widths that change, signs, nan, scientific values, user lines, stray decimals in the bar,
    counters that go back, missing names and tabs."""
    out = []
    names = draw(st.sampled_from([["loss", "acc"], ["loss"], ["accuracy", "loss", "top_5"]]))
    for epoch in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            out.append(f"Epoch {epoch + 1}/4")
        target = draw(st.sampled_from([9, 40, 200, 1000]))
        width = len(str(target))
        steps = sorted(draw(st.sets(st.integers(1, target), min_size=1, max_size=12)))
        if len(steps) > 3 and draw(st.integers(0, 4)) == 0:
            steps[1], steps[2] = steps[2], steps[1]
        # One bar style per epoch, as Keras prints (a run's unit and style come from its first
        # line); the ETA's width varies, and a stray decimal may sit inside the bar.
        bar = draw(st.sampled_from([" [==>....] - ETA: {}s", " [{}] - ETA: 1s", " - 1s {}ms/step"]))
        for step in steps:
            middle = bar.format(draw(st.sampled_from(["3", "12", "1.2345", "=>."])))
            shown = names if draw(st.integers(0, 15)) else names[:-1]
            values = "".join(f" - {n}: {_value(draw)}" for n in shown)
            counter = f"{step:{width}d}" if draw(st.integers(0, 15)) else f"\t{step}"
            out.append(f"{counter}/{target}{middle}{values}")
            if draw(st.integers(0, 12)) == 0:
                out.append(draw(st.sampled_from(["holdout - loss: 0.2000", "", "  12 done"])))
    return ("\n".join(out) + draw(st.sampled_from(["\n", ""]))).encode()


@settings(derandomize=True, max_examples=400, deadline=None)
@given(line_logs(), st.sampled_from([1 << 20, 97, 1500]))
# a bar's last line (no bar, "ms/step") after its redraws: its own record, never the run's
@example(
    b"\t1/9 [==>....] - ETA: 3s - loss: 0.0000\nholdout - loss: 0.2000\n"
    b"\t1/9 [==>....] - ETA: 3s - loss: 0.0000 - acc: 0.0000\n"
    b"\t1/9 - 1s 3ms/step - loss: 0.0000 - acc: 0.0000\n"
    b"\t1/9 [==>....] - ETA: 3s - loss: 0.0000\n",
    1 << 20,
)
def test_bulk_lines_give_the_general_paths_records_and_line_numbers(data, chunk):
    bulk = _expanded(data, chunk)
    with general_path():
        assert _same(bulk, _expanded(data, chunk))


@settings(derandomize=True, max_examples=150, deadline=None)
@given(line_logs())
def test_terminal_redraws_read_by_layout_give_the_general_paths_records(data):
    # The same lines drawn over each other as a terminal capture does.
    text = b"".join(
        b"\x08" * 7 + b"\r" + line if line[:1] in b" \t0123456789" and line else b"\n" + line
        for line in data.split(b"\n")
    )
    bulk = _expanded(text + b"\n")
    with general_path():
        assert _same(bulk, _expanded(text + b"\n"))


@pytest.mark.parametrize("style", ["keras2-lines", "keras3", "keras2"])
def test_the_benchmarks_logs_give_the_same_report_through_every_path(style):
    path_log = io.BytesIO()
    rng = random.Random(3)
    for epoch in range(1, 41):
        path_log.write(explain_speed._epoch_bytes(rng, epoch, 40, style))
    data = path_log.getvalue()
    reports = []
    for path in (contextlib.nullcontext, general_path):
        with path():
            for options in (Options(), Options(samples=3190, batch_size=16)):
                explained = explain_stream(io.BytesIO(data), "log", options, keep_windows=True)
                reports.append((render_text(explained), to_json(explained)))
    assert reports[:2] == reports[2:]
    assert "Read 40 epoch(s)" in reports[0][0]


def test_values_read_by_position_are_the_doubles_float_reads():
    texts = ["0.1000", "-0.0000", "0.3000", "123456789.1234", "-7.0001", "0.0003", "99999.9999"]
    rng = np.random.default_rng(0)
    texts += [f"{x:.4f}" for x in rng.uniform(-1e5, 1e5, 2000)]
    lines = [f"{i % 9 + 1}/9 - 1s - a: {t}".encode() for i, t in enumerate(texts)]
    for line in lines:
        head = parse._RUN_HEAD.match(b"\r" + line)
        layout = Layout.of(line, head, list(parse._METRIC.finditer(line)))
        assert layout is not None
        data = np.frombuffer(line, dtype=np.uint8)
        ok, steps, means = layout.read(
            data, np.array([0]), np.array([len(line)]), decimal_points(data), unit_marks(data)
        )
        text = line.rsplit(b": ", 1)[1]
        assert ok[0] and steps[0] == int(line.split(b"/")[0])
        assert means[0, 0] == float(text) and np.signbit(means[0, 0]) == text.startswith(b"-")


def _read_by_layout_of(
    first: bytes, others: list[bytes], sep: bytes
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:meth:`Layout.read` of ``first`` and ``others`` joined by ``sep``, with ``first``'s layout."""
    head = parse._RUN_HEAD.match(b"\r" + first)
    layout = Layout.of(first, head, list(parse._METRIC.finditer(first)))
    assert layout is not None
    text = sep.join([first, *others])
    data = np.frombuffer(text, dtype=np.uint8)
    ends = np.append(np.flatnonzero(data == sep[0]), len(text))
    starts = np.append(0, ends[:-1] + 1)
    return layout.read(data, starts, ends, decimal_points(data), unit_marks(data))


def test_a_line_that_differs_from_the_layout_is_not_read_by_position():
    first = b"  7/200 [=>....] - ETA: 3s - loss: 0.4299 - acc: 0.5220"
    others = [
        b" 17/200 [=>....] - ETA: 3s - loss: 0.4299 - acc: 0.5220",  # same layout
        b" 17/200 [=>....] - ETA: 3s - loss: 10.4299 - acc: 0.5220",  # wider value
        b"1 7/200 [=>....] - ETA: 3s - loss: 0.4299 - acc: 0.5220",  # not right-aligned
        b" 17/201 [=>....] - ETA: 3s - loss: 0.4299 - acc: 0.5220",  # another target
        b" 17/200 [1.2345] - ETA: 3s - loss: 0.4299 - acc: 0.5220",  # a decimal in the bar
        b" 17/200 [=>....] - ETA: 3s - loss: 0.4299 - acx: 0.5220",  # another name
        b"17/200 - acc: 0.5220",  # too short
    ]
    ok, steps, _ = _read_by_layout_of(first, others, b"\n")
    assert ok.tolist() == [True, True, False, False, False, False, False, False]
    assert steps[:2].tolist() == [7, 17]


def test_counters_are_spaces_then_digits_read_as_integers():
    slots = [b"  7", b" 17", b"107", b"000", b"7  ", b" 1 7", b"   ", b"a12", b"\t12", b"1 2"]
    width = max(map(len, slots))
    raw = np.array([list(s.rjust(width, b" ")) for s in slots], dtype=np.uint8)
    steps, ok = _counters(raw)
    assert ok.tolist() == [True, True, True, True, False, False, False, False, False, False]
    assert steps[:4].tolist() == [7, 17, 107, 0]


def test_names_and_marks_are_counted_in_each_run_only():
    text = b"x - loss: 1\n - loss: 2 - loss:\n - lossy: 3 - acc: 4\n - loss: 5"
    data = np.frombuffer(text, dtype=np.uint8)
    colons = np.flatnonzero(data == ord(":"))
    found = name_marks(data, b"loss", colons)
    assert [text[i - 7 : i + 1] for i in found.tolist()] == [b" - loss:"] * 4
    second, lossy = text.index(b"\n") + 1, text.index(b" - lossy")
    # Three ranges: the first line, the second line, the last 10 bytes.
    edges = np.array([0, second - 1, second, lossy, len(text) - 10, len(text)])
    assert per_range(found, edges).tolist() == [1, 2, 1]


_MIDDLES = [
    " [==>....] - ETA: 3s",  # the layout's own
    " [=====>.] - ETA: 12s",  # another width: still the layout
    " [==>....] - loss: 3s",  # a name where ETA was, no value
    " [==>....] - x: 0.1234",  # a value the regexes read
    " [==>....] - ETA: 1.5000s",  # a decimal that is no value
    " [==>....] - 5ms/step",  # a counter unit the first line lacks
    " [==>....] - acc: nan",  # nan in the middle
    " [==>..:.] - ETA: 3s",  # a colon with no name
]


@st.composite
def middle_logs(draw: st.DrawFn) -> bytes:
    """One-line-per-step logs whose lines share a head and tail but not always a middle: what
    the per-run checks (decimals, names, units, nan) must hand back to the regexes."""
    out = []
    for epoch in range(draw(st.integers(1, 4))):
        out.append(f"Epoch {epoch + 1}/4")
        for step in range(1, draw(st.integers(2, 9)) + 1):
            middle = _MIDDLES[0] if draw(st.integers(0, 3)) else draw(st.sampled_from(_MIDDLES))
            out.append(f"{step:3d}/200{middle} - loss: 0.{step:04d} - acc: 0.5{step:03d}")
        if draw(st.booleans()):
            out.append(draw(st.sampled_from(["holdout - loss: 0.2000", "", "e-04 - acc: 0.1"])))
    return ("\n".join(out) + "\n").encode()


@settings(derandomize=True, max_examples=300, deadline=None)
@given(middle_logs(), st.sampled_from([1 << 20, 61]))
def test_lines_that_differ_only_between_head_and_tail_give_the_general_paths_records(data, chunk):
    bulk = _expanded(data, chunk)
    with general_path():
        assert _same(bulk, _expanded(data, chunk))
    # The same lines drawn over each other as a terminal capture does.
    text = b"".join(
        b"\x08" * 7 + b"\r" + line if line[:1] in b" \t0123456789" and line else b"\n" + line
        for line in data.split(b"\n")
    )
    bulk = _expanded(text + b"\n", chunk)
    with general_path():
        assert _same(bulk, _expanded(text + b"\n", chunk))


@st.composite
def keras3_captures(draw: st.DrawFn) -> bytes:
    """Keras 3 terminal captures as its progress bar writes them: each redraw erases the
    previous one with one backspace per column it printed and is padded with spaces when it is
    narrower, so the backspaces and spaces change with the ETA's width (``1:02``, ``59s``,
    ``9s``), the time per step's and the bar's colours; values keep their width."""
    out = []
    names = draw(st.sampled_from([["accuracy", "loss"], ["loss"], ["loss", "mae", "top_5"]]))
    for epoch in range(draw(st.integers(1, 3))):
        out.append(f"Epoch {epoch + 1}/3\n")
        target = draw(st.sampled_from([7, 40, 200, 2000]))
        steps = sorted(draw(st.sets(st.integers(1, target), min_size=2, max_size=14)))
        prev = 0
        for step in steps:
            done = 20 * step // target
            green = f"\x1b[32m{'━' * done}\x1b[0m" if done else ""
            last = step == target
            when = (
                f"{draw(st.integers(0, 200))}s"
                if last
                else explain_speed._duration(draw(st.integers(0, 4000)))
            )
            values = "".join(f" - {n}: {draw(st.floats(0, 0.9999)):.4f}" for n in names)
            line = (
                f"\x1b[1m{step:{len(str(target))}d}/{target}\x1b[0m {green}"
                f"\x1b[37m{'━' * (20 - done)}\x1b[0m \x1b[1m{when}\x1b[0m"
                f" {draw(st.integers(1, 1500))}ms/step{values}"
            )
            width = len(line) - (34 if done else 25)
            out.append("\b" * prev + "\r" + line + " " * max(prev - width, 0))
            prev = width
        out.append("\n")
    return "".join(out).encode()


@settings(derandomize=True, max_examples=200, deadline=None)
@given(keras3_captures(), st.sampled_from([1 << 20, 333]))
def test_keras3_redraws_whose_width_changes_are_read_by_position_as_the_general_path_reads(
    data, chunk
):
    # Every line of redraws but its last piece is read by layout, whatever its backspaces and
    # spaces (they used to be part of the layout: a width change sent the line to the regexes).
    for text in data.split(b"\n"):
        _, body, _ = parse._split_redraws(text)
        if body:
            assert parse._fixed_run(body, b"\r") is not None
    bulk = _expanded(data, chunk)
    with general_path():
        assert _same(bulk, _expanded(data, chunk))


def test_trailing_spaces_and_backspaces_are_not_part_of_the_layout():
    first = b" 7/40 \x1b[1m3s\x1b[0m 5ms/step - loss: 0.4299 - acc: 0.5220\x08\x08\x08"
    others = [
        b" 8/40 \x1b[1m3s\x1b[0m 5ms/step - loss: 0.4299 - acc: 0.5221",  # no backspaces
        b" 9/40 \x1b[1m10s\x1b[0m 5ms/step - loss: 0.4299 - acc: 0.5222" + b"\x08" * 60,
        b"10/40 \x1b[1m9s\x1b[0m 5ms/step - loss: 0.4299 - acc: 0.5223 " + b"\x08" * 59,
        b"11/40 \x1b[1m9s\x1b[0m 5ms/step - loss: 0.4299 - acc: 0.5224" + b" " * 64,
        b"12/40 \x1b[1m9s\x1b[0m 5ms/step - loss: 0.4299 - acc: 0.5225" + b" " * 65,  # too many
        b"13/40 \x1b[1m9s\x1b[0m 5ms/step - loss: 0.4299 - acc: 0.5226\t\x08\x08",  # a tab
        b"14/40 \x1b[1m9s\x1b[0m 5ms/step - loss: 0.4299 - acc: 0.5227\x08 ",  # spaces last
        b"15/40 \x1b[1m9s\x1b[0m 5ms/step - loss: 0.4299 - acc: 0.5228 x\x08",  # a word
        b" " * 60 + b"\x08" * 60,  # padding only
    ]
    ok, steps, means = _read_by_layout_of(first, others, b"\r")
    assert ok.tolist() == [True] * 5 + [False] * 5
    assert steps[:5].tolist() == [7, 8, 9, 10, 11]
    assert means[:5, 1].tolist() == [0.522, 0.5221, 0.5222, 0.5223, 0.5224]


def _decimal_points_by_hand(data: bytes) -> list[int]:
    """Every ``.`` with a digit on each side, one byte at a time (the reference)."""
    return [
        i
        for i in range(1, len(data) - 1)
        if data[i] == ord(".") and chr(data[i - 1]).isdigit() and chr(data[i + 1]).isdigit()
    ]


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [b".", b"0", b"9", b"5.0", b"[==>....]", b" ", b"/", b"\xe2", "━━━━━━━━".encode()]
        )
    )
)
def test_decimal_points_are_found_whether_points_are_sparse_or_dense(pieces):
    # Dense points (a Keras 2 bar) take the every-byte pass; sparse ones the per-point test.
    data = b"".join(pieces)
    found = decimal_points(np.frombuffer(data, dtype=np.uint8))
    assert found.tolist() == _decimal_points_by_hand(data)
    assert decimal_points(np.frombuffer(b"1.2", dtype=np.uint8)).tolist() == [1]
