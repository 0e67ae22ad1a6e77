"""One float64 rule for arrays, tensors and loaders: cast to the model's dtype, warn once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fitlens
from fitlens.adapters.dtypes import Float64Cast, input_dtype

RNG = np.random.RandomState(0)
X64 = RNG.randn(32, 3)
Y = (X64[:, 0] > 0).astype(np.int64)


def _fit(train, model_dtype=torch.float32, **kw):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).to(model_dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = fitlens.fit(
            model,
            train,
            loss="cross_entropy",
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=2,
            verbose=0,
            **kw,
        )
    said = [str(w.message) for w in caught if "float64" in str(w.message)]
    return h, said


def test_float64_arrays_tensors_and_loaders_train_alike_with_one_warning_each():
    t64, ty = torch.from_numpy(X64), torch.from_numpy(Y)
    runs = {
        "arrays": _fit((X64, Y), batch_size=8, shuffle=False),
        "tensors": _fit((t64, ty), batch_size=8, shuffle=False),
        "loader": _fit(DataLoader(TensorDataset(t64, ty), batch_size=8)),
    }
    reference, none = _fit((X64.astype(np.float32), Y), batch_size=8, shuffle=False)
    assert none == []
    for name, (h, said) in runs.items():
        assert len(said) == 1, name
        assert "`train` holds float64 tensors" in said[0] and "torch.float32" in said[0]
        # the cast is the same float64 -> float32 rounding as converting beforehand
        assert h.history["loss"] == reference.history["loss"], name


def test_float64_validation_data_is_cast_by_the_same_rule():
    t64, ty = torch.from_numpy(X64), torch.from_numpy(Y)
    loader = DataLoader(TensorDataset(t64, ty), batch_size=8)
    h, said = _fit(loader, validation_data=loader)
    assert np.isfinite(h.history["val_loss"][-1])
    assert any("`validation_data` holds float64" in s for s in said)


def test_a_float64_model_keeps_float64_inputs_and_says_nothing():
    h, said = _fit((X64, Y), model_dtype=torch.float64, batch_size=8)
    assert said == [] and np.isfinite(h.history["loss"][-1])


def test_the_cast_leaves_integers_and_other_floats_alone():
    cast = Float64Cast(torch.float32, "train")
    batch = {"a": torch.zeros(2, dtype=torch.float64), "b": (torch.zeros(2, dtype=torch.float16),)}
    with pytest.warns(UserWarning, match="float64"):
        out = cast(batch)
    assert out["a"].dtype == torch.float32 and out["b"][0].dtype == torch.float16
    assert cast(torch.arange(3)).dtype == torch.int64
    assert input_dtype(torch.nn.Linear(2, 2).to(torch.bfloat16)) == torch.bfloat16
