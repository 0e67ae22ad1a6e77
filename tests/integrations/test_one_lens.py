"""One recorded stream of batch values through all three entry points gives one `History`.

`fitlens.fit`, the Keras 3 callback (real ``model.fit``, torch backend) and the Lightning
callback (real ``Trainer.fit``) each replay the same stream of per-batch loss and accuracy
values. They drive the same `Lens`, so ``history.history``, ``history.gaps`` and the batch log's
value columns must agree bit for bit, whatever the clock does to the display's refresh steps.

Exactness: the stream is built so that no entry point rounds. Every running mean ``m_k`` is a
multiple of 1/64 and each batch value is ``v_k = k m_k - (k-1) m_{k-1}``, so with 32 samples a
batch Keras's float32 ``total`` (``32 k m_k`` < 2^24 / 64) and its ``total / count`` are exact,
and the callback's unrolling ``(W_k m_k - W_{k-1} m_{k-1}) / 32`` gives ``v_k`` back exactly;
Lightning logs the values as float32 tensors, exact for these dyadic values. The batch log's
``step_time``/``data_time`` columns and ``History.timing`` are the clock's readings, so they are
left out of the comparison by construction.
"""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fitlens
from fitlens.core.metric_range import RATE
from fitlens.view.progress import Progress

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
L = pytest.importorskip("lightning.pytorch")
if keras.backend.backend() != "torch":
    pytest.skip("Keras runs on its torch backend here", allow_module_level=True)

import fitlens.keras  # noqa: E402
import fitlens.lightning  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)

EPOCHS, STEPS, BATCH = 3, 80, 32  # 80 steps: one whole 64-step estimator block and a tail


def _stream(seed: int = 0) -> np.ndarray:
    """(EPOCHS, STEPS, 2) batch values (loss, accuracy) whose running means are on a 1/64 grid."""
    rng = np.random.default_rng(seed)
    out = np.empty((EPOCHS, STEPS, 2))
    for e in range(EPOCHS):
        for col, (start, drift) in enumerate(((96, -1), (32, 1))):  # loss falls, accuracy rises
            means = start + drift * e * 8 + np.cumsum(rng.integers(-1, 2, STEPS)) // 4
            means = means / 64.0
            k = np.arange(1, STEPS + 1)
            out[e, :, col] = k * means - (k - 1) * np.concatenate([[0.0], means[:-1]])
    return out


class RefreshLog(Progress):
    """The real line display, also noting the steps at which it refreshed."""

    def __init__(self, **kwargs) -> None:
        super().__init__(1, file=io.StringIO(), mode="lines", **kwargs)
        self.steps: list[tuple[int, int]] = []

    def refresh(self, state) -> None:
        self.steps.append((state.epoch, state.step))
        super().refresh(state)


class TickingClock:
    """Every reading advances time by ``tick`` seconds."""

    def __init__(self, tick: float) -> None:
        self.t, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t


