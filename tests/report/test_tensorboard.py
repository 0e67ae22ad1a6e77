"""fitlens.TensorBoard against real event files, read back with TensorBoard's own reader."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fitlens
from fitlens.core.estimators import EpochMean

from .runs import train

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator", reason="needs fitlens[tensorboard]"
)


def _scalars(log_dir) -> dict[str, dict[int, float]]:
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("tb")
    history, _ = train(
        epochs=3, batch_size=8, train_eval=True, callbacks=[fitlens.TensorBoard(log_dir)]
    )
    return history, _scalars(log_dir)


def test_epoch_end_values_equal_the_history_as_float32(logged):
    history, scalars = logged
    epochs = history.batches["epoch"]
    end_steps = [int(np.flatnonzero(epochs == e + 1)[-1]) + 1 for e in history.epoch]
    for name in ("loss", "accuracy"):
        for tag, key in (
            (f"train/{name}_mean", name),
            (f"train/{name}_now", f"{name}_now"),
            (f"train/{name}_now_low", f"{name}_now_low"),
            (f"train/{name}_now_high", f"{name}_now_high"),
            (f"val/{name}", f"val_{name}"),
            (f"train_eval/{name}", f"train_eval_{name}"),
            (f"train_eval/{name}_train_mode", f"train_eval_train_mode_{name}"),
        ):
            got = [scalars[tag][s] for s in end_steps]
            # Event files hold float32: the only difference allowed is that one rounding.
            assert got == [np.float32(v) for v in history.history[key]], tag
    for key, tag in (
        ("data_wait", "time/data_wait"),
        ("compute", "time/compute"),
        ("eval", "time/eval"),
        ("time", "time/epoch"),
    ):
        assert [scalars[tag][s] for s in end_steps] == [np.float32(v) for v in history.timing[key]]
    assert set(scalars["lr"].values()) == {np.float32(3e-3)}


def test_refresh_points_hold_the_running_mean_of_the_rows_flushed_so_far(logged):
    history, scalars = logged
    batches = history.batches
    mean_points = scalars["train/accuracy_mean"]
    assert len(mean_points) > len(history.epoch)  # refreshes within epochs were written too
    for step, value in mean_points.items():
        rows = slice(None, step)
        epoch = batches["epoch"][step - 1]
        in_epoch = batches["epoch"][rows] == epoch
        ref = EpochMean()
        ref.update(batches["accuracy"][rows][in_epoch], batches["size"][rows][in_epoch])
        # float64 sums in another order differ by far less than float32's half ulp, so the
        # float32 values agree up to that one rounding: within one float32 ulp of the reference.
        assert abs(value - ref.value) <= np.spacing(np.float32(ref.value)), step


def test_the_callback_never_reads_the_lazy_batch_logs(tmp_path, monkeypatch):
    from fitlens.training.callbacks import LazyLogs

    reads = []
    original = LazyLogs._get
    monkeypatch.setattr(LazyLogs, "_get", lambda self: reads.append(1) or original(self))
    train(epochs=2, callbacks=[fitlens.TensorBoard(tmp_path)])
    assert reads == []


def test_without_tensorboard_the_callback_names_the_extra():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tensorboard"] = None
        import fitlens
        try:
            fitlens.TensorBoard("x")
        except ImportError as e:
            print(e)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert "pip install 'fitlens[tensorboard]'" in result.stdout, result.stderr


def test_the_callback_adds_not_one_device_to_host_read(tmp_path, monkeypatch):
    import functools

    import torch

    counts = {"reads": 0}
    for name in ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            counts["reads"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, functools.wraps(original)(counted))
    # A frozen clock: refreshes (and so transfers) come at the same steps in both runs.
    train(epochs=2, clock=lambda: 0.0)
    without = counts["reads"]
    counts["reads"] = 0
    train(epochs=2, callbacks=[fitlens.TensorBoard(tmp_path)], clock=lambda: 0.0)
    assert counts["reads"] == without
