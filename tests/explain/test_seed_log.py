"""The seed log from the forum (Keras 2 ``fit_generator``, steps 1-3 and 404-406 only).

What the log can prove, worked by hand:

* epoch 1 -> 2, ``acc``: shown mean 0.8918, next start 0.9424 (+0.0506). The last two batches
  of epoch 1 averaged (406·0.8918 − 404·0.8917)/2 = 0.9120 ± 0.0203, so lag explains 0% to 80%:
  the log cannot tell.
* epoch 2 -> 3, ``acc``: epoch 2's batches 4-406 averaged 0.9328, below its first three (0.9408):
  its level did not rise, so the jump to 0.9756 is not averaging lag.
* ``loss`` 1 -> 2: the last two batches averaged 0.2933 ± 0.0203 against a shown 0.3539, so lag
  explains 29%-58% of the −0.1387 drop: mixed. ``loss`` 2 -> 3: at most 19%: not lag.
"""

from __future__ import annotations

import json

import pytest

from fitlens.explain.command import main

from .seed import SEED


@pytest.fixture
def report(capsys) -> dict:
    assert main([str(SEED), "--json", "--windows"]) == 0
    return json.loads(capsys.readouterr().out)


def _boundary(report: dict, metric: str, from_epoch: int) -> dict:
    (b,) = [
        b for b in report["boundaries"] if b["metric"] == metric and b["from_epoch"] == from_epoch
    ]
    return b


def test_the_seed_log_has_three_epochs_one_per_fit_call(report):
    assert [e["header"] for e in report["epochs"]] == ["Epoch 1/1"] * 3
    assert [e["last_step"] for e in report["epochs"]] == [406, 406, 406]
    assert report["input"]["other_lines"] == 3  # the user's "train_model::" lines


def test_epoch_one_to_two_accuracy_cannot_be_decided_from_the_log(report):
    b = _boundary(report, "acc", 1)
    assert b["shown_end_mean"] == 0.8918 and b["next_start"] == 0.9424
    assert b["jump"] == pytest.approx(0.0506)
    assert (b["end_level"]["first_batch"], b["end_level"]["last_batch"]) == (405, 406)
    assert b["end_level"]["value"] == pytest.approx(0.912, abs=1e-4)
    assert b["lag_explains"]["fraction_low"] == pytest.approx(0.0, abs=0.01)
    assert b["lag_explains"]["fraction_high"] == pytest.approx(0.80, abs=0.01)
    assert (b["verdict"], b["reason"]) == ("unknown", "inconclusive")


def test_epoch_two_to_three_accuracy_is_not_averaging_lag(report):
    b = _boundary(report, "acc", 2)
    assert b["jump"] == pytest.approx(0.0427)
    assert b["trend"] == "flat_or_away"
    assert (b["verdict"], b["reason"]) == ("not_averaging_lag", "flat_level")


def test_loss_jumps_are_mixed_then_not_lag(report):
    assert _boundary(report, "loss", 1)["verdict"] == "mixed"
    assert _boundary(report, "loss", 2)["verdict"] == "not_averaging_lag"


def test_the_middle_of_each_epoch_is_reconstructed_tightly(report):
    windows = report["epochs"][0]["metrics"]["acc"]["windows"]
    assert [(w["first_batch"], w["last_batch"]) for w in windows] == [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 406),
    ]
    assert windows[1]["value"] == pytest.approx(2 * 0.6587 - 0.5996)
    assert windows[3]["high"] - windows[3]["low"] < 2e-4


def test_the_text_report_names_the_causes_a_forum_user_can_check(capsys):
    assert main([str(SEED)]) == 0
    text = capsys.readouterr().out
    assert "Epoch 2 -> 3" in text
    assert "not averaging lag" in text
    assert "generator restarting at the same first batches" in text
    assert "the log cannot tell more" in text
