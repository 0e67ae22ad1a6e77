"""The lens driven as the framework callbacks drive it: values by name, as floats."""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Callable

import pytest

from fitlens.view.lens import Lens
from fitlens.view.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_lens_records_history_timing_and_lines_like_fit():
    clock, out = FakeClock(), io.StringIO()
    obs = Lens(Progress(2, file=out), "window", clock=clock)
    obs.begin_run(2, 3)
    for epoch in range(2):
        obs.begin_epoch(epoch)
        for step, (loss, size) in enumerate([(1.0, 4), (0.5, 4), (0.0, 2)], start=1):
            clock.t += 0.1  # data wait
            obs.begin_step()
            clock.t += 0.4  # step
            obs.step_done(step, {"loss": loss + epoch}, {"loss": size}, size)
        clock.t += 1.0  # validation
        logs = obs.end_epoch({"val_loss": 0.25})
    history = obs.history
    assert history.history["loss"] == pytest.approx([0.6, 1.6])  # (4 + 2 + 0) / 10, + 1
    assert history.history["loss_now"] == pytest.approx([0.6, 1.1])  # all 6 batches: 22 / 20
    assert history.history["val_loss"] == [0.25, 0.25]
    assert logs == {
        "loss": pytest.approx(1.6),
        "loss_now": pytest.approx(1.1),
        "loss_now_low": history.history["loss_now_low"][1],
        "loss_now_high": history.history["loss_now_high"][1],
        "val_loss": 0.25,
    }
    # the interval holds the estimate and stays in the loss's range (>= 0): clipped at 0
    assert history.history["loss_now_low"][0] == 0.0
    assert all(
        lo <= now <= hi
        for lo, now, hi in zip(
            history.history["loss_now_low"],
            history.history["loss_now"],
            history.history["loss_now_high"],
            strict=True,
        )
    )
    assert history.timing["data_wait"] == pytest.approx([0.3, 0.3])
    assert history.timing["compute"] == pytest.approx([1.2, 1.2])
    assert history.timing["eval"] == pytest.approx([1.0, 1.0])
    assert history.timing["time"] == pytest.approx([2.5, 2.5])
    assert history.batches["step"].tolist() == [1, 2, 3] * 2
    assert history.batches["size"].tolist() == [4, 4, 2] * 2
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Epoch 1/2 - 3 steps - 2.5s")
    # fit's lines (fitlens.view.epoch_end): the validation value comes without a spread, so
    # no interval; the now value has one, cut at 0 (a loss), and says why it is wide; the
    # forecast's tolerance includes it.
    assert lines[1:4] == [
        "gap loss (estimated): mean 0.6000 -> now ~0.6 [0.0, 1.6] (uncertain: curve "
        "bending) (lag ~+0.0000) -> val 0.2500 (mode + generalisation ~-0.3500)",
        "forecast epoch 2: its first 3 batches should show loss ~0.6000 ± 1.1760 (the now "
        "estimate), not 0.6000 (the mean): a jump of +0.0000",
        "forecast check epoch 2: loss 1.6000 after 3 batches (jump +1.0000) vs forecast "
        "0.6000 ± 1.1760 (jump +0.0000): as forecast",
    ]
    assert lines[4].startswith("Epoch 2/2 - 3 steps - 2.5s")
    assert lines[5:] == [  # no forecast after the last epoch
        "gap loss (estimated): mean 1.6000 -> now ~1.1 ±0.5 (uncertain: few batches yet) "
        "(lag ~-0.5000) -> val 0.2500 (mode + generalisation ~-0.8500)"
    ]
    assert [g["epoch"] for g in history.gaps] == [1, 2]
    assert history.gaps[1]["metrics"]["loss"]["total"] == pytest.approx(0.25 - 1.6)


def _run(obs: Lens, clock: FakeClock, epochs: list[list[tuple[int, dict, float]]], val):
    obs.begin_run(len(epochs), None)
    for epoch, batches in enumerate(epochs):
        obs.begin_epoch(epoch)
        for step, values, size in batches:
            clock.t += 1.0
            obs.step_done(step, values, dict.fromkeys(values, size), size, {"auc": 0.5})
        obs.end_epoch(val)


