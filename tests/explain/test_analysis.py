"""Per-epoch analysis: the shortcuts it takes give the numbers of the full computation."""

from __future__ import annotations

import io
import random
import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings

from fitlens.explain.analysis import MetricResult, Options, analyze
from fitlens.explain.epochs import split_epochs
from fitlens.explain.jumps import choose_end_window
from fitlens.explain.parse import iter_records
from fitlens.explain.reconstruct import Window, end_bounds

from .test_fuzz import real_shaped_logs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import explain_speed  # the benchmark's own log generator


def _metrics(data: bytes, options: Options) -> list[MetricResult]:
    results = analyze(split_epochs(iter_records(io.BytesIO(data))), options)
    return [m for r in results for m in r.metrics.values() if m.tolerance is not None]


def _reference_end_window(metric: MetricResult, jump: float) -> Window:
    """choose_end_window as it was computed before its scalar shortcut: every candidate's
    bounds from end_bounds, the first precise one, else the narrowest."""
    steps, means, halves = metric.series.arrays()
    end = int(steps[-1])
    first, value, low, high = end_bounds(
        steps,
        means,
        halves,
        end_weight_low=metric.end_weight_low,
        end_weight_high=metric.end_weight_high,
        clip=metric.clip,
        with_start=False,
    )
    candidates = int(np.count_nonzero(steps[:-1] >= end / 2))
    if candidates == 0:
        return Window(int(first[0]), end, float(value[0]), float(low[0]), float(high[0]))
    width = (high[:candidates] - low[:candidates]) / 2
    precise = np.flatnonzero(width <= abs(jump) / 4)
    i = int(precise[0]) if len(precise) else int(np.argmin(width))
    return Window(int(first[i]), end, float(value[i]), float(low[i]), float(high[i]))


@settings(derandomize=True, max_examples=150, deadline=None)
@given(real_shaped_logs())
def test_the_last_window_alone_is_the_last_of_the_epochs_windows(data):
    for options in (Options(), Options(samples=650, batch_size=16)):
        for metric in _metrics(data, options):
            alone = metric.last_window  # before the columns exist: the shortcut
            assert alone == metric.columns.row(-1)
            assert metric.last_window == alone  # and after, from the columns


@settings(derandomize=True, max_examples=150, deadline=None)
@given(real_shaped_logs())
def test_the_end_of_epoch_level_is_the_full_computations(data):
    for options in (Options(), Options(samples=650, batch_size=16)):
        for metric in _metrics(data, options):
            if len(metric.series) < 2:
                continue
            for jump in (0.0, 1e-4, 0.003, 0.05, -0.2, 5.0):
                assert choose_end_window(metric, jump) == _reference_end_window(metric, jump)


def test_long_epochs_take_the_same_end_of_epoch_level_and_last_window():
    # 200 displays per epoch: more candidates than the scalar scan tries, so tiny jumps reach
    # the array fallback; Keras 3 epochs carry a last-batch range (the corner bounds).
    rng = random.Random(5)
    for style in ("keras2-lines", "keras3"):
        data = b"".join(explain_speed._epoch_bytes(rng, e, 3, style) for e in (1, 2, 3))
        metrics = _metrics(data, Options())
        assert len(metrics) == 6 and all(len(m.series) == 200 for m in metrics)
        for metric in metrics:
            for jump in (0.0, 1e-5, 1e-3, 0.05):
                assert choose_end_window(metric, jump) == _reference_end_window(metric, jump)
            assert metric.last_window == metric.columns.row(-1)


def test_options_are_an_immutable_value_that_pickles_and_copies():
    """Options (a plain class, not a dataclass, for start-up time) keeps a frozen dataclass's
    behaviour: equal and hashed by value, assignment refused, pickle and copy round-trip."""
    import copy
    import pickle

    import pytest

    options = Options(0.01, 100, 10)
    assert options == Options(tolerance=0.01, samples=100, batch_size=10) != Options()
    assert hash(options) == hash(Options(0.01, 100, 10))
    assert pickle.loads(pickle.dumps(options)) == options == copy.deepcopy(options)
    assert repr(options) == "Options(tolerance=0.01, samples=100, batch_size=10)"
    with pytest.raises(AttributeError):
        options.tolerance = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="positive, finite tolerance"):
        Options(-1.0)