def _accuracy(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The stream's accuracy column, declared a rate as the callbacks infer from its name."""
    return y[:, 1].mean()


_accuracy.fitlens_range = RATE  # type: ignore[attr-defined]


def _via_fit(values: np.ndarray, progress: Progress, clock) -> fitlens.History:
    def batches():
        for epoch in values:
            for loss, accuracy in epoch:
                y = torch.tensor([[loss, accuracy]], dtype=torch.float32).repeat(BATCH, 1)
                yield torch.zeros(BATCH, 1), y

    model = torch.nn.Linear(1, 1)
    return fitlens.fit(
        model,
        batches(),
        loss=lambda out, y: y[:, 0].mean() + 0.0 * out.sum(),
        optimizer="sgd",
        metrics={"accuracy": _accuracy},
        epochs=EPOCHS,
        steps_per_epoch=STEPS,
        verbose=progress,
        clock=clock,
    )


class Replay(keras.Model):
    """A Keras model whose train step updates Keras's own Mean trackers with the stream."""

    def __init__(self, values: np.ndarray) -> None:
        super().__init__()
        self.values = values.reshape(-1, 2)
        self.calls = 0
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def call(self, x):
        return x

    def train_step(self, data):
        loss, accuracy = self.values[self.calls]
        self.calls += 1
        self.loss_tracker.update_state(float(loss), sample_weight=BATCH)
        self.accuracy_tracker.update_state(float(accuracy), sample_weight=BATCH)
        return {m.name: m.result() for m in self.metrics}


def _via_keras(values: np.ndarray, progress: Progress, clock) -> fitlens.History:
    model = Replay(values)
    model.compile(optimizer="sgd")
    lens = fitlens.keras.FitlensCallback(progress, clock=clock)
    x = np.zeros((STEPS * BATCH, 1), dtype="float32")
    model.fit(x, x, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[lens])
    return lens.history


class LightningReplay(L.LightningModule):
    """Logs the stream's values with ``self.log(..., on_step=True, on_epoch=True)``."""

    def __init__(self, values: np.ndarray) -> None:
        super().__init__()
        self.values = values.reshape(-1, 2)
        self.calls = 0
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        loss, accuracy = self.values[self.calls]
        self.calls += 1
        self.log("loss", float(loss), on_step=True, on_epoch=True, batch_size=BATCH)
        self.log("accuracy", float(accuracy), on_step=True, on_epoch=True, batch_size=BATCH)
        return self.weight.sum() * 0.0 + float(loss)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _via_lightning(values: np.ndarray, progress: Progress, clock) -> fitlens.History:
    lens = fitlens.lightning.FitlensCallback(progress, clock=clock)
    zeros = torch.zeros(STEPS * BATCH, 1)
    data = DataLoader(TensorDataset(zeros, zeros), batch_size=BATCH)
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        callbacks=[lens],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        accelerator="cpu",
    )
    trainer.fit(LightningReplay(values), data)
    return lens.history


def _recorded(history: fitlens.History) -> dict[str, str | bytes]:
    """What must agree bit for bit: per-epoch values, gap records, the batch log's values."""
    out: dict[str, str | bytes] = {
        "history": json.dumps(history.history, sort_keys=True),  # repr of floats: exact
        "gaps": json.dumps(history.gaps, sort_keys=True),
    }
    for column in ("epoch", "step", "size", "loss", "accuracy"):
        out[column] = np.asarray(history.batches[column], dtype=np.float64).tobytes()
    return out


@pytest.mark.slow
def test_fit_keras_and_lightning_record_the_same_history_whatever_the_refresh_timing():
    values = _stream()
    runs = []
    refreshes = []
    for entry in (_via_fit, _via_keras, _via_lightning):
        for tick, log_every in ((0.013, None), (0.0005, 7)):
            progress = RefreshLog(log_every=log_every)
            runs.append(
                (entry.__name__, tick, _recorded(entry(values, progress, TickingClock(tick))))
            )
            refreshes.append(progress.steps)
    assert len({tuple(r) for r in refreshes}) > 1  # the refreshes did fall at different steps
    assert all(len(r) > EPOCHS for r in refreshes)  # and mid-epoch, not only at epoch starts
    name, tick, reference = runs[0]
    # The stream itself came through unchanged: the exactness argument holds.
    np.testing.assert_array_equal(
        np.frombuffer(reference["loss"]), values[:, :, 0].reshape(-1), strict=True
    )
    for other, other_tick, recorded in runs[1:]:
        for key, value in reference.items():
            assert recorded[key] == value, f"{key}: {other} (tick {other_tick}) vs {name}"
    assert len(json.loads(reference["gaps"])) == EPOCHS


def _fit_in_a_loop(values: np.ndarray, progress: Progress, clock) -> fitlens.History:
    batches = iter(
        (torch.zeros(BATCH, 1), torch.tensor([[loss, accuracy]]).float().repeat(BATCH, 1))
        for epoch in values
        for loss, accuracy in epoch
    )
    model, history = torch.nn.Linear(1, 1), None
    for _ in range(EPOCHS):  # the seed user's loop: one epoch per call, the history handed back
        history = fitlens.fit(
            model,
            batches,
            loss=lambda out, y: y[:, 0].mean() + 0.0 * out.sum(),
            optimizer="sgd",
            metrics={"accuracy": _accuracy},
            epochs=1,
            steps_per_epoch=STEPS,
            verbose=progress,
            clock=clock,
            history=history,
        )
    assert history is not None
    return history