def test_lines_are_about_the_first_metric_with_a_validation_value_and_never_a_reported_one():
    out = io.StringIO()
    obs = Lens(Progress(2, file=out), "last", clock=FakeClock())
    batch = {"loss": 0.5, "accuracy": 0.75, "mae": 0.25}
    val = {"val_auc": 0.5, "val_mae": 0.5, "val_loss": 1.0}
    _run(obs, FakeClock(), [[(1, batch, 8)], [(1, batch, 8)]], val)
    text = out.getvalue()
    assert (
        "gap mae (estimated): mean 0.2500 -> now ~0.2500 ±? (uncertain: few batches yet) "
        "(lag ~+0.0000) -> val 0.5000" in text
    )
    assert "forecast epoch 2: its first 1 batches should show mae ~0.2500" in text
    assert "forecast check epoch 2: mae 0.2500 after 1 batches" in text
    ends = [line for line in text.splitlines() if line.startswith(("gap", "forecast"))]
    assert len(ends) == 4 and all(" mae " in line for line in ends)  # auc has no now estimate
    assert set(obs.history.gaps[0]["metrics"]) == {"loss", "accuracy", "mae"}


def test_without_validation_there_is_no_gap_line_but_the_forecast_and_its_check():
    out = io.StringIO()
    obs = Lens(Progress(2, file=out), "last", clock=FakeClock())
    epoch = [(1, {"loss": 1.0, "accuracy": 0.5}, 4), (2, {"loss": 0.5, "accuracy": 1.0}, 4)]
    _run(obs, FakeClock(), [epoch, epoch], None)
    text = out.getvalue()
    assert "gap " not in text
    assert "forecast epoch 2: its first 2 batches should show accuracy ~1.0000 (the now " in text
    assert "forecast check epoch 2: accuracy 0.7500 after 2 batches" in text


def test_the_check_uses_whole_groups_of_batches_and_says_how_many_they_hold():
    # Keras's steps_per_execution=2: rows cover batches 1-2, 3-4, 5-6; the forecast is for 3.
    out = io.StringIO()
    obs = Lens(Progress(2, file=out), "last", clock=FakeClock())
    groups = [(2, {"loss": 1.0}, 8), (4, {"loss": 0.5}, 8), (6, {"loss": 0.0}, 4)]
    _run(obs, FakeClock(), [groups, groups], {"val_loss": 0.1})
    text = out.getvalue()
    assert "forecast epoch 2: its first 3 batches should show loss ~0.0000" in text
    assert "forecast check epoch 2: loss 0.7500 after 4 batches (jump +0.1500)" in text


def test_lens_keeps_the_frameworks_value_for_a_metric_without_batch_values():
    obs = Lens(Progress(0), "trend", clock=FakeClock())
    obs.begin_run(1, 2)
    obs.begin_epoch(0)
    obs.step_done(1, {"loss": 1.0}, {"loss": 8}, 8, reported={"auc": 0.7})
    obs.step_done(2, {"loss": 0.0}, {"loss": 0}, 0, reported={"auc": 0.8})
    logs = obs.end_epoch()
    assert logs["loss"] == 1.0  # the weightless batch counts for nothing
    assert logs["auc"] == 0.8 and math.isnan(logs["auc_now"])
    assert obs.history.batches["loss"].tolist()[0] == 1.0


def test_a_framework_loop_gets_the_data_wait_hint_without_fits_prefetch_advice():
    clock, out = FakeClock(), io.StringIO()
    lens = Lens(Progress(2, file=out), "last", clock=clock)
    lens.begin_run(1, 4)
    lens.begin_epoch(0)
    for step in range(1, 5):
        clock.t += 0.75  # waiting for the batch
        lens.begin_step()
        clock.t += 0.25  # the step
        lens.step_done(step, {"loss": 1.0}, {"loss": 8}, 8)
    lens.end_epoch()
    hint = [line for line in out.getvalue().splitlines() if line.startswith("Input pipeline")]
    assert hint == [
        "Input pipeline bottleneck: waiting for data took 75% of epoch 1 (3.0s of 4.0s); the "
        "model was idle meanwhile. Try: for a torch DataLoader, num_workers=N (worker "
        "processes) and pin_memory=True on CUDA; or precompute/cache the batches."
    ]


