"""The streaming parser on each Keras format, as written to terminals, pipes and pastes.

Lines here are synthetic format tests: written by hand from the format rules in Keras's
``Progbar`` sources (Keras 2 ``generic_utils.py``, tf.keras ``generic_utils.py``, Keras 3
``progbar.py``). Real Keras 3 output is covered in ``test_real_keras.py``.
"""

from __future__ import annotations

import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fitlens.explain import parse
from fitlens.explain.epochs import split_epochs
from fitlens.explain.parse import EpochHeader, ParseStats, Progress, iter_records, parse_values

KERAS2 = (
    b"Epoch 1/1\n"
    b"  1/406 [..............................] - ETA: 11726s - loss: 0.7993 - acc: 0.5996\n"
    b"406/406 [==============================] - 10798s - loss: 0.3539 - acc: 0.8918\n"
)
TF2 = (
    b"406/406 [==============================] - 12s 30ms/step - loss: 0.3539"
    b" - accuracy: 0.8918 - val_loss: 0.3012 - val_accuracy: 0.9050\n"
)


def _keras3_redraw(step: int, target: int, acc: float, loss: float, prev: int) -> tuple[str, int]:
    done = 20 * step // target
    bar = f"\x1b[1m{step:3d}/{target}\x1b[0m \x1b[32m{'━' * done}\x1b[0m\x1b[37m{'━' * (20 - done)}"
    info = f"\x1b[0m \x1b[1m0s\x1b[0m 5ms/step - accuracy: {acc:.4f} - loss: {loss:.4f}"
    return "\b" * prev + "\r" + bar + info, 60


def _progress(data: bytes) -> list[Progress]:
    return [r for r in iter_records([data]) if isinstance(r, Progress)]


def _records(data: bytes) -> list:
    """Records with bulk runs expanded, so both parser paths compare equal."""
    out = []
    for r in iter_records([data]):
        if isinstance(r, parse.ProgressRun):
            for i, step in enumerate(r.steps.tolist()):
                values = tuple(
                    (n, float(v), r.half) for n, v in zip(r.names, r.means[i], strict=True)
                )
                out.append(("p", step, r.target, values, r.unit, r.style))
        elif isinstance(r, Progress):
            out.append(("p", r.step, r.target, tuple(tuple(v) for v in r.values), r.unit, r.style))
        else:
            out.append(("e", r.number, r.total))
    return out


def test_keras2_lines_give_steps_targets_and_values():
    records = list(iter_records([KERAS2]))
    assert isinstance(records[0], EpochHeader) and (records[0].number, records[0].total) == (1, 1)
    first, last = records[1], records[2]
    assert isinstance(first, Progress) and isinstance(last, Progress)
    assert (first.step, first.target, first.style) == (1, 406, "bracket")
    assert [(v.name, v.value) for v in last.values] == [("loss", 0.3539), ("acc", 0.8918)]
    assert all(v.half == 0.5e-4 for v in last.values)


def test_tf_keras_lines_report_step_units_and_validation_values():
    (record,) = _progress(TF2)
    assert record.unit == "step"
    assert [v.name for v in record.values] == ["loss", "accuracy", "val_loss", "val_accuracy"]


def test_tf_keras_2_0_lines_report_sample_units():
    (record,) = _progress(b"60000/60000 [====] - 3s 50us/sample - loss: 0.2000 - accuracy: 0.9\n")
    assert record.unit == "sample"
    # "0.9" is not a %.4f display (a trimmed paste): it is dropped rather than trusted.
    assert [v.name for v in record.values] == ["loss"]


def test_keras3_terminal_redraws_with_ansi_and_backspaces_are_each_parsed():
    text, prev = "Epoch 1/2\n", 0
    for step in range(1, 11):
        redraw, prev = _keras3_redraw(step, 10, 0.5 + step / 100, 1 - step / 100, prev)
        text += redraw
    text += "\n"
    records = _records(text.encode())
    steps = [r[1] for r in records if r[0] == "p"]
    assert steps == list(range(1, 11))
    assert {r[5] for r in records if r[0] == "p"} == {"keras3"}
    assert records[-1][3][0] == ("accuracy", 0.6, 0.5e-4)


