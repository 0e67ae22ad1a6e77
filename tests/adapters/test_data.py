"""Batch sources: array shuffling, re-iteration, generator continuation, device moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fitlens.adapters.data import BatchSource, to_device, unpack


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


def test_floating_numpy_arrays_become_default_dtype_tensors_and_integers_keep_theirs():
    out = to_device({"a": np.zeros(2), "b": (np.zeros(2, np.int64),)}, torch.device("cpu"))
    assert out["a"].dtype == torch.float32 and out["b"][0].dtype == torch.int64


def test_a_batch_that_is_not_a_pair_gets_a_clear_error():
    with pytest.raises(ValueError, match=r"\(x, y\) pair. Received a 3-item tuple"):
        unpack((1, 2, 3), "train")
    assert unpack({"x": 1, "y": 2}, "train") == (1, 2)


def test_sample_weight_tuples_are_refused_with_a_hint():
    x = np.zeros((4, 1), np.float32)
    with pytest.raises(ValueError, match="sample weights"):
        BatchSource((x, x, x), name="train")