def _log_lines(progress: Progress, steps: int | None, n: int, wait: float, compute: float):
    """A two-epoch run's first epoch of ``n`` steps on a fake clock, written to a log (not a
    terminal); returns the lines."""
    clock = FakeClock()
    progress.file = out = io.StringIO()
    obs = Lens(progress, "window", clock=clock)
    obs.begin_run(2, steps)
    obs.begin_epoch(0)
    for step in range(1, n + 1):
        clock.t += wait
        obs.begin_step()
        clock.t += compute
        obs.step_done(step, {"loss": 0.5}, {"loss": 4}, 4)
    obs.end_epoch()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    return text.splitlines()


def _steps_logged(lines: list[str]) -> list[int]:
    steps = [line.split(" - ")[1] for line in lines if line.startswith("Epoch ")]
    return [int(s.split("/")[0]) for s in steps if "/" in s]  # "30/1000", not "210 steps"


def test_a_log_gets_a_line_every_30_seconds_of_a_long_epoch_with_etas_and_data_share():
    lines = _log_lines(Progress(1), 1000, 210, wait=0.25, compute=0.75)
    assert _steps_logged(lines) == [30, 60, 90, 100, 130, 160, 190, 200]
    # 970 steps left at 1 s each; the run adds the second epoch's 1000 steps.
    assert lines[0] == (
        "Epoch 1/2 - 30/1000 - 00:30<16:10 (run 32:50) - data 25% - loss: 0.5000 (now 0.5000 "
        "±0.0000)"
    )


def test_a_log_gets_a_line_at_every_tenth_of_a_short_epoch():
    lines = _log_lines(Progress(1), 100, 100, wait=0.0, compute=0.05)
    assert _steps_logged(lines) == list(range(10, 101, 10))
    assert lines[10].startswith("Epoch 1/2 - 100 steps - 5.0s")


def test_an_epoch_of_unknown_length_gets_lines_by_time_only():
    lines = _log_lines(Progress(1), None, 12, wait=1.0, compute=6.0)
    assert _steps_logged(lines) == [5, 10]  # 35 s, then 70 s


def test_log_every_still_sets_the_lines_by_steps_and_the_intervals_are_configurable():
    assert _steps_logged(_log_lines(Progress(1, log_every=7), 1000, 30, 0.0, 5.0)) == [
        7,
        14,
        21,
        28,
    ]
    configured = Progress(1, log_seconds=10.0, log_fraction=0.5)
    assert _steps_logged(_log_lines(configured, 40, 40, 0.0, 4.0)) == [
        *(3, 6, 9, 12, 15, 18),  # every 12 s (3 steps of 4 s: the first past 10 s)
        20,  # half the epoch
        *(23, 26, 29, 32, 35, 38, 40),
    ]


def test_verbose_2_writes_one_line_per_epoch_to_a_log():
    lines = _log_lines(Progress(2), 1000, 210, wait=0.25, compute=0.75)
    epoch_lines = [line for line in lines if line.startswith("Epoch ")]
    assert epoch_lines == lines[:1] and lines[0].startswith("Epoch 1/2 - 210 steps")


def _hundred_steps_counting_reads(
    progress: Progress, seconds: float = 0.05, loss: Callable[[int], float] = lambda s: 1.0 / s
) -> tuple[Lens, list[float], io.StringIO]:
    """100 steps of ``seconds`` through a lens on ``progress`` (written to a string), the loss
    ``loss(step)``, recording the clock time of every read of the now estimates
    (`Lens.snapshot`)."""
    clock, out = FakeClock(), io.StringIO()
    progress.file = out
    obs = Lens(progress, "adaptive_trend", clock=clock)
    reads: list[float] = []
    snapshot = obs.snapshot
    obs.snapshot = lambda: reads.append(clock.t) or snapshot()  # type: ignore[method-assign]
    obs.begin_run(1, 100)
    obs.begin_epoch(0)
    for step in range(1, 101):
        obs.begin_step()
        clock.t += seconds
        obs.step_done(step, {"loss": loss(step)}, {"loss": 4}, 4)
    return obs, reads, out


