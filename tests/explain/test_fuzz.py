"""Random and mutated logs: no crash, no traceback, and bounded time per line."""

from __future__ import annotations

import io
import itertools
import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fitlens.explain.analysis import Options
from fitlens.explain.command import UserError, explain_stream, main
from fitlens.explain.parse import iter_records
from fitlens.explain.writer import Explained, render_text, to_json

from .seed import SEED

SAMPLE = (
    b"Epoch 1/2\n"
    b"\x08\x08\r\x1b[1m 1/10\x1b[0m \x1b[32m\xe2\x94\x81\x1b[0m 0s 5ms/step - accuracy: 0.5000"
    b" - loss: 0.6931\x08\x08\r\x1b[1m 5/10\x1b[0m 0s 5ms/step - accuracy: 0.6000 - loss: 5.0e-4"
    b"\r10/10 [==========] - 1s 3ms/step - loss: 0.6000 - acc: 0.7000 - val_loss: 0.5000\n"
    b"Epoch 2/2\n  1/10 [..] - ETA: 9s - loss: 0.4000 - acc: 0.9000\n"
)
ALPHABET = b"0123456789/.:- [=>]\r\n\x08\x1beE+-abcdlossacc\xe2\x94\x81 \t\x00"


def _pipeline(data: bytes) -> None:
    try:
        explained = explain_stream(io.BytesIO(data), "fuzz", Options(), keep_results=True)
    except UserError:
        return
    render_text(explained)
    json.dumps(to_json(explained), allow_nan=False)
    assert_sound(explained)


def assert_sound(explained: Explained) -> None:
    """Every interval is ordered, inside the metric's range, and holds its own point value."""
    for result in explained.results or []:
        for m in result.metrics.values():
            lo, hi = m.clip if m.clip is not None else (-math.inf, math.inf)
            for w in m.windows:
                assert lo <= w.low <= w.value <= w.high <= hi, (m.name, w)
            if m.windows:
                steps = m.series.arrays()[0]
                # The windows tile the epoch: 1..last display, no gap, no overlap.
                assert m.windows[0].first_batch == 1
                assert m.windows[-1].last_batch == int(steps[-1])
                for a, b in itertools.pairwise(m.windows):
                    assert b.first_batch == a.last_batch + 1
    for b in explained.boundaries:
        assert 0.0 <= b.fraction_low <= b.fraction_high <= 1.0, b
        assert b.lag_low <= b.lag_high, b
        for w in (b.end_level, b.next_window, b.early, b.late):
            if w is not None:
                assert w.low <= w.value <= w.high, (b.metric, w)


@settings(
    derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_pipeline(data):
    _pipeline(data)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([bytes([c]) for c in ALPHABET]), max_size=600))
def test_log_like_noise_never_crashes_the_pipeline(chars):
    _pipeline(b"".join(chars))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.data())
def test_mutated_logs_never_crash_the_pipeline(data):
    base = bytearray(SAMPLE + SEED.read_bytes())
    for _ in range(data.draw(st.integers(1, 20))):
        op = data.draw(st.sampled_from(["flip", "cut", "dup", "insert"]))
        i = data.draw(st.integers(0, max(len(base) - 1, 0)))
        if op == "flip" and base:
            base[i] = data.draw(st.sampled_from(list(ALPHABET)))
        elif op == "cut":
            del base[i : i + data.draw(st.integers(1, 50))]
        elif op == "dup":
            base[i:i] = base[i : i + data.draw(st.integers(1, 200))]
        else:
            base[i:i] = data.draw(st.binary(max_size=20))
    _pipeline(bytes(base))


@settings(derandomize=True, max_examples=100, deadline=None)
@given(st.binary(max_size=500))
def test_the_command_exits_cleanly_on_any_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "log"
    path.write_bytes(data)
    assert main([str(path), "--json"]) in (0, 2)


@pytest.mark.parametrize(
    "line",
    [
        b"1/2" + b" - a: " * 20_000,
        b" - loss: 0." * 20_000,
        b"1" * 200_000,
        b"1/2 [" + b"=" * 200_000,
        b"Epoch " + b"1/" * 100_000,
        b"\x1b[" + b"1;" * 100_000,
        b"1/2 - " + b"x" * 127 + b": " + b"9" * 100_000 + b".0000",
        b"\x08" * 300_000 + b"1/2 - loss: 0.1000",
        (b"\r1/2 - loss: 0.1000" + b" - a" * 50) * 5_000,
    ],
    ids=[
        "dashes",
        "truncated-values",
        "digits",
        "bar",
        "epochs",
        "ansi",
        "huge-number",
        "bs",
        "cr",
    ],
)
def test_pathological_lines_parse_in_bounded_time(line):
    start = time.perf_counter()
    list(iter_records([line + b"\n"]))
    assert time.perf_counter() - start < 2.0


def _piece(draw: st.DrawFn, step: int, target: int, acc: float, loss: float) -> bytes:
    style = draw(st.sampled_from(["bracket", "keras3", "plain"]))
    values = f" - loss: {loss:.4f} - acc: {acc:.4f}"
    if style == "bracket":
        return f"{step}/{target} [====>...] - ETA: 1s{values}\n".encode()
    if style == "keras3":
        return f"{step}/{target} ━━━━━━━━━━ 1s 5ms/step{values}\n".encode()
    return f"{step}/{target} - 1s - 5ms/step{values}\n".encode()


@st.composite
def real_shaped_logs(draw: st.DrawFn) -> bytes:
    """Logs built from the shapes users paste: headers, verbose=2 lines, user prints, fit loops,
    out-of-order updates and repeated final steps, with running means that may be inconsistent."""
    out = []
    for epoch in range(draw(st.integers(1, 4))):
        header = draw(st.sampled_from(["Epoch 1/1", f"Epoch {epoch + 1}/4", None]))
        if header:
            out.append(header.encode() + b"\n")
        if header and draw(st.booleans()):
            out.append(b" - 12s - loss: %.4f - acc: %.4f\n" % (draw(st.floats(0, 2)), 0.5))
            continue
        target = draw(st.integers(1, 30))
        steps = sorted(draw(st.sets(st.integers(1, target), min_size=1, max_size=8)))
        if len(steps) > 2 and draw(st.booleans()):
            steps[-2], steps[-3] = steps[-3], steps[-2]  # an out-of-order update
        for step in steps:
            acc = draw(st.floats(0.0, 1.0))
            loss = draw(st.floats(0.0, 3.0))
            out.append(_piece(draw, step, target, acc, loss))
            if draw(st.integers(0, 9)) == 0:
                out.append(b"holdout - loss: 0.2000 - acc: 0.9600\n")
    return b"".join(out)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(real_shaped_logs(), st.sampled_from([{}, {"samples": 650, "batch_size": 16}]))
def test_real_shaped_logs_give_sound_intervals_in_text_and_json(data, options):
    try:
        explained = explain_stream(
            io.BytesIO(data), "fuzz", Options(**options), keep_results=True, keep_windows=True
        )
    except UserError:
        return
    assert_sound(explained)
    text = render_text(explained)
    assert text.startswith("fitlens explain: fuzz\n")
    report = to_json(explained)
    assert len(report["bottom_line"]) == len(report["boundaries"])
    for b in explained.boundaries:
        assert b.verdict in {"averaging_lag", "not_averaging_lag", "mixed", "unknown"}
        if b.verdict == "averaging_lag":
            assert b.fraction_low >= 0.75
        if b.verdict == "mixed":
            assert b.fraction_low >= 0.25 and b.fraction_high <= 0.75
