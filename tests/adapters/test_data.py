"""Batch sources: array shuffling, re-iteration, generator continuation, device moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitlens.adapters.data import BatchSource, to_device, unpack, unpack_weighted


def test_arrays_are_shuffled_each_epoch_and_cover_every_sample_once():
    x = np.arange(10, dtype=np.float32)[:, None]
    src = BatchSource((x, np.arange(10)), name="train", batch_size=4)
    assert src.steps == 3
    epochs = [[int(v) for _, yb in src.epoch() for v in yb] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(10))
    assert epochs[0] != epochs[1]


def test_array_shuffling_follows_torch_manual_seed():
    x, y = np.zeros((50, 1), np.float32), np.arange(50)
    orders = []
    for _ in range(2):
        torch.manual_seed(3)
        src = BatchSource((x, y), name="train", batch_size=10)
        orders.append([int(v) for _, yb in src.epoch() for v in yb])
    assert orders[0] == orders[1]


def test_steps_per_epoch_limits_a_reiterable_pass():
    src = BatchSource([(1, 1)] * 5, name="train", steps=2)
    assert src.steps == 2 and len(list(src.epoch())) == 2


def test_reiterable_without_len_has_unknown_steps():
    class Stream:
        def __iter__(self):
            return iter([(1, 1)] * 3)

    src = BatchSource(Stream(), name="train")
    assert src.steps is None and len(list(src.epoch())) == 3


def test_numpy_arrays_become_tensors_of_their_own_dtype():
    # float64 is cast later, by the one float64 rule (adapters/dtypes.py), for every data form
    out = to_device({"a": np.zeros(2), "b": (np.zeros(2, np.int64),)}, torch.device("cpu"))
    assert out["a"].dtype == torch.float64 and out["b"][0].dtype == torch.int64


def test_a_batch_that_is_not_a_pair_gets_a_clear_error():
    with pytest.raises(ValueError, match=r"\(x, y\) pair or an \(x, y, w\) triple .* 4-item"):
        unpack_weighted((1, 2, 3, 4), "train")
    assert unpack({"x": 1, "y": 2}, "train") == (1, 2)


def test_weighted_batches_unpack_into_three_parts():
    assert unpack_weighted((1, 2, 3), "train") == (1, 2, 3)
    assert unpack_weighted((1, 2), "train") == (1, 2, None)
    assert unpack_weighted({"x": 1, "y": 2, "sample_weight": 3}, "train") == (1, 2, 3)


def test_array_triples_serve_their_weights_with_each_batch():
    x = np.arange(6, dtype=np.float32)[:, None]
    src = BatchSource((x, np.arange(6), np.arange(6) * 10.0), name="train", batch_size=4)
    for xb, yb, wb in src.epoch():
        np.testing.assert_array_equal(wb, yb * 10.0)
        np.testing.assert_array_equal(xb[:, 0], yb)


def test_sample_weight_goes_with_arrays_only():
    x = np.zeros((4, 1), np.float32)
    with pytest.raises(ValueError, match=r"`sample_weight=` goes with arrays .* yield \(x, y, w\)"):
        BatchSource([(x, x)], name="train", sample_weight=np.ones(4))
    # (x, y, w) validation arrays are Keras's (x_val, y_val, val_sample_weights)
    weighted = BatchSource((x, x, x[:, 0]), name="validation_data")
    assert len(next(weighted.epoch())) == 3


def test_shuffle_false_serves_arrays_in_order_every_epoch():
    src = BatchSource((np.zeros((10, 1)), np.arange(10)), name="train", batch_size=4, shuffle=False)
    for _ in range(2):
        assert [int(v) for _, yb in src.epoch() for v in yb] == list(range(10))
    with pytest.raises(TypeError, match="`shuffle` to be True or False"):
        BatchSource((np.zeros((4, 1)), np.arange(4)), name="train", shuffle="no")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(8, 2)), 4),
            r"`train` is a DataLoader \(its batch_size=4\)",
        ),
        ([(np.zeros((2, 1)), np.zeros(2))], "`train` is a list"),
        (iter([(np.zeros((2, 1)), np.zeros(2))]), "`train` is a list_iterator"),
    ],
)
def test_batch_size_with_data_that_batches_itself_is_an_error_naming_both(data, says):
    with pytest.raises(ValueError, match=r"`batch_size=64` applies to arrays, but " + says):
        BatchSource(data, name="train", batch_size=64, steps=1)


def test_a_list_x_y_is_refused_with_pass_a_tuple():
    x, y = np.zeros((4, 2), np.float32), np.zeros(4)
    with pytest.raises(
        TypeError, match=r"Received a list of 2 arrays.*Pass a tuple: train=\(x, y\)"
    ):
        BatchSource([x, y], name="train")


def test_a_list_of_two_batches_is_still_a_list_of_batches():
    x, y = np.zeros((4, 2), np.float32), np.zeros(4)
    src = BatchSource([(x, y), (x, y)], name="train")
    assert src.kind == "iterable" and src.steps == 2
