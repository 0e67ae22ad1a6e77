"""Time spent inside the Keras and Lightning callbacks' hooks, per training batch.

Whole-run timings of tiny models on a shared CPU vary more between repeats than the callbacks
cost, so this script measures the callbacks directly: a subclass accumulates the wall time of
every hook call (batch begin/end, epoch begin/end), and the script prints it per batch next to
the run's seconds per step (the same run), with their ratio. Run:

    KERAS_BACKEND=torch PYTHONPATH=src python benchmarks/integration_overhead.py
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

N, BATCH, EPOCHS = 4096, 32, 2
STEPS = EPOCHS * (N // BATCH)
HOOKS = (
    "on_train_batch_begin",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_epoch_start",
    "on_train_epoch_end",
)


def timed(cls: type) -> Any:
    """An instance of a subclass of ``cls`` whose hook calls add their wall time to ``spent``."""

    def wrap(name: str) -> Any:
        inner = getattr(cls, name)

        def hook(self: Any, *args: Any, **kwargs: Any) -> None:
            t = time.perf_counter()
            inner(self, *args, **kwargs)
            self.spent += time.perf_counter() - t

        return hook

    body = {name: wrap(name) for name in HOOKS if hasattr(cls, name)}
    instance = type(f"Timed{cls.__name__}", (cls,), body)(1, file=io.StringIO())
    instance.spent = 0.0
    return instance


def keras_run(with_callback: bool) -> tuple[float, float]:
    import keras

    from fitlens.keras import FitlensCallback

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 32)).astype("float32")
    y = rng.integers(0, 4, size=N)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((32,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(4)]
    )
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    lens = timed(FitlensCallback)
    t = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, callbacks=[lens])
    return (time.perf_counter() - t) / STEPS, lens.spent / STEPS


def lightning_run() -> tuple[float, float]:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fitlens.lightning import FitlensCallback

    class Net(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)
            )

        def training_step(self, batch: Any, i: int) -> Any:
            xb, yb = batch
            out = self.net(xb)
            loss = torch.nn.functional.cross_entropy(out, yb)
            self.log("loss", loss, on_step=True, on_epoch=True)
            self.log("acc", (out.argmax(1) == yb).float().mean(), on_step=True, on_epoch=True)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters())

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(N, 32, generator=g), torch.randint(0, 4, (N,), generator=g))
    lens = timed(FitlensCallback)
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        callbacks=[lens],
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        t = time.perf_counter()
        trainer.fit(Net(), DataLoader(data, batch_size=BATCH))
    return (time.perf_counter() - t) / STEPS, lens.spent / STEPS


def main() -> None:
    print(f"MLP 32-64-4, {N} samples, batch {BATCH}, {EPOCHS} epochs ({STEPS} steps), CPU")
    print(f"{'callback':<34} {'step ms':>8} {'hooks us/step':>14} {'share':>7}")
    for name, run in (("fitlens.keras (torch backend)", lambda: keras_run(True)),
                      ("fitlens.lightning", lightning_run)):  # fmt: skip
        step, hooks = run()
        print(f"{name:<34} {step * 1e3:8.2f} {hooks * 1e6:14.0f} {hooks / step:7.1%}")


if __name__ == "__main__":
    main()
