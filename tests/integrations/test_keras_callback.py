"""The Keras 3 callback against real Keras (torch backend) training small models.

The reference values are computed independently of the callback: the model records each batch's
loss as `compute_loss` returns it and each batch's (weighted) accuracy from the predictions.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip("these tests run Keras on its torch backend", allow_module_level=True)

from fitlens.core.numbers import format_interval  # noqa: E402
from fitlens.keras import FitlensCallback  # noqa: E402

TOL = 1e-6
# Keras's torch backend converts logs with np.array(tensor), which numpy 2 flags; not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()  # torch backend


class RecordingModel(keras.Model):
    """A small classifier that records every training batch's loss and accuracy as computed."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.head = keras.layers.Dense(3)
        self.batch_loss: list[float] = []
        self.batch_accuracy: list[float] = []
        self.batch_weighted_accuracy: list[float] = []
        self.batch_size_seen: list[int] = []

    def call(self, x):
        return self.head(self.hidden(x))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training)
        if training:
            pred = np.argmax(_numpy(y_pred), axis=-1)
            correct = (pred == _numpy(y).reshape(-1)).astype(np.float64)
            w = (
                np.ones_like(correct)
                if sample_weight is None
                else _numpy(sample_weight).astype(np.float64)
            )
            self.batch_loss.append(float(_numpy(loss)))
            self.batch_accuracy.append(float(correct.mean()))
            self.batch_weighted_accuracy.append(float((w * correct).sum() / w.sum()))
            self.batch_size_seen.append(len(correct))
        return loss


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = (rng.normal(size=(3, 8))[y] * 1.5 + rng.normal(size=(n, 8))).astype("float32")
    w = rng.uniform(0.2, 3.0, size=n).astype("float32")
    return x, y, w


def _model(**compile_kwargs) -> RecordingModel:
    keras.utils.set_random_seed(0)
    model = RecordingModel()
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_kwargs,
    )
    return model


def test_recovered_batch_values_match_the_batches_as_computed_with_a_partial_last_batch():
    x, y, w = _data(100)
    model = _model(metrics=["accuracy"], weighted_metrics=["accuracy"])
    lens = FitlensCallback(verbose=0)
    keras_history = model.fit(
        x, y, sample_weight=w, batch_size=32, epochs=2, shuffle=False, verbose=0, callbacks=[lens]
    )
    log = lens.history.batches
    assert log["size"].tolist() == [32, 32, 32, 4] * 2 == model.batch_size_seen
    assert log["step"].tolist() == [1, 2, 3, 4] * 2
    np.testing.assert_allclose(log["loss"], model.batch_loss, atol=TOL, rtol=0)
    # `metrics=` ignore sample weights; `weighted_metrics=` weigh each sample by its weight.
    np.testing.assert_allclose(log["accuracy"], model.batch_accuracy, atol=TOL, rtol=0)
    np.testing.assert_allclose(
        log["weighted_accuracy"], model.batch_weighted_accuracy, atol=TOL, rtol=0
    )
    for key in ("loss", "accuracy", "weighted_accuracy"):
        np.testing.assert_allclose(
            lens.history.history[key], keras_history.history[key], atol=TOL, rtol=0
        )
        assert len(lens.history.history[f"{key}_now"]) == 2


def test_groups_of_batches_give_the_groups_weighted_mean_as_steps_per_execution_does():
    """Keras's torch backend refuses steps_per_execution > 1; JAX and TensorFlow call the batch
    hook once per group with the index of the group's last batch (the last group's index runs
    past the epoch's end). `Grouped` forwards the hooks of a real run in exactly that pattern."""
    group = 3

    class Grouped(keras.callbacks.Callback):
        def __init__(self, inner: keras.callbacks.Callback, steps: int) -> None:
            super().__init__()
            self.inner, self.steps = inner, steps

        def set_model(self, model):
            self.inner.set_model(model)

        def set_params(self, params):
            self.inner.set_params(params)

        def on_train_begin(self, logs=None):
            self.inner.on_train_begin(logs)

        def on_epoch_begin(self, epoch, logs=None):
            self.inner.on_epoch_begin(epoch, logs)

        def on_train_batch_begin(self, batch, logs=None):
            if batch % group == 0:
                self.inner.on_train_batch_begin(batch, logs)

        def on_train_batch_end(self, batch, logs=None):
            if batch % group == group - 1:
                self.inner.on_train_batch_end(batch, logs)
            elif batch == self.steps - 1:
                self.inner.on_train_batch_end(batch - batch % group + group - 1, logs)

        def on_epoch_end(self, epoch, logs=None):
            self.inner.on_epoch_end(epoch, logs)

        def on_train_end(self, logs=None):
            self.inner.on_train_end(logs)

    x, y, _ = _data(105)  # 11 batches of 10, 10, ..., 5: groups of 3, 3, 3 and 2
    model = _model(metrics=["accuracy"])
    lens = FitlensCallback(verbose=0)
    keras_history = model.fit(
        x, y, batch_size=10, epochs=1, verbose=0, callbacks=[Grouped(lens, 11)]
    )
    sizes = np.array(model.batch_size_seen, dtype=np.float64)
    bounds = [(0, 3), (3, 6), (6, 9), (9, 11)]
    log = lens.history.batches
    assert log["step"].tolist() == [3, 6, 9, 11]
    assert log["size"].tolist() == [sizes[a:b].sum() for a, b in bounds]
    for name, recorded in (("loss", model.batch_loss), ("accuracy", model.batch_accuracy)):
        expected = [np.average(recorded[a:b], weights=sizes[a:b]) for a, b in bounds]
        np.testing.assert_allclose(log[name], expected, atol=TOL, rtol=0)
        np.testing.assert_allclose(
            lens.history.history[name], keras_history.history[name], atol=TOL, rtol=0
        )


