"""The display's pure formatters against exact strings, and its modes."""

from __future__ import annotations

import io
import math

import pytest

from fitlens.core.estimators import NowEstimate
from fitlens.core.numbers import format_value
from fitlens.view.progress import (
    Progress,
    ProgressState,
    format_duration,
    format_epoch_line,
    format_metrics,
    format_resume_line,
    format_step_line,
    format_terminal,
)


@pytest.mark.parametrize(
    ("x", "shown"),
    [
        (0.35391, "0.3539"),
        (-0.35391, "-0.3539"),
        (0.0, "0.0000"),
        (0.00012345, "1.2345e-04"),
        (-0.00012345, "-1.2345e-04"),
        (1234.5, "1234.5000"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
    ],
)
def test_values_print_as_keras_prints_them_with_the_same_rule_for_negatives(x, shown):
    assert format_value(x) == shown


def test_metrics_show_mean_then_now_for_each_metric():
    text = format_metrics({"loss": (0.412, 0.305), "acc": (0.874, 0.921)})
    assert text == "loss: 0.4120 (now 0.3050) - acc: 0.8740 (now 0.9210)"


def test_step_line_shows_position_eta_run_eta_data_share_and_metrics():
    state = ProgressState(
        epoch=2,
        epochs=5,
        step=23,
        steps=45,
        elapsed=3.2,
        eta_epoch=4.0,
        eta_run=20.4,
        data_share=0.12,
        metrics={"loss": (0.412, 0.305)},
    )
    assert format_step_line(state) == (
        "Epoch 2/5 - 23/45 - 00:03<00:04 (run 00:20) - data 12% - loss: 0.4120 (now 0.3050)"
    )


def test_step_line_with_unknown_length_shows_question_marks():
    state = ProgressState(epoch=1, epochs=1, step=7, steps=None, elapsed=61.0)
    assert format_step_line(state) == "Epoch 1/1 - 7/? - 01:01<? (run ?) - data ?"


def test_epoch_line_summarises_time_means_nows_and_validation():
    state = ProgressState(
        epoch=2,
        epochs=5,
        step=45,
        steps=45,
        elapsed=3.2,
        data_share=0.12,
        metrics={"loss": (0.412, 0.305)},
        validation={"val_loss": 0.29},
    )
    assert format_epoch_line(state) == (
        "Epoch 2/5 - 45 steps - 3.2s (71ms/step, data 12%) - loss: 0.4120 (now 0.3050)"
        " - val_loss: 0.2900"
    )


@pytest.mark.parametrize(
    ("s", "shown"),
    [(0.00085, "850us"), (0.071, "71ms"), (3.24, "3.2s"), (725, "12:05"), (3723, "1:02:03")],
)
def test_durations_pick_a_readable_unit(s, shown):
    assert format_duration(s) == shown


def _state(step):
    return ProgressState(
        epoch=1, epochs=1, step=step, steps=10, elapsed=1.0, metrics={"loss": (1.0, 0.5)}
    )


def test_line_mode_writes_no_carriage_returns_and_one_line_every_log_every_steps():
    out = io.StringIO()
    p = Progress(1, file=out, log_every=5)
    p.begin_epoch(1, 1, 10)
    for step in range(1, 11):
        p.refresh(_state(step))
    p.end_epoch(_state(10))
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split(" - ")[1] for line in lines[:2]] == ["5/10", "10/10"]
    assert lines[2].startswith("Epoch 1/1 - 10 steps")


def test_verbose_2_writes_only_the_epoch_line_and_verbose_0_nothing():
    for verbose, expected in ((2, 1), (0, 0)):
        out = io.StringIO()
        p = Progress(verbose, file=out, log_every=1)
        p.begin_epoch(1, 1, 10)
        p.refresh(_state(3))
        p.end_epoch(_state(10))
        assert len(out.getvalue().splitlines()) == expected


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_terminal_mode_redraws_the_status_lines_in_place_then_leaves_the_summary_line(
    monkeypatch,
):
    monkeypatch.setenv("COLUMNS", "80")
    out = _Tty()
    p = Progress(1, file=out)
    p.begin_epoch(1, 1, 10)
    p.refresh(_state(4))
    p.refresh(_state(5))
    p.end_epoch(_state(10))
    erase_two = "\r\x1b[K\x1b[A\x1b[K"  # back to the first of the two status lines
    assert out.getvalue() == (
        "Epoch 1/1 4/10 |████████            | 00:01<? (run ?) - data ?\n"
        "loss: 1.0000 (now 0.5000)"
        f"{erase_two}Epoch 1/1 5/10 |██████████          | 00:01<? (run ?) - data ?\n"
        "loss: 1.0000 (now 0.5000)"
        f"{erase_two}Epoch 1/1 - 10 steps - 1.0s (100ms/step, data ?) - loss: 1.0000 (now 0.5000)\n"
    )