def test_a_log_reads_the_now_estimates_only_for_the_lines_it_writes():
    # 10 refreshes a second and 0.06 s steps: a refresh every other step, a line every tenth
    # of the epoch (0.6 s apart); reading the estimators costs a fraction of a millisecond per
    # metric, so the quiet refreshes (which only move values to the host) must not read them.
    obs, reads, out = _hundred_steps_counting_reads(Progress(1), seconds=0.06)
    assert obs.stream is not None and obs.stream.rows == 100  # every step reached the host
    assert [round(t / 0.06) for t in reads] == list(range(10, 101, 10))  # one per line written
    obs.end_epoch()
    assert len(out.getvalue().splitlines()) == 11


def test_a_short_epochs_log_reads_the_now_estimates_at_most_twice_a_second():
    # 0.02 s steps: the ten lines come 0.2 s apart. Like a bar, the log reads the now
    # estimates at its first line, then at most every NOW_READ_SECONDS (0.5 s), and its lines
    # in between show the last read; the epoch means are fresh on every line.
    _, reads, out = _hundred_steps_counting_reads(
        Progress(1),
        seconds=0.02,
        loss=lambda step: 2.0 - step / 100,  # a line: now is exact
    )
    assert [round(t / 0.02) for t in reads] == [10, 40, 70, 100]  # lines at 10, 20, ..., 100
    drawn = re.findall(r"loss: ([0-9.]+) \(now ([0-9.-]+)", out.getvalue())
    nows = [float(n) for _, n in drawn]
    assert nows == [1.9] * 3 + [1.6] * 3 + [1.3] * 3 + [1.0]  # read at lines 1, 4, 7 and 10
    assert len({m for m, _ in drawn}) == 10


def test_an_epoch_end_fits_each_metrics_now_estimator_once_for_value_interval_and_lines():
    # History row, summary line, gap line and forecast all come from one fit per metric.
    from fitlens.core.estimators import EMATrend

    fits: list[int] = []

    class Counted(EMATrend):
        def fit(self):
            fits.append(1)
            return super().fit()

    clock = FakeClock()
    obs = Lens(Progress(2, file=io.StringIO()), Counted(beta=0.9), clock=clock)
    obs.begin_run(2, 100)
    obs.begin_epoch(0)
    for step in range(1, 101):
        obs.begin_step()
        clock.t += 0.05
        obs.step_done(
            step, {"loss": 1.0 / step, "accuracy": 0.5}, dict.fromkeys(("loss", "accuracy"), 4), 4
        )
    fits.clear()
    obs.end_epoch({"val_loss": 0.5})
    assert len(fits) == 2
    assert obs.history.history["loss_now_low"][0] <= obs.history.history["loss_now"][0]


def test_a_bar_reads_the_now_estimates_at_most_twice_a_second_and_the_means_at_every_redraw():
    # A bar redraws 10 times a second; reading the now estimates costs about half a millisecond
    # per metric, so they are read every NOW_READ_SECONDS (0.5 s) and held in between.
    _, reads, out = _hundred_steps_counting_reads(Progress(1, mode="bar"))
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    assert len(reads) >= 9 and min(gaps) >= 0.5 - 1e-9  # 5 s of training
    drawn = re.findall(r"loss: ([0-9.]+) \(now ([0-9.-]+)", out.getvalue())
    means, nows = {m for m, _ in drawn}, {n for _, n in drawn}
    assert len(drawn) > 3 * len(reads)  # redrawn far more often than read
    assert len(nows) <= len(reads) < len(means)  # fresh means, held nows
