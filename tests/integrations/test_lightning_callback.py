"""The Lightning callback against real Lightning training small models on CPU.

The reference per-batch values are recorded by the module itself inside `training_step`; the
reference epoch means are Lightning's own `name_epoch` values.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

L = pytest.importorskip("lightning.pytorch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from fitlens.core.numbers import format_interval  # noqa: E402
from fitlens.lightning import FitlensCallback  # noqa: E402

TOL = 1e-6
pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)


class Classifier(L.LightningModule):
    """Logs loss and accuracy per step and per epoch; records what it logged."""

    def __init__(self, log_batch_size=None) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )
        self.log_batch_size = log_batch_size  # None: Lightning infers it from the batch
        self.recorded: list[tuple[float, float, int]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.net(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        accuracy = (out.argmax(1) == y).float().mean()
        size = None if self.log_batch_size is None else self.log_batch_size(batch_idx, len(y))
        self.log("loss", loss, on_step=True, on_epoch=True, batch_size=size)
        self.log("accuracy", accuracy, on_step=True, on_epoch=True, batch_size=size)
        self.recorded.append((float(loss), float(accuracy), size or len(y)))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2)


class EpochValues(L.Callback):
    """Lightning's own `_epoch` values at each epoch end."""

    def __init__(self) -> None:
        self.values: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.values.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def _loaders(n: int = 100, batch_size: int = 32):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(3, 8, generator=g)[y] * 1.5 + torch.randn(n, 8, generator=g)
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    val = DataLoader(TensorDataset(x[:40], y[:40]), batch_size=16)
    return train, val


def _fit(module, callbacks, epochs=2, **trainer_kwargs):
    torch.manual_seed(0)
    options = {
        "max_epochs": epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": False,
        "accelerator": "cpu",
        "num_sanity_val_steps": 0,
        **trainer_kwargs,
    }
    trainer = L.Trainer(callbacks=callbacks, **options)
    train, val = _loaders()
    trainer.fit(module, train, val)
    return trainer


def test_batch_values_and_epoch_means_match_lightnings_step_and_epoch_values():
    module, lens, epoch_values = Classifier(), FitlensCallback(verbose=0), EpochValues()
    _fit(module, [lens, epoch_values])
    log = lens.history.batches
    recorded = np.array(module.recorded)
    assert log["size"].tolist() == [32, 32, 32, 4] * 2  # the last batch is partial
    np.testing.assert_allclose(log["loss"], recorded[:, 0], atol=TOL, rtol=0)
    np.testing.assert_allclose(log["accuracy"], recorded[:, 1], atol=TOL, rtol=0)
    history = lens.history.history
    for key in ("loss", "accuracy"):
        lightning_epoch = [v[f"{key}_epoch"] for v in epoch_values.values]
        np.testing.assert_allclose(history[key], lightning_epoch, atol=TOL, rtol=0)
        assert len(history[f"{key}_now"]) == 2
    assert history["val_loss"] == pytest.approx([v["val_loss"] for v in epoch_values.values])


def test_the_mean_mirrors_an_explicit_batch_size_passed_to_self_log():
    module = Classifier(log_batch_size=lambda i, n: n * (1 + 3 * (i % 2)))
    lens, epoch_values = FitlensCallback(verbose=0), EpochValues()
    _fit(module, [lens, epoch_values], epochs=1)
    sizes = [size for _, _, size in module.recorded]
    losses = [loss for loss, _, _ in module.recorded]
    expected = np.average(losses, weights=sizes)
    assert lens.history.history["loss"][0] == pytest.approx(expected, abs=TOL)
    assert lens.history.history["loss"][0] == pytest.approx(
        epoch_values.values[0]["loss_epoch"], abs=TOL
    )
    assert lens.lens.stream.weight("loss") == sum(sizes)


