"""Log shapes real users paste: verbose=2 in every Keras, fit loops, out-of-order and user lines."""

from __future__ import annotations

import io

import pytest

from fitlens.explain.analysis import Options
from fitlens.explain.command import explain_stream
from fitlens.explain.epochs import split_epochs
from fitlens.explain.parse import iter_records
from fitlens.explain.writer import render_text

from .seed import SEED
from .test_fuzz import assert_sound


def _explain(data: bytes, **options):
    return explain_stream(io.BytesIO(data), "log", Options(**options), keep_results=True)


KERAS2_VERBOSE2 = (
    b"Epoch 1/3\n"
    b" - 120s - loss: 0.5000 - acc: 0.8000\n"
    b"Epoch 2/3\n"
    b" - 118s - loss: 0.4000 - acc: 0.8500 - val_loss: 0.4500 - val_acc: 0.8200\n"
    b"Epoch 3/3\n"
    b" - 119s 293ms/step - loss: 0.3500 - acc: 0.8700 - val_loss: 0.4400 - val_acc: 0.8300\n"
)


@pytest.mark.parametrize(
    "data",
    [KERAS2_VERBOSE2, KERAS2_VERBOSE2.replace(b" - 1", b"1")],
    ids=["keras2", "keras1"],
)
def test_keras_1_and_2_verbose2_epoch_lines_are_read_one_epoch_each(data):
    explained = _explain(data)
    assert [e.header for e in explained.epochs] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    assert [e.style for e in explained.epochs] == ["summary"] * 3
    acc = [e.metrics["acc"].last.mean for e in explained.epochs]
    assert acc == [0.8, 0.85, 0.87]
    assert explained.epochs[1].metrics["val_acc"].kind == "end_of_epoch"
    # One line per epoch: nothing inside an epoch is visible, so no verdict but unknown.
    assert {(b.verdict, b.reason) for b in explained.boundaries} == {("unknown", "no_view_inside")}
    assert "one line of epoch means (verbose=2, no step counter)" in render_text(explained)
    assert_sound(explained)


def test_a_counterless_keras_like_line_away_from_a_header_is_a_user_line():
    data = b"Epoch 1/1\n1/2 [==] - loss: 0.5000\n2/2 [==] - loss: 0.4000\n - 12s - loss: 0.1000\n"
    explained = _explain(data)
    assert len(explained.epochs) == 1
    assert explained.epochs[0].metrics["loss"].last.mean == 0.4
    assert explained.stats.other == 1


def test_a_keras3_verbose2_loop_of_fit_calls_gives_one_epoch_per_line():
    data = b"".join(
        f"train_model:: starting epoch {k}/3\n406/406 - 1s - 3ms/step - accuracy: {a} - loss: "
        f"{loss}\n".encode()
        for k, a, loss in (
            (1, "0.8277", "0.3764"),
            (2, "0.9001", "0.2500"),
            (3, "0.9300", "0.2000"),
        )
    )
    explained = _explain(data)
    assert [e.metrics["accuracy"].last.mean for e in explained.epochs] == [0.8277, 0.9001, 0.93]
    assert [b.from_epoch for b in explained.boundaries] == [1, 1, 2, 2]
    text = render_text(explained)
    assert "Read 3 epoch(s) from 3 progress line(s)" in text


def test_the_same_full_count_redrawn_on_one_line_stays_one_epoch():
    data = b"4/4 - 1s - loss: 0.4000\r4/4 - 1s - loss: 0.4000 - val_loss: 0.3000\n"
    (epoch,) = split_epochs(iter_records([data]))
    assert epoch.final["val_loss"].mean == 0.3


def _bar(step: int, acc: str) -> bytes:
    return (
        f"{step}/200 ━━━━━━━━━━━━━━━━━━━━ 1s 5ms/step - accuracy: {acc} - loss: 0.4000\n".encode()
    )


