"""Reading TensorBoard event files back with TensorBoard's own reader (helpers for the tests of
the writer from every loop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fitlens.core.history import History


def scalars(log_dir: str | Path) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of every scalar in ``log_dir``'s event files (the last value
    written at a step wins, as TensorBoard shows it)."""
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def epoch_end_steps(history: History) -> list[int]:
    """The step (batch rows recorded so far) of each epoch end."""
    epochs = history.batches["epoch"]
    return [int(np.flatnonzero(epochs == e + 1)[-1]) + 1 for e in history.epoch]


def assert_epoch_ends_equal_the_history(
    history: History, written: dict[str, dict[int, float]], keys: dict[str, str]
) -> None:
    """Each ``tag -> history key`` is written at every epoch end with the history's value,
    rounded once to float32 (TensorBoard's scalar type) and nothing else; the four time tags
    hold the epoch's timing."""
    steps = epoch_end_steps(history)
    for tag, key in keys.items():
        got = [written[tag][s] for s in steps]
        assert got == [np.float32(v) for v in history.history[key]], tag
    for key, tag in (
        ("data_wait", "time/data_wait"),
        ("compute", "time/compute"),
        ("eval", "time/eval"),
        ("time", "time/epoch"),
    ):
        assert [written[tag][s] for s in steps] == [np.float32(v) for v in history.timing[key]]
