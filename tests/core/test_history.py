"""History and BatchLog: Keras-style per-epoch dict, compact per-batch columns, CSV for pandas."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fitlens.core.history import BatchLog, History


def _rows(n, start=0):
    return {
        "epoch": np.ones(n),
        "step": np.arange(start + 1, start + n + 1),
        "size": np.full(n, 32),
        "step_time": np.full(n, 0.01),
        "data_time": np.full(n, 0.002),
        "loss": np.linspace(1, 0, n),
    }


def test_batch_log_grows_past_its_capacity_and_keeps_every_row():
    log = BatchLog(["loss"], capacity=4)
    for i in range(10):
        log.append(_rows(3, start=3 * i))
    assert len(log) == 30
    assert log["step"].tolist() == list(range(1, 31))


def test_a_block_of_rows_appended_from_arrays_is_stored_as_append_stores_the_same_rows():
    """`MetricStream` appends each flush with `append_block` (no checks): every column, its
    dtype and its growth past the capacity must be what `append` gives."""
    rng = np.random.default_rng(0)
    block, rows = BatchLog(["loss", "accuracy"], capacity=4), BatchLog(["loss", "accuracy"], 4)
    for start in (0, 3, 10):
        n = 7
        steps, sizes = np.arange(start + 1, start + n + 1), np.full(n, 32.0)
        times, waits, values = rng.random(n), rng.random(n), rng.random((n, 2))
        block.append_block(2, steps, sizes, times, waits, values)
        rows.append(
            {
                "epoch": np.full(n, 2),
                "step": steps,
                "size": sizes,
                "step_time": times,
                "data_time": waits,
                "loss": values[:, 0],
                "accuracy": values[:, 1],
            }
        )
    assert len(block) == len(rows) == 21
    for column in rows.columns:
        np.testing.assert_array_equal(block[column], rows[column], strict=True)


def test_batch_log_columns_are_read_only_views():
    log = BatchLog(["loss"])
    log.append(_rows(2))
    with pytest.raises(ValueError):
        log["loss"][0] = 5.0


def test_batch_log_rejects_missing_columns_and_clashing_metric_names():
    log = BatchLog(["loss"])
    with pytest.raises(ValueError, match="Expected values for columns"):
        log.append({"loss": [1.0]})
    with pytest.raises(ValueError, match="clashes"):
        BatchLog(["step"])


def test_batch_log_stores_a_million_steps_in_well_under_100_mb():
    log = BatchLog(["loss", "accuracy"])
    n = 1_000_000
    rows = _rows(n)
    rows["accuracy"] = rows["loss"]
    log.append(rows)
    assert log.nbytes < 50 * 2**20


def test_batch_log_csv_round_trips_through_pandas(tmp_path):
    log = BatchLog(["loss"])
    log.append(_rows(5))
    frame = pd.read_csv(log.to_csv(tmp_path / "b.csv"))
    assert list(frame.columns) == log.columns
    np.testing.assert_allclose(frame["loss"], log["loss"])


def test_history_pads_keys_that_appear_later_with_nan():
    h = History(["loss"])
    h.record_epoch(0, {"loss": 1.0}, {"time": 1.0})
    h.record_epoch(1, {"loss": 0.5, "val_loss": 0.6}, {"time": 1.0})
    assert h.history["loss"] == [1.0, 0.5]
    assert math.isnan(h.history["val_loss"][0]) and h.history["val_loss"][1] == 0.6
    assert h.epoch == [0, 1]


def test_history_csv_has_one_row_per_epoch_and_loads_with_pandas(tmp_path):
    h = History(["loss"])
    h.record_epoch(0, {"loss": 1.0, "loss_now": 0.8}, {"time": 2.0, "data_wait": 0.5})
    h.record_epoch(1, {"loss": 0.5, "loss_now": 0.4}, {"time": 2.0, "data_wait": 0.5})
    frame = pd.read_csv(h.to_csv(tmp_path / "h.csv"))
    assert frame["epoch"].tolist() == [1, 2]
    assert frame["loss_now"].tolist() == [0.8, 0.4]
    assert frame["time_s"].tolist() == [2.0, 2.0]


def test_history_json_writes_nan_as_null():
    h = History(["loss"], params={"epochs": 1})
    h.record_epoch(0, {"loss": math.nan}, {})
    data = json.loads(h.to_json())
    assert data["epochs"]["loss"] == [None] and data["params"] == {"epochs": 1}


def test_state_dict_round_trips_the_records_a_checkpoint_keeps():
    h = History(["loss"], params={"epochs": 2})
    h.batches.append(
        {
            "epoch": np.array([1, 1]),
            "step": np.array([1, 2]),
            "size": np.array([8.0, 4.0]),
            "step_time": np.array([0.5, 0.25]),
            "data_time": np.array([0.125, 0.0625]),
            "loss": np.array([0.75, 0.5]),
        }
    )
    h.record_epoch(0, {"loss": 0.6666, "loss_now": 0.5}, {"time": 1.0})
    copy = History(["loss"])
    copy.load_state_dict(h.state_dict())
    assert copy.history == h.history and copy.timing == h.timing and copy.epoch == [0]
    for column in h.batches.columns:
        np.testing.assert_array_equal(copy.batches[column], h.batches[column], strict=True)
    copy.load_state_dict(History(["loss"]).state_dict())  # an empty record empties it
    assert len(copy.batches) == 0 and copy.history == {} and copy.epoch == []