def test_an_out_of_order_update_is_merged_in_step_order():
    data = (
        b"Epoch 1/2\n"
        + _bar(100, "0.8000")
        + _bar(156, "0.8297")
        + _bar(155, "0.8304")
        + _bar(186, "0.8400")
        + _bar(200, "0.8500")
        + b"Epoch 2/2\n"
        + _bar(1, "0.9000")
    )
    (first, second) = split_epochs(iter_records([data]))
    steps = first.series["accuracy"].arrays()[0].tolist()
    assert steps == [100, 155, 156, 186, 200]
    assert first.complete and second.header == "Epoch 2/2"


def test_a_bar_that_restarts_at_step_one_is_a_new_bar():
    # model.evaluate after fit: no header, the same number of steps, back to step 1.
    data = b"Epoch 1/1\n" + _bar(100, "0.8000") + _bar(200, "0.8500") + _bar(1, "0.9000")
    epochs = list(split_epochs(iter_records([data])))
    assert [e.header for e in epochs] == ["Epoch 1/1", None]


def test_a_late_step_one_redrawn_on_the_bars_line_is_merged_but_on_a_new_line_is_a_new_bar():
    # Keras 3 ran batch 1's callbacks last: the bar drew step 1 after step 14, on its line.
    redraws = [_bar(s, a).rstrip(b"\n") for s, a in ((2, "0.6000"), (14, "0.7000"), (1, "0.5000"))]
    line = b"Epoch 1/1\n\r" + b"\r".join([*redraws, _bar(200, "0.8500")])
    (epoch,) = split_epochs(iter_records([line]))
    assert epoch.series["accuracy"].arrays()[0].tolist() == [1, 2, 14, 200]
    assert epoch.complete and epoch.header == "Epoch 1/1"
    # The same step 1 on a line of its own after the bar's line: a new bar.
    restarted = b"Epoch 1/1\n\r" + b"\r".join(redraws[:2]) + b"\n" + _bar(1, "0.5000")
    assert [e.last_step for e in split_epochs(iter_records([restarted]))] == [14, 1]


def test_a_step_back_whose_value_differs_from_the_shown_one_is_a_new_bar():
    data = _bar(50, "0.8000") + _bar(60, "0.8100") + _bar(50, "0.9000")
    assert len(list(split_epochs(iter_records([data])))) == 2


def test_a_users_holdout_line_after_the_last_step_changes_nothing():
    seed = SEED.read_bytes()
    cut = seed.index(b"0.8918") + len(b"0.8918")
    edited = seed[:cut] + b"\nholdout - loss: 0.2000 - acc: 0.9600" + seed[cut:]
    plain, with_holdout = _explain(seed), _explain(edited)
    assert with_holdout.epochs[0].metrics["acc"].last.mean == 0.8918
    assert with_holdout.epochs[0].metrics["loss"].last.mean == 0.3539
    assert with_holdout.stats.other == plain.stats.other + 1
    assert [(b.metric, b.verdict, b.lag_low, b.lag_high) for b in with_holdout.boundaries] == [
        (b.metric, b.verdict, b.lag_low, b.lag_high) for b in plain.boundaries
    ]
    assert_sound(with_holdout)


def test_the_seed_loop_compares_the_same_first_batches_across_epochs():
    text = render_text(_explain(SEED.read_bytes()))
    assert "each epoch begins with the same first batches" in text
    assert "  acc batch 1: 0.5996 -> 0.9424 -> 0.9756" in text


def test_a_wrapped_line_is_joined_but_a_users_keras_like_line_is_not():
    wrapped = b"406/406 [=====] - 10s - loss: 0.3539 - acc: 0.89\n18\n"
    (epoch,) = split_epochs(iter_records([wrapped]))
    assert epoch.final["acc"].mean == 0.8918
    glued = b"406/406 [=====] - 10s - loss: 0.3539 - acc: 0.8918\n - val_acc: 0.9000\n"
    (epoch,) = split_epochs(iter_records([glued]))
    assert set(epoch.final) == {"loss", "acc"}
