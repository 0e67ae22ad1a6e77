"""Honest ETA: warm-up steps left out, drift followed, whole-run time with evaluation; fake clock."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fitlens
from fitlens.view.progress import ProgressState
from fitlens.view.timing import StepTimer, format_seconds, run_remaining


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class TimedModel(torch.nn.Module):
    """Each call advances the fake clock by ``costs[call]`` (the last cost repeats)."""

    def __init__(self, clock: FakeClock, costs: list[float]) -> None:
        super().__init__()
        self.clock, self.costs, self.calls = clock, costs, 0
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        self.clock.t += self.costs[min(self.calls, len(self.costs) - 1)]
        self.calls += 1
        return self.linear(x)


class Recording(fitlens.Progress):
    """A silent display that keeps every state the loop hands it."""

    def __init__(self) -> None:
        super().__init__(1, file=io.StringIO(), log_every=1)
        self.states: list[ProgressState] = []

    def refresh(self, state: ProgressState) -> None:
        self.states.append(state)

    def at(self, epoch: int, step: int) -> ProgressState:
        return next(s for s in self.states if s.epoch == epoch and s.step == step)


def batches(n: int = 100):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(4, 4, generator=g), torch.randint(0, 2, (4,), generator=g)) for _ in range(n)
    ]


def train(costs: list[float], *, epochs: int = 1, steps: int = 10, validation=None, val_steps=None):
    clock = FakeClock()
    display = Recording()
    fitlens.fit(
        TimedModel(clock, costs),
        batches(steps),
        loss="cross_entropy",
        optimizer="sgd",
        epochs=epochs,
        validation_data=validation,
        validation_steps=val_steps,
        clock=clock,
        verbose=display,
    )
    return display


# --- StepTimer on its own ---------------------------------------------------------------------


def test_the_first_step_is_left_out_of_the_step_time():
    timer = StepTimer(warmup=1)
    timer.observe(steps=1, seconds=30.0)  # graph building, allocator warm-up
    assert math.isnan(timer.seconds_per_step)
    timer.observe(steps=4, seconds=4.0)
    assert timer.seconds_per_step == pytest.approx(1.0)


def test_warm_up_inside_a_larger_observation_is_removed_pro_rata():
    timer = StepTimer(warmup=2)
    timer.observe(steps=4, seconds=8.0)
    assert timer.seconds_per_step == pytest.approx(2.0)


@settings(max_examples=50, deadline=None)
@given(
    per_step=st.floats(1e-4, 100.0),
    chunks=st.lists(st.integers(1, 50), min_size=1, max_size=30),
    smoothing=st.floats(0.01, 1.0),
)
def test_a_constant_step_time_is_estimated_exactly_from_the_first_observation(
    per_step, chunks, smoothing
):
    timer = StepTimer(smoothing=smoothing, warmup=0)
    for n in chunks:
        timer.observe(n, n * per_step)
        assert timer.seconds_per_step == pytest.approx(per_step, rel=1e-9)  # no start-up bias


def test_the_estimate_follows_a_slowdown_within_a_few_refreshes():
    timer = StepTimer(smoothing=0.3, warmup=0)
    for _ in range(20):
        timer.observe(10, 10 * 0.1)
    estimates = []
    for _ in range(15):
        timer.observe(10, 10 * 0.2)
        estimates.append(timer.seconds_per_step)
    assert all(a < b for a, b in itertools.pairwise(estimates))  # moves steadily
    assert estimates[-1] == pytest.approx(0.2, rel=0.01)


def test_a_refresh_covering_more_steps_counts_more():
    timer = StepTimer(smoothing=0.5, warmup=0)
    timer.observe(99, 99 * 1.0)
    timer.observe(1, 5.0)  # one slow step after a long fast stretch
    assert timer.seconds_per_step < 1.1


def test_run_remaining_adds_later_epochs_and_evaluations():
    timer = StepTimer(warmup=0)
    timer.observe(10, 5.0)  # 0.5 s/step
    eta = run_remaining(
        timer,
        steps_left_in_epoch=4,
        epochs_left_after=2,
        steps_per_epoch=10,
        eval_seconds=3.0,
        evals_left=3,
    )
    assert eta == pytest.approx(4 * 0.5 + 2 * 10 * 0.5 + 3 * 3.0)


def test_unmeasured_evaluation_counts_as_free_and_unknown_epoch_length_is_unknown():
    timer = StepTimer(warmup=0)
    timer.observe(2, 2.0)
    kw = dict(epochs_left_after=1, eval_seconds=math.nan, evals_left=2)
    assert run_remaining(timer, steps_left_in_epoch=3, steps_per_epoch=5, **kw) == 8.0
    assert math.isnan(run_remaining(timer, steps_left_in_epoch=None, steps_per_epoch=None, **kw))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"smoothing": 0.0}, r"`smoothing` in \(0, 1\]"), ({"warmup": -1}, "`warmup` >= 0")],
)
def test_invalid_timer_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StepTimer(**kwargs)


def test_format_seconds_shows_hours_only_when_needed():
    assert [format_seconds(s) for s in (5, 125, 3723, math.nan)] == [
        "00:05",
        "02:05",
        "1:02:03",
        "?",
    ]


# --- the ETA that fit shows -------------------------------------------------------------------


def test_fit_eta_ignores_a_slow_first_step():
    display = train([30.0, 1.0], steps=10)
    # Keras 2 would say elapsed / steps * left = 34 / 5 * 5 = 34 s at step 5.
    assert display.at(1, 5).eta_epoch == pytest.approx(5.0)


def test_fit_eta_adapts_when_steps_get_slower():
    display = train([1.0] * 20 + [3.0], steps=60)
    late = display.at(1, 50)
    assert late.eta_epoch == pytest.approx(10 * 3.0, rel=0.01)


def test_fit_whole_run_eta_counts_remaining_epochs_and_their_evaluation():
    # 1 s per training step; validation: 2 batches through the same model = 2 s per epoch.
    val = batches(2)
    display = train([1.0], epochs=3, steps=10, validation=val, val_steps=2)
    s = display.at(2, 6)
    assert s.eta_epoch == pytest.approx(4.0)
    # this epoch's 4 steps + epoch 3's 10 steps + evaluations after epochs 2 and 3.
    assert s.eta_run == pytest.approx(4.0 + 10.0 + 2 * 2.0)


def test_before_the_first_evaluation_the_run_eta_covers_training_steps():
    display = train([1.0], epochs=2, steps=10, validation=batches(2), val_steps=2)
    assert display.at(1, 4).eta_run == pytest.approx(6.0 + 10.0)