def test_the_display_replaces_lightnings_bar_with_mean_now_gap_forecast_and_check():
    out = io.StringIO()
    lens = FitlensCallback(verbose=2, file=out)
    _fit(Classifier(), [lens])
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    assert lines[0].startswith("Epoch 1/2 - 4 steps") and lines[4].startswith("Epoch 2/2 - 4 steps")
    assert "loss: " in lines[0] and "(now " in lines[0] and "val_loss: " in lines[0]
    # fit's lines (fitlens.view.epoch_end) for the loss, the one metric with a validation value.
    h, log = lens.history.history, lens.history.batches
    mean, now, val = h["loss"][0], h["loss_now"][0], h["val_loss"][0]
    shown = " ".join(format_interval(now, h["loss_now_low"][0], h["loss_now_high"][0]))
    assert f"loss: {mean:.4f} (now {shown}" in lines[0]  # the display shows the interval
    assert 0.0 <= h["loss_now_low"][0] <= now <= h["loss_now_high"][0]  # a loss: >= 0
    assert lines[1].startswith(f"gap loss (estimated): mean {mean:.4f} -> now ~{shown} ")
    assert lines[1].endswith(
        f"(lag ~{now - mean:+.4f}) -> val {val:.4f} (mode + generalisation ~{val - now:+.4f})"
    )
    assert lines[2].startswith(f"forecast epoch 2: its first 3 batches should show loss ~{now:.4f}")
    second = log["epoch"] == 2
    observed = np.average(log["loss"][second][:3], weights=log["size"][second][:3])
    assert lines[3].startswith(
        f"forecast check epoch 2: loss {observed:.4f} after 3 batches "
        f"(jump {observed - mean:+.4f}) vs forecast {now:.4f}"
    )
    assert lines[5].startswith("gap loss (estimated): mean ")  # no forecast after the last epoch
    assert [g["epoch"] for g in lens.history.gaps] == [1, 2]


def test_with_lightnings_bar_on_a_silent_callback_still_records_the_history():
    lens = FitlensCallback(verbose=0)
    _fit(Classifier(), [lens], epochs=1, enable_progress_bar=True)
    assert len(lens.history.batches) == 4
    assert set(lens.history.history) == {
        "loss", "loss_now", "loss_now_low", "loss_now_high", "accuracy", "accuracy_now",
        "accuracy_now_low", "accuracy_now_high", "val_loss",
    }  # fmt: skip


def test_log_now_puts_the_now_estimate_next_to_lightnings_step_and_epoch_names():
    lens = FitlensCallback(verbose=0, log_now=True)
    trainer = _fit(Classifier(), [lens], epochs=1)
    logged = trainer.callback_metrics
    assert {"loss_step", "loss_epoch", "loss_now", "accuracy_now"} <= set(logged)
    assert float(logged["loss_now"]) == pytest.approx(lens.history.history["loss_now"][0])


def test_a_bad_now_estimator_fails_before_training():
    with pytest.raises(ValueError, match="estimator name"):
        FitlensCallback(now="median")


def test_tensorboard_writes_the_lenss_figures_at_refreshes_and_epoch_ends_only(tmp_path):
    pytest.importorskip("tensorboard")
    from tb_events import assert_epoch_ends_equal_the_history, scalars

    # A frozen clock: the lens refreshes only at each epoch's first step.
    lens = FitlensCallback(verbose=0, clock=lambda: 0.0, tensorboard=tmp_path / "tb")
    _fit(Classifier(), [lens])
    written = scalars(tmp_path / "tb")
    history = lens.history
    tags = {f"train/{m}_mean": m for m in ("loss", "accuracy")}
    tags |= {f"train/{m}_now": f"{m}_now" for m in ("loss", "accuracy")}
    tags |= {"val/loss": "val_loss"}
    assert_epoch_ends_equal_the_history(history, written, tags)
    # One point per refresh (each epoch's first step) and one per epoch end: none per step.
    assert sorted(written["train/loss_mean"]) == [1, 4, 5, 8]
    for step in (1, 5):  # the mean of one batch is its value
        assert written["train/loss_mean"][step] == np.float32(history.batches["loss"][step - 1])
    assert set(written["lr"].values()) == {np.float32(0.2)}
