"""fitlens.TensorBoard against real event files, read back with TensorBoard's own reader."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fitlens
from fitlens.core.estimators import EpochMean

from .runs import train

pytest.importorskip("tensorboard", reason="needs fitlens[tensorboard]")

from tb_events import assert_epoch_ends_equal_the_history
from tb_events import scalars as _scalars


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("tb")
    history, _ = train(
        epochs=3, batch_size=8, train_eval=True, callbacks=[fitlens.TensorBoard(log_dir)]
    )
    return history, _scalars(log_dir)


def test_epoch_end_values_equal_the_history_as_float32(logged):
    history, scalars = logged
    tags = {}
    for name in ("loss", "accuracy"):
        tags |= {
            f"train/{name}_mean": name,
            f"train/{name}_now": f"{name}_now",
            f"train/{name}_now_low": f"{name}_now_low",
            f"train/{name}_now_high": f"{name}_now_high",
            f"val/{name}": f"val_{name}",
            f"train_eval/{name}": f"train_eval_{name}",
            f"train_eval/{name}_train_mode": f"train_eval_train_mode_{name}",
        }
    assert_epoch_ends_equal_the_history(history, scalars, tags)
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


def _ticking_clock():
    """Advances 13 ms per read: two runs refresh (and so write points) at the same steps."""
    ticks = itertools.count()
    return lambda: next(ticks) * 0.013


def test_fit_tensorboard_writes_exactly_what_the_callback_writes(tmp_path):
    train(epochs=2, callbacks=[fitlens.TensorBoard(tmp_path / "cb")], clock=_ticking_clock())
    history, _ = train(epochs=2, tensorboard=tmp_path / "fit", clock=_ticking_clock())
    by_callback, by_fit = _scalars(tmp_path / "cb"), _scalars(tmp_path / "fit")
    assert by_fit == by_callback
    assert len(by_fit["train/accuracy_now"]) > len(history.epoch)  # refresh points too
    end = len(history.batches)
    assert by_fit["train/accuracy_now"][end] == np.float32(history.history["accuracy_now"][-1])


@pytest.mark.parametrize(
    ("tensorboard", "message"),
    [(3, "Expected `tensorboard` to be a directory path"), ("", "a non-empty str")],
)
def test_fit_refuses_a_tensorboard_that_is_not_a_directory_before_training(
    tensorboard, message, mlp
):
    with pytest.raises(ValueError, match=message):
        fitlens.fit(mlp, [], loss="mse", optimizer="sgd", tensorboard=tensorboard)


def test_fit_refuses_a_tensorboard_path_that_is_a_file(tmp_path, mlp):
    (tmp_path / "tb").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        fitlens.fit(mlp, [], loss="mse", optimizer="sgd", tensorboard=tmp_path / "tb")


@pytest.mark.parametrize("form", ["callback", "fit"])
def test_tensorboard_adds_not_one_device_to_host_read(tmp_path, monkeypatch, form):
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
    if form == "callback":
        train(epochs=2, callbacks=[fitlens.TensorBoard(tmp_path)], clock=lambda: 0.0)
    else:
        train(epochs=2, tensorboard=tmp_path, clock=lambda: 0.0)
    assert counts["reads"] == without
    assert _scalars(tmp_path)["train/loss_mean"]  # it did write


def test_with_fits_scheduler_the_rate_is_the_lr_tag_not_a_metric(tmp_path):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    history = fitlens.fit(
        model, (x, y), loss="cross_entropy", optimizer=optimizer, epochs=3, batch_size=16,
        verbose=0, scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5),
        tensorboard=tmp_path, clock=lambda: 0.0,
    )  # fmt: skip
    written = _scalars(tmp_path)
    assert not [tag for tag in written if tag.startswith("train/lr")]
    # Epoch ends come before the per-epoch scheduler steps: the rate the epoch trained with.
    ends = [4, 8, 12]
    assert [written["lr"][s] for s in ends] == [np.float32(r) for r in (0.1, 0.05, 0.025)]
    assert len(history.epoch) == 3


class FailAt(fitlens.Callback):
    """Raises a real error as 0-based epoch ``epoch`` begins; keeps what ``on_exception`` got."""

    def __init__(self, epoch):
        self.epoch, self.seen = epoch, []

    def on_epoch_begin(self, epoch, logs):
        if epoch == self.epoch:
            raise RuntimeError("the data source broke")

    def on_exception(self, error):
        self.seen.append(error)


def test_the_callback_closes_its_event_file_when_training_raises(tmp_path):
    board, fail = fitlens.TensorBoard(tmp_path, flush_secs=3600), FailAt(1)
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="the data source broke"):
        train(epochs=3, callbacks=[board, fail])
    # closed: the event writer's background thread has ended (left open, it runs on)
    assert [t.name for t in threading.enumerate() if t not in before] == []
    assert [str(e) for e in fail.seen] == ["the data source broke"]  # the hook got the error
    history = board.run.history
    assert history.epoch == [0]  # epoch 1 ended before the error
    tags = {f"train/{m}_mean": m for m in ("loss", "accuracy")}
    tags |= {f"val/{m}": f"val_{m}" for m in ("loss", "accuracy")}
    assert_epoch_ends_equal_the_history(history, _scalars(tmp_path), tags)
    board.close()  # closing again is harmless