def _fit_two_epochs(model, x, y, lens):
    """Two epochs of 6 batches of 16 on ``x[:96]``, validated on the rest."""
    return model.fit(
        x[:96],
        y[:96],
        batch_size=16,
        epochs=2,
        validation_data=(x[96:], y[96:]),
        verbose=0,
        callbacks=[lens],
    )


def test_history_has_fit_format_with_validation_and_the_display_shows_gap_and_forecast():
    x, y, _ = _data(120)
    model = _model(metrics=["accuracy"])
    out = io.StringIO()
    lens = FitlensCallback(verbose=2, file=out)
    keras_history = _fit_two_epochs(model, x, y, lens)
    history = lens.history.history
    assert list(history) == [
        "loss", "loss_now", "loss_now_low", "loss_now_high", "accuracy", "accuracy_now",
        "accuracy_now_low", "accuracy_now_high", "val_accuracy", "val_loss",
    ]  # fmt: skip
    # ranges from the names: accuracy in [0, 1], the loss >= 0
    assert min(history["accuracy_now_low"]) >= 0.0 and max(history["accuracy_now_high"]) <= 1.0
    assert min(history["loss_now_low"]) >= 0.0
    for key in ("val_loss", "val_accuracy"):
        np.testing.assert_allclose(history[key], keras_history.history[key], atol=TOL, rtol=0)
    assert lens.history.epoch == [0, 1]
    assert lens.history.params["framework"] == "keras"
    lines = out.getvalue().splitlines()
    assert len(lines) == 6 and lines[0].startswith("Epoch 1/2 - 6 steps - ")
    assert lines[4].startswith("Epoch 2/2 - 6 steps - ")
    assert lines[5].startswith("gap accuracy (estimated): mean ")  # no forecast after the last
    _assert_end_lines_match_the_history(lines, lens.history)


def _assert_end_lines_match_the_history(lines, history):
    """fit's gap, forecast and check lines (fitlens.view.epoch_end), with the run's own numbers."""
    h, log = history.history, history.batches
    mean, now, val = h["accuracy"][0], h["accuracy_now"][0], h["val_accuracy"][0]
    shown = " ".join(format_interval(now, h["accuracy_now_low"][0], h["accuracy_now_high"][0]))
    assert f"accuracy: {mean:.4f} (now {shown}" in lines[0]  # the display shows the interval
    assert lines[1].startswith(f"gap accuracy (estimated): mean {mean:.4f} -> now ~{shown} ")
    assert lines[1].endswith(
        f"(lag ~{now - mean:+.4f}) -> val {val:.4f} (mode + generalisation ~{val - now:+.4f})"
    )
    assert lines[2].startswith(
        f"forecast epoch 2: its first 3 batches should show accuracy ~{now:.4f} ± "
    )
    first = log["epoch"] == 2
    observed = np.average(log["accuracy"][first][:3], weights=log["size"][first][:3])
    assert lines[3].startswith(
        f"forecast check epoch 2: accuracy {observed:.4f} after 3 batches "
        f"(jump {observed - mean:+.4f}) vs forecast {now:.4f} ± "
    )


def test_a_metric_that_is_not_a_mean_shows_kerass_value_without_batch_values():
    x, y, _ = _data(64)
    model = _model(metrics=["accuracy", keras.metrics.Precision(name="precision", class_id=0)])
    lens = FitlensCallback(verbose=0)
    keras_history = model.fit(
        x, (y == 0).astype("int64"), batch_size=16, epochs=1, verbose=0, callbacks=[lens]
    )
    assert np.isnan(lens.history.batches["precision"]).all()
    assert lens.history.history["precision"] == pytest.approx(keras_history.history["precision"])
    assert np.isnan(lens.history.history["precision_now"]).all()


def test_kerass_own_bar_left_on_draws_a_warning():
    x, y, _ = _data(32)
    model = _model()
    with pytest.warns(UserWarning, match="verbose=0"):
        lens = FitlensCallback(verbose=2, file=io.StringIO())
        model.fit(x, y, batch_size=16, epochs=1, verbose=2, callbacks=[lens])


def test_a_bad_now_estimator_fails_before_training():
    with pytest.raises(ValueError, match="estimator name"):
        FitlensCallback(now="median")


def test_tensorboard_writes_the_lenss_figures_at_refreshes_and_epoch_ends_only(tmp_path):
    pytest.importorskip("tensorboard")
    from tb_events import assert_epoch_ends_equal_the_history, scalars

    x, y, _ = _data(120)
    model = _model(metrics=["accuracy"])
    # A frozen clock: the lens refreshes only at each epoch's first step.
    lens = FitlensCallback(verbose=0, clock=lambda: 0.0, tensorboard=tmp_path / "tb")
    _fit_two_epochs(model, x, y, lens)
    written = scalars(tmp_path / "tb")
    history = lens.history
    tags = {f"train/{m}_mean": m for m in ("loss", "accuracy")}
    tags |= {f"train/{m}_now": f"{m}_now" for m in ("loss", "accuracy")}
    tags |= {f"val/{m}": f"val_{m}" for m in ("loss", "accuracy")}
    assert_epoch_ends_equal_the_history(history, written, tags)
    # One point per refresh (each epoch's first step) and one per epoch end: none per step.
    assert sorted(written["train/loss_mean"]) == [1, 6, 7, 12]
    for step in (1, 7):  # the mean of one batch of 16 is its value
        assert written["train/loss_mean"][step] == np.float32(history.batches["loss"][step - 1])
    assert set(written["lr"].values()) == {np.float32(0.1)}