def test_bulk_and_general_paths_agree_on_terminal_redraws():
    text, prev = "", 0
    for step in range(1, 40):
        redraw, prev = _keras3_redraw(step, 39, step / 40, 2 - step / 40, prev)
        text += redraw
    text += "\nEpoch 2/2\n"
    for step in range(1, 40):  # Keras 2 terminal redraws: backspaces, a bracket bar, no colour
        line = (
            f"{step:2d}/39 [{'=' * step}>] - ETA: 1s - loss: {1 / step:.4f} - acc: {step / 40:.4f}"
        )
        text += "\b" * len(line) + "\r" + line
    data = text.encode() + b"\n"
    bulk = _records(data)
    original = parse._fast_run
    try:
        parse._fast_run = lambda *args: None  # type: ignore[assignment]
        general = _records(data)
    finally:
        parse._fast_run = original
    assert bulk == general


def test_keras3_verbose2_lines_parse_without_a_bar():
    line = b"10/10 - 0s - 5ms/step - accuracy: 0.5000 - loss: 0.6931 - val_loss: 0.7000\n"
    (record,) = _progress(line)
    assert (record.step, record.target, record.style, record.unit) == (10, 10, "plain", "step")


def test_scientific_values_carry_their_own_rounding():
    (loss,) = parse_values(b"3/9 [==>...] - ETA: 1s - loss: 5.0000e-04")
    assert loss.value == 5e-4
    assert loss.half == 0.5e-8


def test_custom_and_any_order_metric_names_are_kept():
    values = parse_values(b"1/2 - 0s - my_auc_1: 0.7000 - loss: 1.0000 - f1.score/x: 0.1000")
    assert [v.name for v in values] == ["my_auc_1", "loss", "f1.score/x"]


def test_a_line_wrapped_by_the_terminal_is_joined_back():
    data = b"406/406 [==============================] - 10798s - loss: 0.3539 - acc: 0.89\n18\n"
    (record,) = _progress(data)
    assert [(v.name, v.value) for v in record.values] == [("loss", 0.3539), ("acc", 0.8918)]


def test_a_users_own_line_after_a_progress_line_is_not_joined():
    data = b"406/406 [=====] - 10s - loss: 0.3539 - acc: 0.8918\ntrain_model:: starting epoch 2/3\n"
    stats = ParseStats()
    records = list(iter_records([data], stats))
    (record,) = [r for r in records if isinstance(r, Progress)]
    assert [v.value for v in record.values] == [0.3539, 0.8918]
    assert stats.other == 1


def test_nan_and_absurd_values_are_dropped_not_trusted():
    values = parse_values(b"1/2 - 0s - loss: nan - acc: 1" + b"9" * 35 + b".0000 - auc: 0.5000")
    assert [v.name for v in values] == ["auc"]


def test_a_counter_beyond_its_target_is_rejected_as_garbled():
    stats = ParseStats()
    assert _progress(b"500/406 [===] - 1s - loss: 0.1000\n") == []
    list(iter_records([b"500/406 [===] - 1s - loss: 0.1000\n"], stats))
    assert stats.rejected == 1 and stats.first_rejected_line == 1


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=12))
def test_records_do_not_depend_on_how_the_input_is_chunked(cuts):
    text, prev = "Epoch 1/1\n", 0
    for step in range(1, 30):
        redraw, prev = _keras3_redraw(step, 29, step / 30, 1 - step / 30, prev)
        text += redraw
    data = (text + "\n" + KERAS2.decode() + TF2.decode()).encode()
    whole = _records(data)
    chunks, pos = [], 0
    for cut in cuts:
        chunks.append(data[pos : pos + cut])
        pos += cut
    chunks.append(data[pos:])
    pieces = []
    for r in iter_records(chunks):
        pieces.extend(_records_of(r))
    assert pieces == whole


