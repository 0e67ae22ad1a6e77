"""`MetricRange`: bounds a metric declares, and the ranges of the built-in names."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fitlens.core.metric_range import NONNEGATIVE, RATE, UNBOUNDED, MetricRange, for_name


@given(st.floats(allow_nan=False))
def test_clip_keeps_values_inside_and_moves_the_rest_to_the_nearest_bound(x):
    assert RATE.clip(x) == min(max(x, 0.0), 1.0)
    assert NONNEGATIVE.clip(x) == max(x, 0.0)
    assert UNBOUNDED.clip(x) == x


def test_clip_keeps_nan_so_that_a_nan_estimate_stays_visible():
    assert math.isnan(RATE.clip(math.nan))


def test_accuracies_are_rates_losses_are_nonnegative_and_anything_else_unbounded():
    for name in ("accuracy", "val_accuracy", "acc", "sparse_categorical_accuracy"):
        assert for_name(name) == RATE, name
    for name in ("loss", "val_loss", "mse", "mean_absolute_error", "kl_loss"):
        assert for_name(name) == NONNEGATIVE, name
    for name in ("f1", "r2", "val_my_metric"):
        assert for_name(name) == UNBOUNDED, name


def test_bad_ranges_are_refused_with_what_was_received():
    with pytest.raises(ValueError, match=r"low <= high.*low=1\.0, high=0\.0"):
        MetricRange(1.0, 0.0)
    with pytest.raises(ValueError, match="low <= high"):
        MetricRange(math.nan, 1.0)
    with pytest.raises(ValueError, match=r"lies in \[0, 1\].*high=2\.0"):
        MetricRange(0.0, 2.0, rate=True)


def test_the_named_ranges_print_by_name_and_others_by_their_fields():
    assert [repr(r) for r in (RATE, NONNEGATIVE, UNBOUNDED)] == [
        "RATE",
        "NONNEGATIVE",
        "UNBOUNDED",
    ]
    assert repr(MetricRange(-1.0, 1.0)) == "MetricRange(-1.0, 1.0, rate=False)"
    assert RATE.bounded and NONNEGATIVE.bounded and not UNBOUNDED.bounded
    assert MetricRange(-math.inf, 0.0).bounded
