"""`fitlens.predict`: stacked outputs in the model's structure, eval mode under inference_mode,
the modules' modes put back, fit's display for long passes only."""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fitlens

X = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)
    )


def _by_hand(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def test_outputs_are_the_eval_mode_outputs_batch_by_batch_in_order():
    model = _net()
    out = fitlens.predict(model, X, batch_size=16, verbose=0)
    assert out.shape == (50, 3) and out.device.type == "cpu" and not out.requires_grad
    assert torch.equal(out, _by_hand(model, X, 16))  # dropout off, batch-norm running stats


def test_the_modules_modes_are_put_back_a_frozen_batch_norm_included():
    model = _net()
    model.train()
    model[1].eval()  # the user froze batch-norm
    running = model[1].running_mean.clone()
    fitlens.predict(model, X, verbose=0)
    assert model.training and model[0].training and not model[1].training
    assert torch.equal(model[1].running_mean, running)  # nothing updated


def test_loaders_and_generators_give_their_inputs_and_ignore_targets_and_weights():
    model, y = _net(), torch.arange(50)
    expected = _by_hand(model, X, 10)
    forms = {
        "loader of (x, y)": DataLoader(TensorDataset(X, y), batch_size=10),
        "loader of (x,)": DataLoader(TensorDataset(X), batch_size=10),
        "list of (x, y, w)": [
            (X[i : i + 10], y[i : i + 10], y[i : i + 10]) for i in range(0, 50, 10)
        ],
    }
    for name, data in forms.items():
        assert torch.equal(fitlens.predict(model, data, verbose=0), expected), name
    generator = (X[i : i + 10] for i in range(0, 50, 10))
    assert torch.equal(fitlens.predict(model, generator, steps=5, verbose=0), expected)
    prefetched = fitlens.predict(model, forms["loader of (x, y)"], prefetch=2, verbose=0)
    assert torch.equal(prefetched, expected)


class Pair(NamedTuple):
    logits: torch.Tensor
    features: torch.Tensor


class Heads(torch.nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind, self.body = kind, torch.nn.Linear(4, 2)

    def forward(self, x):
        z = self.body(x)
        if self.kind == "tuple":
            return z, z.sum(1)
        if self.kind == "namedtuple":
            return Pair(z, z * 2)
        return {"z": z, "nested": (z[:, 0],)}


@pytest.mark.parametrize("kind", ["tuple", "namedtuple", "dict"])
def test_tuple_namedtuple_and_dict_outputs_are_stacked_in_their_structure(kind):
    torch.manual_seed(0)
    model = Heads(kind)
    out = fitlens.predict(model, X, batch_size=7, verbose=0)
    with torch.no_grad():
        z = model.body(X)
    if kind == "tuple":
        assert isinstance(out, tuple) and out[0].shape == (50, 2) and out[1].shape == (50,)
        torch.testing.assert_close(out[1], z.sum(1))
    elif kind == "namedtuple":
        assert isinstance(out, Pair)
        torch.testing.assert_close(out.features, z * 2)
    else:
        assert set(out) == {"z", "nested"} and out["nested"][0].shape == (50,)
        torch.testing.assert_close(out["z"], z)


def test_bad_input_fails_before_the_first_batch():
    loader = DataLoader(TensorDataset(X), batch_size=10)
    with pytest.raises(ValueError, match=r"`batch_size=64` applies to arrays, but `data` is a"):
        fitlens.predict(_net(), loader, batch_size=64)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        fitlens.predict(lambda x: x, X)
    with pytest.raises(ValueError, match="steps"):
        fitlens.predict(_net(), iter([X]))


def test_float64_inputs_follow_fits_rule():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fitlens.predict(_net(), X.double().numpy(), verbose=0)
    assert out.dtype == torch.float32
    assert sum("float64" in str(w.message) for w in caught) == 1


class Ticking:
    def __init__(self, tick: float) -> None:
        self.t, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


def test_a_long_pass_shows_progress_through_fits_display_and_a_short_one_nothing():
    log = io.StringIO()
    progress = fitlens.Progress(1, file=log, mode="lines", log_fraction=0.5)
    fitlens.predict(_net(), X, batch_size=5, verbose=progress, clock=Ticking(0.4))
    lines = log.getvalue().splitlines()
    assert any(line.startswith("Epoch 1/1 - 5/10") for line in lines)  # half-way line
    assert lines[-1].startswith("Epoch 1/1 - 10 steps")
    quiet = io.StringIO()
    fitlens.predict(
        _net(), X, batch_size=5, verbose=fitlens.Progress(1, file=quiet), clock=Ticking(0.01)
    )
    assert quiet.getvalue() == ""
    assert np.isfinite(fitlens.predict(_net(), X, verbose=0).numpy()).all()