def _records_of(record) -> list:
    if isinstance(record, parse.ProgressRun):
        return [
            (
                "p",
                s,
                record.target,
                tuple(
                    (n, float(v), record.half)
                    for n, v in zip(record.names, record.means[i], strict=True)
                ),
                record.unit,
                record.style,
            )
            for i, s in enumerate(record.steps.tolist())
        ]
    if isinstance(record, Progress):
        return [
            (
                "p",
                record.step,
                record.target,
                tuple(tuple(v) for v in record.values),
                record.unit,
                record.style,
            )
        ]
    return [("e", record.number, record.total)]


def test_a_loop_of_fit_calls_gives_one_epoch_per_call():
    epochs = list(split_epochs(iter_records([KERAS2 * 3])))
    assert [e.index for e in epochs] == [1, 2, 3]
    assert all(e.header == "Epoch 1/1" and e.complete for e in epochs)


def test_a_counter_going_backwards_starts_a_new_epoch_without_a_header():
    data = b"1/4 [..] - loss: 0.5000\n4/4 [==] - loss: 0.4000\n1/4 [..] - loss: 0.3000\n"
    epochs = list(split_epochs(iter_records([data])))
    assert len(epochs) == 2
    steps, means, _ = epochs[0].series["loss"].arrays()
    assert steps.tolist() == [1, 4] and means.tolist() == [0.5, 0.4]


def test_a_repeated_final_step_keeps_its_last_display():
    data = b"4/4 - 1s - loss: 0.4000\r4/4 - 1s - loss: 0.4000 - val_loss: 0.3000\n"
    (epoch,) = split_epochs(iter_records([data]))
    assert len(epoch.series["loss"]) == 1
    assert "val_loss" in epoch.final


def test_a_zero_counter_is_rejected_as_garbled():
    stats = ParseStats()
    assert [r for r in iter_records([b"0/406 [..] - loss: 0.1000\n"], stats)] == []
    assert stats.rejected == 1


def test_bulk_and_general_paths_agree_on_one_line_per_redraw_logs():
    lines = [b"Epoch 1/2"]
    for step in range(1, 30):
        lines.append(
            b"%3d/29 [==>...] - ETA: 1s - loss: %.4f - acc: %.4f" % (step, 1 / step, step / 30)
        )
    lines += [b"user print", b"Epoch 2/2", b" 1/29 [>..] - ETA: 1s - loss: 0.1000 - acc: 0.9000"]
    data = b"\n".join(lines) + b"\n"
    bulk = _records(data)
    original = parse._fast_run
    try:
        parse._fast_run = lambda *args: None  # type: ignore[assignment]
        general = _records(data)
    finally:
        parse._fast_run = original
    assert bulk == general
    assert any(isinstance(r, parse.ProgressRun) for r in iter_records([data]))


def _items_by_regex(data: bytes) -> list[tuple[int, int, bool]]:
    """The cut of text into runs and other lines, as the parser made it with one regex."""
    items = []
    pos = 1
    for match in re.finditer(rb"\n(?:[^ \t0-9\n][^\n]*)?(?=\n)", data):
        start = match.start()
        if start > pos:
            items.append((pos, start, True))
        if match.end() > start + 1:
            items.append((start + 1, match.end(), False))
        pos = match.end() + 1
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    if end > pos:
        items.append((pos, end, True))
    return items


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"",
                b" ",
                b"\t1",
                b"  7/9 - loss: 0.1000",
                b"12/12",
                b"Epoch 1/2",
                b"x",
                b"\x00",
                b"-",
                b"\x08\x08",
                b"e-04",
                b"\xe2\x94\x81",
            ]
        ),
        max_size=12,
    ),
    st.booleans(),
)
def test_lines_are_cut_into_runs_by_their_first_byte_as_the_regex_cut_them(lines, ends):
    data = b"\n" + b"\n".join(lines) + (b"\n" if ends else b"")
    text = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(text == ord("\n"))
    assert parse._items(data, text, breaks) == _items_by_regex(data)