def test_a_line_written_mid_epoch_goes_above_the_status_lines_which_are_redrawn(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = _Tty()
    p = Progress(1, file=out)
    p.begin_epoch(1, 1, 10)
    p.refresh(_state(4))
    p.write("Forecast check: ...")
    status = (
        "Epoch 1/1 4/10 |████████            | 00:01<? (run ?) - data ? - loss: 1.0000 (now 0.5000)"
    )
    assert out.getvalue() == f"{status}\r\x1b[KForecast check: ...\n{status}"


def test_invalid_display_settings_are_rejected():
    with pytest.raises(ValueError, match="verbose"):
        Progress(3)
    with pytest.raises(ValueError, match="log_every"):
        Progress(1, log_every=0)
    with pytest.raises(ValueError, match="refresh_per_second"):
        Progress(1, refresh_per_second=0)
    with pytest.raises(ValueError, match="log_seconds"):
        Progress(1, log_seconds=0)
    with pytest.raises(ValueError, match="log_fraction"):
        Progress(1, log_fraction=1.5)


def test_lines_mode_writes_plain_lines_even_to_a_terminal():
    out = _Tty()
    p = Progress(1, file=out, log_every=5, mode="lines")
    p.begin_epoch(1, 1, 10)
    for step in range(1, 11):
        p.refresh(_state(step))
    p.end_epoch(_state(10))
    assert "\r" not in out.getvalue() and len(out.getvalue().splitlines()) == 3
    with pytest.raises(ValueError, match="`mode`"):
        Progress(1, mode="tqdm")  # type: ignore[arg-type]


def _wide_state(**metrics):
    return ProgressState(
        epoch=1,
        epochs=3,
        step=14,
        steps=50,
        elapsed=0.4,
        eta_epoch=1.0,
        eta_run=2.0,
        data_share=0.36,
        metrics=metrics or {"loss": (0.5, 0.25), "accuracy": (0.8918, 0.9412)},
        headline="accuracy",
    )


_HEAD = "Epoch 1/3 14/50 |█████▌              | 00:00<00:01 (run 00:02) - data 36%"
_SPELLED = "loss: 0.5000 (now 0.2500) - accuracy: 0.8918 (now 0.9412)"


@pytest.mark.parametrize(
    ("columns", "lines"),
    [
        (200, [f"{_HEAD} - {_SPELLED}"]),
        (120, [_HEAD, _SPELLED]),  # 133 columns on one line: two lines
        (100, [_HEAD, _SPELLED]),
        (80, [_HEAD, _SPELLED]),
        (60, ["Epoch 1/3 14/50 |█▉     | 00:00<00:01 (run 00:02) - data 36%", _SPELLED]),
    ],
)
def test_terminal_layout_keeps_every_mean_and_now_at_each_width(columns, lines):
    shown = format_terminal(_wide_state(), columns)
    assert shown == lines
    assert all(len(line) <= columns for line in shown)


def test_a_wide_terminal_shows_bar_and_metrics_on_one_line_as_before():
    shown = format_terminal(_wide_state(loss=(0.5, 0.25)), 120)
    assert shown == [f"{_HEAD} - loss: 0.5000 (now 0.2500)"]


_MANY = {
    "loss": (0.5, 0.25),
    "accuracy": (0.8918, 0.9412),
    "top5_accuracy": (0.95, 0.97),
    "mae": (1.25, -0.0001),
}


@pytest.mark.parametrize(
    ("columns", "lines"),
    [
        (
            200,
            [
                _HEAD,
                "loss: 0.5000 (now 0.2500) - accuracy: 0.8918 (now 0.9412) - "
                "top5_accuracy: 0.9500 (now 0.9700) - mae: 1.2500 (now -1.0000e-04)",
            ],
        ),
        (
            120,
            [
                _HEAD,
                "mean→now:  loss .5000→.2500  accuracy .8918→.9412  top5_accuracy .9500→.9700  "
                "mae 1.2500→-1.0000e-04",
            ],
        ),
        (
            100,
            [
                _HEAD,
                "mean→now:  loss .5000→.2500  accuracy .8918→.9412  top5_accuracy .9500→.9700  "
                "mae 1.2500→-1.0000e-04",
            ],
        ),
        (
            80,
            [
                _HEAD,
                "mean→now:  loss .5000→.2500  accuracy .8918→.9412  top5_accuracy .9500→.9700",
                "mae 1.2500→-1.0000e-04",
            ],
        ),
        (
            60,
            [
                "Epoch 1/3 14/50 |█▉     | 00:00<00:01 (run 00:02) - data 36%",
                "mean→now:  loss .5000→.2500  accuracy .8918→.9412",
                "top5_accuracy .9500→.9700  mae 1.2500→-1.0000e-04",
            ],
        ),
    ],
)
def test_many_metrics_go_compact_and_wrap_rather_than_being_cut(columns, lines):
    shown = format_terminal(_wide_state(**_MANY), columns)
    assert shown == lines
    assert all(len(line) <= columns for line in shown)


def test_below_60_columns_the_headline_metric_comes_first_and_the_bar_goes():
    assert format_terminal(_wide_state(**_MANY), 40) == [
        "Epoch 1/3 14/50  00:00<00:01  run 00:02",
        "data 36%",
        "mean→now:  accuracy .8918→.9412",
        "loss .5000→.2500",
        "top5_accuracy .9500→.9700",
        "mae 1.2500→-1.0000e-04",
    ]


def test_a_run_resumed_at_an_epoch_start_with_nothing_to_skip_says_so():
    line = format_resume_line("run/ckpt.pt", 3, 0, "2026-11-30 19:31:02 UTC", 0, 0.0)
    assert line == (
        "Resumed from run/ckpt.pt (start of epoch 3, written 2026-11-30 19:31:02 UTC): "
        "no batches to skip."
    )


def test_a_resumed_epochs_line_times_the_resumed_steps_and_says_which():
    state = ProgressState(
        epoch=2, epochs=5, step=45, steps=45, elapsed=1.6, data_share=0.12, resumed_at=20
    )
    assert format_epoch_line(state) == (
        "Epoch 2/5 - 45 steps - 1.6s for steps 21-45 (64ms/step, data 12%)"
    )


_NOWS = {
    "loss": NowEstimate(0.2512, 0.2391, 0.2633),
    "accuracy": NowEstimate(0.94123, 0.92923, 0.95323),
}


def test_the_display_shows_each_now_value_with_its_interval_in_every_line():
    metrics = {"loss": (0.5, 0.2512), "accuracy": (0.8918, 0.94123)}
    spelled = "loss: 0.5000 (now 0.251 ±0.012) - accuracy: 0.8918 (now 0.941 ±0.012)"
    assert format_metrics(metrics, _NOWS) == spelled
    state = _wide_state(**metrics)
    state = ProgressState(**{**state.__dict__, "nows": _NOWS})
    assert format_step_line(state).endswith(f"data 36% - {spelled}")
    assert format_terminal(state, 80) == [_HEAD, spelled]
    narrow = format_terminal(state, 50)
    assert narrow[1:] == ["mean→now:  accuracy .8918→.941±.012", "loss .5000→.251±.012"]


def test_a_wide_now_interval_says_why_in_words_in_the_spelled_and_compact_display():
    nows = {
        "loss": NowEstimate(0.2512, 0.2391, 0.2633),
        "accuracy": NowEstimate(0.9, 0.82, 0.98, note="few batches yet"),
    }
    metrics = {"loss": (0.5, 0.2512), "accuracy": (0.8918, 0.9)}
    assert format_metrics(metrics, nows) == (
        "loss: 0.5000 (now 0.251 ±0.012) - accuracy: 0.8918 (now 0.90 ±0.08, uncertain: few "
        "batches yet)"
    )
    state = ProgressState(**{**_wide_state(**metrics).__dict__, "nows": nows})
    lines = format_terminal(state, 70)
    assert lines[1:] == [
        "mean→now:  loss .5000→.251±.012  accuracy .8918→.90±.08",
        "now uncertain: accuracy (few batches yet)",
    ]
    assert all(len(line) <= 70 for line in lines)
