"""The gap decomposition and its intervals: exact sums, known values, nominal coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fitlens.core.gap import (
    GapDecomposition,
    Measured,
    format_gap_line,
    normal_interval,
    wilson_interval,
)


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson_interval(0.9, 100)
    assert (round(low, 4), round(high, 4)) == (0.8256, 0.9448)


def test_wilson_interval_of_zero_successes_starts_at_zero_and_is_not_empty():
    low, high = wilson_interval(0.0, 50)
    assert low == 0.0 and 0.05 < high < 0.1


def test_measuring_the_whole_population_gives_a_zero_width_interval():
    assert wilson_interval(0.7, 500, population=500) == (0.7, 0.7)
    assert normal_interval(2.5, 1.0, 500, population=500) == (2.5, 2.5)


def test_no_samples_give_nan_intervals():
    assert all(math.isnan(b) for b in wilson_interval(0.5, 0))
    assert all(math.isnan(b) for b in normal_interval(1.0, math.nan, 10))


@given(st.floats(0.0, 1.0), st.integers(1, 10_000), st.integers(0, 10_000))
def test_wilson_interval_holds_the_estimate_and_shrinks_with_the_population_correction(p, n, extra):
    low, high = wilson_interval(p, n)
    assert 0.0 <= low <= p + 1e-12 and p - 1e-12 <= high <= 1.0
    c_low, c_high = wilson_interval(p, n, population=n + extra)
    assert c_high - c_low <= high - low + 1e-12


@given(
    st.floats(-1e3, 1e3),
    st.floats(0.0, 1e3),
    st.integers(2, 10_000),
)
def test_normal_interval_is_centred_on_the_mean_with_half_width_z_sd_over_root_n(mean, sd, n):
    low, high = normal_interval(mean, sd, n, z=2.0)
    assert (low + high) / 2 == pytest.approx(mean, abs=1e-9)
    assert (high - low) / 2 == pytest.approx(2.0 * sd / math.sqrt(n), rel=1e-9, abs=1e-12)


def _coverage(population: np.ndarray, n: int, interval, draws: int = 600) -> float:
    """How often the interval from a random subset of ``n`` covers the population mean."""
    rng = np.random.default_rng(1234)
    truth = population.mean()
    hits = 0
    for _ in range(draws):
        sample = rng.choice(population, size=n, replace=False)
        low, high = interval(sample)
        hits += low <= truth <= high
    return hits / draws


@pytest.mark.parametrize("n", [100, 400])
def test_wilson_intervals_cover_the_full_pass_accuracy_at_the_nominal_rate(n):
    rng = np.random.default_rng(0)
    correct = (rng.random(1437) < 0.87).astype(float)  # a fixed training set's per-sample hits
    cov = _coverage(
        correct, n, lambda s: wilson_interval(s.mean(), s.size, population=correct.size)
    )
    assert 0.90 <= cov <= 0.99


@pytest.mark.parametrize("n", [100, 400])
def test_normal_intervals_cover_the_full_pass_loss_at_the_nominal_rate(n):
    rng = np.random.default_rng(0)
    losses = rng.lognormal(-1.0, 1.0, size=2000)  # skewed, like per-sample cross-entropy
    cov = _coverage(
        losses,
        n,
        lambda s: normal_interval(s.mean(), s.std(ddof=1), s.size, population=losses.size),
    )
    assert 0.90 <= cov <= 0.99


def test_without_the_population_correction_large_subsets_over_cover():
    # The correction matters: half the population measured, the plain interval is too wide.
    rng = np.random.default_rng(0)
    correct = (rng.random(1000) < 0.8).astype(float)
    plain = _coverage(correct, 500, lambda s: wilson_interval(s.mean(), s.size))
    corrected = _coverage(
        correct, 500, lambda s: wilson_interval(s.mean(), s.size, population=1000)
    )
    assert plain > 0.99 and 0.90 <= corrected <= 0.99


def _measured_chain(reported=0.874, train=0.921, evaluated=0.93, val=0.915):
    return GapDecomposition(
        metric="accuracy",
        reported=reported,
        now=0.9105,
        train_mode=Measured(train, 0.905, 0.935, 718),
        eval_mode=Measured(evaluated, 0.915, 0.943, 718),
        validation=Measured(val, 0.88, 0.94, 360),
    )


@given(st.lists(st.floats(-1e3, 1e3), min_size=4, max_size=4))
def test_the_three_parts_add_up_to_validation_minus_reported(values):
    reported, train, evaluated, val = values
    d = _measured_chain(reported, train, evaluated, val)
    parts = d.parts()
    assert list(parts) == ["averaging_lag", "mode_effect", "generalisation"]
    assert sum(parts.values()) == pytest.approx(val - reported, rel=1e-12, abs=1e-9)
    assert d.total == val - reported


def test_the_estimated_chain_splits_validation_minus_reported_at_the_now_estimate():
    d = GapDecomposition("loss", reported=0.5, now=0.4, validation=Measured(0.45, 0.4, 0.5, 100))
    assert d.estimated
    assert d.parts() == pytest.approx({"averaging_lag": -0.1, "rest": 0.05})
    assert sum(d.parts().values()) == pytest.approx(d.total)
    assert math.isnan(d.mode_effect) and math.isnan(d.generalisation)


def test_measured_gap_line_names_every_step_with_its_interval():
    assert format_gap_line(_measured_chain()) == (
        "gap accuracy: mean 0.8740 -> train mode 0.9210 [0.9050, 0.9350] (lag +0.0470) -> "
        "eval mode 0.9300 [0.9150, 0.9430] (dropout/BN +0.0090) -> "
        "val 0.9150 [0.8800, 0.9400] (generalisation -0.0150)"
    )


def test_estimated_gap_line_says_estimated_and_lumps_mode_and_generalisation():
    d = GapDecomposition(
        "accuracy", reported=0.874, now=0.921, validation=Measured(0.915, 0.88, 0.94, 360)
    )
    assert format_gap_line(d) == (
        "gap accuracy (estimated): mean 0.8740 -> now ~0.9210 (lag ~+0.0470) -> "
        "val 0.9150 [0.8800, 0.9400] (mode + generalisation ~-0.0060)"
    )


def test_gap_line_without_validation_stops_at_eval_mode_and_shows_unknown_intervals_bare():
    d = GapDecomposition(
        "loss",
        reported=0.5,
        now=0.45,
        train_mode=Measured(0.44),
        eval_mode=Measured(0.4, 0.38, 0.42, 100),
    )
    assert format_gap_line(d) == (
        "gap loss: mean 0.5000 -> train mode 0.4400 (lag -0.0600) -> "
        "eval mode 0.4000 [0.3800, 0.4200] (dropout/BN -0.0400)"
    )
    assert math.isnan(d.total)


def test_values_measured_on_all_the_training_data_are_shown_without_an_interval():
    d = GapDecomposition(
        "accuracy", 0.5, 0.6, Measured(0.7, 0.7, 0.7, 1437), Measured(0.72, 0.72, 0.72, 1437)
    )
    assert format_gap_line(d) == (
        "gap accuracy: mean 0.5000 -> train mode 0.7000 (lag +0.2000) -> "
        "eval mode 0.7200 (dropout/BN +0.0200)"
    )


def test_to_dict_holds_values_intervals_and_parts():
    out = _measured_chain().to_dict()
    assert out["estimated"] is False
    assert out["train_mode"] == {"value": 0.921, "low": 0.905, "high": 0.935, "n": 718}
    assert out["averaging_lag"] == pytest.approx(0.047)
    assert out["total"] == pytest.approx(0.041)
