"""Jump verdicts on synthetic logs whose truth is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fitlens.explain.analysis import (
    FIRST_BATCHES,
    EpochResult,
    MetricResult,
    Options,
    analyze,
    prepare,
)
from fitlens.explain.epochs import Epoch, Series, Shown, split_epochs
from fitlens.explain.jumps import boundaries, choose_end_window, explain_all
from fitlens.explain.jumps import prepare as prepare_boundaries
from fitlens.explain.parse import iter_records
from fitlens.explain.reconstruct import Window, window_bounds
from fitlens.explain.report import summarize


def _log(levels_per_epoch: list[np.ndarray], shown_every: int = 1) -> bytes:
    """A Keras-2-style log of per-batch accuracies, displayed as rounded running means."""
    lines = []
    for epoch, levels in enumerate(levels_per_epoch, start=1):
        n = len(levels)
        lines.append(f"Epoch {epoch}/{len(levels_per_epoch)}")
        means = np.cumsum(levels) / np.arange(1, n + 1)
        for step in range(1, n + 1):
            if step % shown_every == 0 or step in (1, n):
                lines.append(f"{step}/{n} [====] - ETA: 1s - acc: {means[step - 1]:.4f}")
    return ("\n".join(lines) + "\n").encode()


def _verdict(data: bytes) -> tuple[str, str]:
    results = list(analyze(split_epochs(iter_records([data])), Options()))
    (b,) = boundaries(results)
    return b.verdict, b.reason


def test_a_steadily_rising_epoch_explains_the_jump_as_averaging_lag():
    first = np.linspace(0.5, 0.9, 400)  # the model improves through epoch 1
    second = np.full(400, 0.9)  # and simply stays there
    assert _verdict(_log([first, second], shown_every=10)) == ("averaging_lag", "lag_bounds")


def test_a_flat_epoch_followed_by_a_higher_start_is_not_averaging_lag():
    first = np.full(400, 0.8)
    second = np.concatenate([np.full(5, 0.95), np.full(395, 0.8)])  # same easy batches first
    assert _verdict(_log([first, second], shown_every=10)) == ("not_averaging_lag", "lag_bounds")


def test_a_jump_half_explained_by_lag_is_mixed():
    first = np.concatenate([np.full(200, 0.7), np.full(200, 0.8)])  # ends at 0.8, mean 0.75
    second = np.full(400, 0.85)  # starts 0.1 above the shown mean; lag explains 0.05
    verdict, _ = _verdict(_log([first, second], shown_every=10))
    assert verdict == "mixed"


def test_sparse_displays_near_the_end_leave_the_verdict_unknown():
    first = np.linspace(0.5, 0.9, 400)
    second = np.full(400, 0.9)
    data = _log([first, second], shown_every=1000)  # only steps 1 and 400 of each epoch
    assert _verdict(data)[0] == "unknown"


@pytest.mark.parametrize("shown_every", [1, 7, 50])
def test_lag_bounds_contain_the_true_lag(shown_every):
    first = np.linspace(0.5, 0.9, 400)
    second = np.full(400, 0.9)
    results = list(
        analyze(split_epochs(iter_records([_log([first, second], shown_every)])), Options())
    )
    (b,) = boundaries(results)
    a, z = b.end_level.first_batch - 1, b.end_level.last_batch
    true_level = float(np.mean(first[a:z]))
    true_mean = float(np.mean(first))
    assert b.lag_low <= true_level - true_mean <= b.lag_high


def test_cumulative_metrics_like_auc_are_shown_but_not_reconstructed():
    data = (
        b"Epoch 1/1\n1/4 [..] - auc: 0.7000 - loss: 0.5000\n4/4 [==] - auc: 0.8000 - loss: 0.4000\n"
    )
    (result,) = analyze(split_epochs(iter_records([data])), Options())
    assert result.metrics["auc"].kind == "cumulative"
    assert result.metrics["auc"].windows == []
    assert result.metrics["loss"].kind == "running_mean"


def test_a_headerless_bar_after_headed_epochs_is_not_compared():
    epoch = b"1/4 [..] - loss: 0.5000\n4/4 [==] - loss: 0.4000\n"
    data = b"Epoch 1/2\n" + epoch + b"Epoch 2/2\n" + epoch + epoch  # then model.evaluate
    results = list(analyze(split_epochs(iter_records([data])), Options()))
    assert len(results) == 3
    assert [b.from_epoch for b in boundaries(results)] == [1]


def _metric(steps: list[int], means: list[float], half: float, weights, clip) -> MetricResult:
    """A running mean shown at ``steps`` with the given end weights and clip."""
    series = Series()
    for step, mean in zip(steps, means, strict=True):
        series.add(step, mean, half)
    return MetricResult("acc", "running_mean", series, 100 * half, *weights, clip)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.sampled_from([2, 3, 17, 33, 34, 80, 200]), st.data())
def test_windows_computed_ahead_choose_the_same_end_level_and_last_window(n, data):
    """analysis.prepare's windows (a batch of epochs) give choose_end_window and the report's
    last window exactly what the scalar scan and end_bounds give one epoch at a time: epochs
    shorter and longer than the windows held, jumps that no held window meets, both clips."""
    steps = sorted(data.draw(st.sets(st.integers(1, 400), min_size=n, max_size=n)))
    values = data.draw(st.lists(st.floats(-2.0, 2.0), min_size=n, max_size=n))
    half = data.draw(st.sampled_from([0.5e-4, 0.5e-2, 0.0]))
    means = [round(v, 4) for v in values]
    last = steps[-1]
    weights = data.draw(st.sampled_from([(last - 1.0, None), (last - 1 + 0.375, last - 1 + 0.375)]))
    clip = data.draw(st.sampled_from([None, (0.0, 1.0)]))
    jump = data.draw(st.sampled_from([0.0, 1e-5, 1e-3, 0.05, 0.5, -0.2]))
    ahead, alone = (_metric(steps, means, half, weights, clip) for _ in range(2))
    prepare([EpochResult(Epoch(1), "samples", "any", metrics={"acc": ahead})])
    assert ahead.held is not None
    assert repr(choose_end_window(ahead, jump)) == repr(choose_end_window(alone, jump))
    assert repr(ahead.last_window) == repr(alone.last_window)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([1, 2, 3, 5, 17, 40, 80]), min_size=2, max_size=6), st.data())
def test_boundaries_of_a_prepared_batch_are_those_of_epochs_one_at_a_time(sizes, data):
    """jumps.prepare (first and last displays, halves, first windows and end windows of a batch
    of epochs at once) gives explain_all exactly the boundaries it finds without it: one
    display, exact or partial last batches, clipped or not, epochs of any length."""

    def epochs() -> list[EpochResult]:
        return [
            EpochResult(
                Epoch(k + 1, target=target, last_step=target),
                "samples",
                metrics={name: _metric(*shown, weight, clip) for name, shown, weight, clip in rows},
            )
            for k, (target, rows) in enumerate(plan)
        ]

    plan = []
    for n in sizes:
        steps = sorted(data.draw(st.sets(st.integers(1, 120), min_size=n, max_size=n)))
        rows = []
        for name, clip in (("loss", None), ("acc", (0.0, 1.0))):
            values = data.draw(st.lists(st.floats(-0.5, 1.5), min_size=n, max_size=n))
            half = data.draw(st.sampled_from([0.5e-4, 0.5e-2]))
            last = steps[-1]
            weight = data.draw(
                st.sampled_from([(None, None), (last - 1.0, None), (last - 0.5, last - 0.5)])
            )
            rows.append((name, (steps, [round(v, 4) for v in values], half), weight, clip))
        plan.append((steps[-1], rows))
    ahead, alone = epochs(), epochs()
    prepare_boundaries(ahead)
    for k in range(len(plan) - 1):
        assert repr(explain_all(ahead[k], ahead[k + 1])) == repr(
            explain_all(alone[k], alone[k + 1])
        )


def _first_batches_one_by_one(m: MetricResult) -> tuple[Window, ...]:
    """The report's first batches the straightforward way: one window per display while the
    steps run 1, 2, ... (at most FIRST_BATCHES), each from the display before it."""
    steps, means, halves = m.arrays
    out = []
    for i in range(min(FIRST_BATCHES, len(steps))):
        if int(steps[i]) != i + 1:
            break
        before = Shown(i, float(means[i - 1]), float(halves[i - 1])) if i else None
        shown = Shown(int(steps[i]), float(means[i]), float(halves[i]))
        out.append(window_bounds(before, shown, clip=m.clip))
    return tuple(out)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([1, 2, 3, 4, 9]), min_size=1, max_size=6), st.data())
def test_first_batches_of_a_prepared_batch_are_those_of_each_epoch_alone(sizes, data):
    """jumps.prepare's first batches (all epochs of a batch at once, as arrays) are the windows
    window_bounds gives display by display, bit for bit, and the summaries agree: steps that
    start at 1 or later, a gap after batch 1 or 2, clipped or not."""
    plan = []
    for n in sizes:
        start = data.draw(st.sampled_from([1, 1, 2]))
        steps = sorted(data.draw(st.sets(st.integers(start, start + 10), min_size=n, max_size=n)))
        values = data.draw(st.lists(st.floats(-0.5, 1.5), min_size=n, max_size=n))
        half = data.draw(st.sampled_from([0.5e-4, 0.5e-2]))
        clip = data.draw(st.sampled_from([None, (0.0, 1.0)]))
        plan.append((steps, [round(v, 4) for v in values], half, clip))

    def epochs() -> list[EpochResult]:
        return [
            EpochResult(
                Epoch(k + 1, target=steps[-1], last_step=steps[-1]),
                "counter",
                metrics={"acc": _metric(steps, means, half, (None, None), clip)},
            )
            for k, (steps, means, half, clip) in enumerate(plan)
        ]

    ahead, alone = epochs(), epochs()
    prepare_boundaries(ahead)
    for a, b in zip(ahead, alone, strict=True):
        m = a.metrics["acc"]
        assert m.first_batches is not None
        assert repr(m.first_batches) == repr(_first_batches_one_by_one(b.metrics["acc"]))
        assert repr(summarize(a, True)) == repr(summarize(b, True))
