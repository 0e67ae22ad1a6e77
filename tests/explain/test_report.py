"""The pure formatters, tested against exact strings."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fitlens.explain.analysis import Options
from fitlens.explain.command import explain_stream
from fitlens.explain.epochs import Shown
from fitlens.explain.jumps import Boundary
from fitlens.explain.reconstruct import Window
from fitlens.explain.report import (
    EpochSummary,
    JsonText,
    MetricSummary,
    _outward,
    bottom_line,
    boundary_json,
    epoch_json,
    fmt,
    fmt_bound,
    pct,
)
from fitlens.explain.writer import Explained, render_text, to_json

LOG = (
    b"Epoch 1/1\n"
    b"  1/406 [....] - ETA: 11726s - loss: 0.7993 - acc: 0.5996\n"
    b"  2/406 [....] - ETA: 11237s - loss: 0.7260 - acc: 0.6587\n"
    b"  3/406 [....] - ETA: 14136s - loss: 0.6619 - acc: 0.7279\n"
    b"404/406 [===.] - ETA: 53s - loss: 0.3542 - acc: 0.8917\n"
    b"405/406 [===.] - ETA: 26s - loss: 0.3541 - acc: 0.8917\n"
    b"406/406 [====] - 10798s - loss: 0.3539 - acc: 0.8918\n"
    b"Epoch 1/1\n"
    b"  1/406 [....] - ETA: 15158s - loss: 0.2152 - acc: 0.9424\n"
)


def _explained() -> Explained:
    return explain_stream(io.BytesIO(LOG), "seed.log", Options())


def test_numbers_are_formatted_like_keras_prints_them():
    assert fmt(0.89184) == "0.8918"
    assert fmt(5e-4) == "5.0000e-04"
    assert fmt(-0.25) == "-0.2500"
    assert fmt(0.0) == "0.0000"


def test_the_accuracy_boundary_reads_as_plain_words_with_numbers():
    text = render_text(_explained())
    assert (
        "  acc: epoch 1 ended at a shown mean of 0.8918; epoch 2 starts at 0.9424 "
        "(first values: 0.9424 at 1): a jump of +0.0506.\n"
        "    Near the end of epoch 1, batches 405-406 averaged 0.9120 "
        "(between 0.8917 and 0.9323).\n"
        "    Averaging lag explains -0.0001 to +0.0405 of it (0.0%-80.1% of the jump).\n"
    ) in text


def test_json_report_is_plain_data_with_the_schema_tag():
    report = to_json(_explained())
    assert report["schema"] == "fitlens.explain/2"
    assert report["input"]["progress_lines"] == 7
    (acc,) = [b for b in report["boundaries"] if b["metric"] == "acc"]
    assert acc["end_level"]["first_batch"] == 405


@settings(derandomize=True)
@example(5.126741645498083e-11)
@given(st.floats(0.0, 1.0))
def test_a_shown_percentage_is_on_the_same_side_of_each_rule_as_the_fraction(fraction):
    low, high = float(pct(fraction, up=False)[:-1]), float(pct(fraction, up=True)[:-1])
    # pct() ignores float noise below half a millionth of its last digit (0.1%) before
    # rounding outwards: the shown range may miss the fraction by that much, no more.
    noise = 0.5e-6 * 0.1
    assert low <= fraction * 100 + noise and fraction * 100 - noise <= high
    for rule in (25.0, 75.0):
        # Rounding the low end down never claims a rule the fraction misses, and the reader
        # sees the fraction's side of it unless it is within that noise of the rule.
        if abs(fraction * 100 - rule) > noise:
            assert (low >= rule) == (fraction * 100 >= rule)
            assert (high <= rule) == (fraction * 100 <= rule)


@settings(derandomize=True)
@example(5e-324)
@example(2.2250738585072014e-308)
@example(-9.99996e-05)
@given(st.floats(-1e6, 1e6, allow_nan=False))
def test_a_shown_bound_rounded_outwards_still_holds(x):
    # fmt_bound ignores float noise below half a millionth of its last digit (1e-4, or the
    # fourth decimal of the mantissa): the shown bound may miss x by that much, no more.
    noise = 0.5e-6 * 1e-4 * (1.0 + abs(x))
    assert float(fmt_bound(x, up=False)) <= x + noise
    assert float(fmt_bound(x, up=True)) >= x - noise


def test_the_verdict_rules_are_checkable_at_the_digits_shown():
    assert pct(0.748, up=False) == "74.8%"  # the case: just under the 75% rule
    assert pct(0.7499999, up=False) == "74.9%"
    assert pct(0.75, up=False) == "75.0%"
    assert pct(0.2500001, up=True) == "25.1%"


def test_a_metric_that_does_not_jump_gets_a_bottom_line_but_no_paragraph():
    log = (
        b"Epoch 1/2\n 1/4 [..] - ETA: 1s - loss: 0.5000 - acc: 0.5000\n"
        b" 4/4 [==] - 1s - loss: 0.5000 - acc: 0.6000\n"
        b"Epoch 2/2\n 1/4 [..] - ETA: 1s - loss: 0.5000 - acc: 0.9000\n"
    )
    text = render_text(explain_stream(io.BytesIO(log), "x", Options()))
    assert "  epoch 1 -> 2, loss +0.0000: no jump beyond the display's rounding\n" in text
    assert "  acc: epoch 1 ended" in text
    assert "  loss: epoch 1 ended" not in text


@settings(derandomize=True, max_examples=2000, deadline=None)
@given(
    st.one_of(
        st.floats(-1e12, 1e12, allow_nan=False),
        st.builds(
            lambda n, eps: n + eps,
            st.integers(-(10**9), 10**9),
            st.sampled_from([0.0, 1e-7, -1e-7, 5e-7, -5e-7, 1e-6, -1e-6, 2e-6, -2e-6, 3e-6]),
        ),
    ),
    st.booleans(),
)
def test_outward_rounding_is_the_ceil_or_floor_of_the_value_rounded_to_a_millionth(y, up):
    # The fast path must give exactly what the slow decimal rounding gives, near integers too.
    assert _outward(y, up) == (math.ceil if up else math.floor)(round(y, 6))


#: Finite floats of every kind the report holds: any sign, signed zeros, tiny and huge.
_finite = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 5e-324, -1e-300, 0.1, 1e30]),
)
#: Window bounds may be unbounded (JSON null).
_bound = st.one_of(_finite, st.sampled_from([math.inf, -math.inf]))
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_windows = st.builds(
    Window, st.integers(-5, 10**12), st.integers(-5, 10**12), _bound, _bound, _bound
)
_shown = st.builds(Shown, st.integers(0, 10**12), _finite, _finite)
_metrics = st.builds(
    MetricSummary,
    _text,
    st.sampled_from(["running_mean", "cumulative", "end_of_epoch"]),
    st.integers(0, 10**6),
    _shown,
    _shown,
    st.none() | _windows,
    st.none() | st.integers(0, 10**6),
    st.lists(_windows, max_size=3).map(tuple),
    full=st.none(),
)
_epochs = st.builds(
    EpochSummary,
    st.integers(1, 10**6),
    st.none() | _text,
    st.booleans(),
    st.none() | st.integers(1, 10**12),
    st.integers(0, 10**12),
    st.booleans(),
    st.sampled_from(["step", "sample"]),
    st.sampled_from(["bracket", "keras3", "summary"]),
    st.sampled_from(["counter", "samples", "counter_or_samples"]),
    st.sampled_from(["exact", "known", "any"]),
    st.booleans(),
    st.dictionaries(_text, _metrics, max_size=3),
)
_boundaries = st.builds(
    Boundary,
    _text,
    st.integers(1, 10**6),
    _finite,
    _finite,
    _finite,
    _windows,
    _windows,
    _bound,
    _bound,
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.sampled_from(["towards", "flat_or_away", "unknown"]),
    st.none() | _windows,
    st.none() | _windows,
    st.sampled_from(["averaging_lag", "not_averaging_lag", "mixed", "unknown"]),
    st.sampled_from(
        ["lag_bounds", "flat_level", "within_rounding", "no_view_inside", "inconclusive"]
    ),
)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(_epochs, _boundaries, st.sampled_from([(",", ":"), (", ", ": ")]))
def test_json_text_is_what_the_encoder_writes_for_the_same_objects(epoch, boundary, separators):
    """JsonText writes the epoch and boundary objects' JSON directly: the same characters as
    json's encoder (both separator styles, non-ASCII names, signed zeros, unbounded sides as
    null) for any values."""
    encode = json.JSONEncoder(separators=separators, allow_nan=False).encode
    fast = JsonText(separators)
    assert fast.epoch(epoch) == encode(epoch_json(epoch))
    text, line = fast.boundary(boundary)
    assert text == encode(boundary_json(boundary))
    assert line == encode(bottom_line(boundary))


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])
def test_json_text_window_writes_null_for_each_unbounded_side_like_the_encoder(separators):
    """JsonText.window takes a shortcut when every side is finite: a window with any mix of
    finite, infinite and NaN sides (each side on its own, all 27 mixes) still reads exactly as
    the encoder writes it, null where a side is unbounded."""
    encode = json.JSONEncoder(separators=separators, allow_nan=False).encode
    fast = JsonText(separators)
    kinds = [0.1 + 0.2, math.inf, math.nan]
    for value in kinds:
        for low in (-0.0, -math.inf, math.nan):
            for high in (*kinds[:1], 5e-324, math.inf, math.nan):
                w = Window(3, 10**12, value, low, high)
                expected = {
                    "first_batch": 3,
                    "last_batch": 10**12,
                    "value": value if math.isfinite(value) else None,
                    "low": low if math.isfinite(low) else None,
                    "high": high if math.isfinite(high) else None,
                }
                assert fast.window(w) == encode(expected), w


@pytest.mark.parametrize(
    "shown", [Shown(1, math.nan, 0.5e-4), Shown(1, 0.5, math.inf), Shown(1, -math.inf, 0.5e-4)]
)
def test_json_text_refuses_what_the_encoder_refuses(shown):
    """A non-finite value where JSON has no null (a displayed value or its rounding) fails as
    json.dumps does, and an epoch with every window (--windows) is left to the encoder."""
    metric = MetricSummary("loss", "running_mean", 1, shown, shown, None, None, ())
    epoch = EpochSummary(
        1, None, True, 2, 1, False, "step", "bracket", "counter", "exact", False, {"loss": metric}
    )
    with pytest.raises(ValueError, match="JSON compliant"):
        json.JSONEncoder(allow_nan=False).encode(epoch_json(epoch))
    with pytest.raises(ValueError, match="JSON compliant"):
        JsonText((",", ":")).epoch(epoch)
    full = metric._replace(first=Shown(1, 0.5, 0.5e-4), last=Shown(1, 0.5, 0.5e-4), full={})
    assert JsonText((",", ":")).epoch(dataclasses.replace(epoch, metrics={"loss": full})) is None
