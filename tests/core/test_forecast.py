"""The epoch-start jump forecast: exact lines, the check, the noise estimate, and no extra sync."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

import fitlens
from fitlens.core.forecast import (
    Forecast,
    ForecastCheck,
    batch_noise,
    check_forecast,
    format_check_line,
    format_forecast_line,
    make_forecast,
)


def forecast(tolerance=0.025):
    return Forecast("accuracy", 3, 3, reported=0.874, expected=0.921, tolerance=tolerance)


def test_forecast_line_announces_the_jump_from_the_mean_to_the_now_estimate():
    assert format_forecast_line(forecast()) == (
        "forecast epoch 3: its first 3 batches should show accuracy ~0.9210 ± 0.0250 "
        "(the now estimate), not 0.8740 (the mean): a jump of +0.0470"
    )


def test_check_line_says_as_forecast_within_the_tolerance():
    assert format_check_line(ForecastCheck(forecast(), 0.917)) == (
        "forecast check epoch 3: accuracy 0.9170 after 3 batches (jump +0.0430) vs forecast "
        "0.9210 ± 0.0250 (jump +0.0470): as forecast"
    )


def test_check_line_says_by_how_much_a_miss_was_off():
    assert format_check_line(ForecastCheck(forecast(), 0.86)).endswith(
        ": not as forecast (off by -0.0610)"
    )


def test_unknown_tolerance_is_left_out_and_never_counts_as_a_hit():
    f = forecast(math.nan)
    assert "±" not in format_forecast_line(f)
    assert not ForecastCheck(f, 0.921).as_forecast


def test_check_uses_the_sample_weighted_mean_of_the_first_batches_only():
    c = check_forecast(forecast(), np.array([1.0, 0.5, 0.0, 0.0]), np.array([10, 30, 20, 99]))
    assert c.observed == pytest.approx((10 * 1.0 + 30 * 0.5) / 60)


def test_batch_noise_ignores_a_steady_trend():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, size=2000)
    trending = np.linspace(0, 10, 2000) + noise
    assert batch_noise(trending) == pytest.approx(0.05, rel=0.1)
    assert math.isnan(batch_noise(np.array([1.0, 2.0])))


def test_tolerance_is_95_percent_of_the_noise_of_a_mean_of_the_first_steps():
    f = make_forecast("loss", 2, 0.5, 0.4, np.array([0.0, 1.0, 0.0, 1.0, 0.0]), steps=4)
    assert f.tolerance == pytest.approx(1.959964 * batch_noise(np.array([0, 1, 0, 1, 0.0])) / 2)
    assert f.jump == pytest.approx(-0.1)


def test_fit_forecasts_each_next_epoch_and_checks_it_without_an_extra_host_sync(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=20)
    batches = [(torch.from_numpy(x), torch.from_numpy(y))] * 40
    calls = {"n": 0}
    for name in ("item", "tolist", "cpu", "numpy", "__float__"):
        original = getattr(torch.Tensor, name)

        def wrapped(t, *a, _orig=original, **kw):
            calls["n"] += 1
            return _orig(t, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    out = io.StringIO()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    fitlens.fit(
        model,
        batches,
        loss="cross_entropy",
        optimizer="sgd",
        metrics=["accuracy"],
        epochs=2,
        verbose=fitlens.Progress(1, file=out, refresh_per_second=1e-6, log_fraction=1.0),
    )
    monkeypatch.undo()
    # per epoch: the step-1 refresh and the epoch-end flush; once per run, the first batch's
    # look at its outputs (logits or probabilities?); the forecast adds none
    assert calls["n"] == 2 * 2 + 1
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("forecast epoch 2: its first 3 batches should show accuracy ~")
    assert lines[2].startswith("forecast check epoch 2: accuracy ")
    assert lines[3].startswith("Epoch 2/2 - 40 steps")
    assert (
        len(lines) == 4
    )  # no validation, no train_eval: no gap line (nothing beyond the epoch line)
