"""One number formatter: the bar, the epoch line, the gap and forecast lines print a value alike."""

from __future__ import annotations

import math

import pytest

from fitlens.core.forecast import format_forecast_line, make_forecast
from fitlens.core.gap import GapDecomposition, Measured, format_gap_line
from fitlens.core.numbers import format_interval, format_value, signed_value
from fitlens.view.progress import ProgressState, format_epoch_line


def test_a_small_value_prints_the_same_in_the_epoch_line_the_gap_line_and_the_forecast():
    small = 4e-5
    epoch_line = format_epoch_line(
        ProgressState(
            epoch=1, epochs=2, step=4, steps=4, elapsed=1.0, metrics={"loss": (small, small)}
        )
    )
    gap_line = format_gap_line(
        GapDecomposition(metric="loss", reported=small, now=small, validation=Measured(0.5))
    )
    forecast_line = format_forecast_line(make_forecast("loss", 2, small, small, [small] * 4, 3))
    assert "4.0000e-05" in epoch_line
    assert "mean 4.0000e-05 -> now ~4.0000e-05" in gap_line  # not 0.0000
    assert "should show loss ~4.0000e-05" in forecast_line


def test_signed_values_carry_a_plus_for_non_negative_numbers_only():
    assert [signed_value(x) for x in (0.0, 0.25, -0.25, -4e-5, math.inf)] == [
        "+0.0000",
        "+0.2500",
        "-0.2500",
        "-4.0000e-05",
        "+inf",
    ]
    assert format_value(-math.inf, signed=True) == "-inf"


@pytest.mark.parametrize(
    ("interval", "shown"),
    [
        ((0.94123, 0.92923, 0.95323), ("0.941", "±0.012")),  # two digits of the half-width
        ((0.9412, 0.8912, 0.9912), ("0.94", "±0.05")),  # no 4 decimals under a ±0.05
        ((0.9412, 0.9400, 0.9424), ("0.9412", "±0.0012")),  # at most Keras's 4 decimals
        ((12.3456, 9.3456, 15.3456), ("12.3", "±3.0")),
        ((1234.5, 1000.5, 1468.5), ("1234", "±234")),
        ((0.995, 0.98, 1.0), ("0.995", "[0.980, 1.000]")),  # cut by the range: both ends said
        ((0.5, 0.5, 0.5), ("0.5000", "±0.0000")),
        ((0.305, 0.0, math.inf), ("0.3050", "±?")),  # width unknown yet
        ((0.305, math.nan, math.nan), ("0.3050", "")),  # no interval recorded
        ((4e-5, 2e-5, 6e-5), ("4.0000e-05", "±2.0e-05")),  # Keras's rule for small values
    ],
)
def test_an_interval_sets_the_decimals_of_its_value(interval, shown):
    assert format_interval(*interval) == shown