def _keras_in_a_loop(values: np.ndarray, progress: Progress, clock) -> fitlens.History:
    model = Replay(values)
    model.compile(optimizer="sgd")
    lens = fitlens.keras.FitlensCallback(progress, clock=clock)
    x = np.zeros((STEPS * BATCH, 1), dtype="float32")
    for _ in range(EPOCHS):  # for i in range(epochs): model.fit(..., epochs=1)
        model.fit(x, x, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[lens])
    return lens.history


def _lightning_in_a_loop(values: np.ndarray, progress: Progress, clock) -> fitlens.History:
    lens = fitlens.lightning.FitlensCallback(progress, clock=clock)
    module = LightningReplay(values)
    zeros = torch.zeros(STEPS * BATCH, 1)
    for _ in range(EPOCHS):  # a new Trainer per call, the same callback
        L.Trainer(
            max_epochs=1,
            callbacks=[lens],
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            accelerator="cpu",
        ).fit(module, DataLoader(TensorDataset(zeros, zeros), batch_size=BATCH))
    return lens.history


@pytest.mark.slow
@pytest.mark.parametrize(
    ("one_call", "in_a_loop"),
    [
        (_via_fit, _fit_in_a_loop),
        (_via_keras, _keras_in_a_loop),
        (_via_lightning, _lightning_in_a_loop),
    ],
    ids=["fit", "keras", "lightning"],
)
def test_one_epoch_per_call_in_a_loop_continues_one_run(one_call, in_a_loop):
    values = _stream(seed=1)
    whole = one_call(values, RefreshLog(), TickingClock(0.01))
    looped_display = RefreshLog()
    looped = in_a_loop(values, looped_display, TickingClock(0.01))
    assert _recorded(looped) == _recorded(whole)  # numbered on, rows kept, estimators carried
    assert looped.epoch == [0, 1, 2]
    text = looped_display.out.getvalue()
    epoch_lines = [
        line for line in text.splitlines() if re.match(r"Epoch \d+/\d+ - \d+ steps", line)
    ]
    assert [line.split(" - ")[0] for line in epoch_lines] == [
        "Epoch 1/1",
        "Epoch 2/2",
        "Epoch 3/3",
    ]
    # The forecast made at the end of one call is shown, and checked, in the next.
    for epoch in (2, 3):
        assert f"forecast epoch {epoch}: its first 3 batches should show accuracy" in text
        assert f"forecast check epoch {epoch}: accuracy" in text


def test_fit_with_initial_epoch_runs_the_epochs_keras_would():
    values = _stream(seed=2)
    whole = _via_fit(values, RefreshLog(), TickingClock(0.01))
    batches = iter(
        (torch.zeros(BATCH, 1), torch.tensor([[loss, accuracy]]).float().repeat(BATCH, 1))
        for epoch in values
        for loss, accuracy in epoch
    )
    model, history = torch.nn.Linear(1, 1), None
    for first, end in ((0, 2), (2, 3)):  # Keras's fit(epochs=end, initial_epoch=first)
        history = fitlens.fit(
            model,
            batches,
            loss=lambda out, y: y[:, 0].mean() + 0.0 * out.sum(),
            optimizer="sgd",
            metrics={"accuracy": _accuracy},
            epochs=end,
            initial_epoch=first,
            steps_per_epoch=STEPS,
            verbose=0,
            clock=TickingClock(0.01),
            history=history,
        )
    assert history is not None and history.epoch == [0, 1, 2]
    assert _recorded(history) == _recorded(whole)


def test_bad_initial_epoch_or_history_is_refused_before_training():
    model = torch.nn.Linear(1, 1)
    data = (np.zeros((8, 1), "float32"), np.zeros((8, 1), "float32"))
    with pytest.raises(ValueError, match=r"0 <= initial_epoch < epochs"):
        fitlens.fit(model, data, loss="mse", optimizer="sgd", epochs=2, initial_epoch=2)
    with pytest.raises(TypeError, match=r"Expected `history` to be the fitlens\.History"):
        fitlens.fit(model, data, loss="mse", optimizer="sgd", history={"loss": [1.0]})
