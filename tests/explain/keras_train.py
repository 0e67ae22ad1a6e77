"""Train a tiny Keras 3 model (torch backend) and record Keras's own full-precision running means.

Run by ``test_real_keras.py`` in a subprocess, so its progress bar goes wherever the test points
stdout (a pseudo-terminal, a pipe). Usage:

    python keras_train.py SAMPLES BATCH EPOCHS VERBOSE TRUTH.json [extras|slow|late_first|loop]

``extras`` adds an AUC metric and holds out 20% for validation (``val_*`` values). ``slow`` adds
a batch-end callback that sleeps 0.12 s after every fifth batch and lets Keras run batch-end
callbacks in its thread pool (all callbacks ``async_safe``): the progress bar then prints those
batches' updates after later ones, as real Keras 3 logs do. ``loop`` calls ``fit(epochs=1)``
once per epoch with the user's own line before each call, as the seed user's script does.
``late_first`` holds each epoch's first batch-end callbacks back until the last batch's have
run, and 0.3 s more, so the bar draws step 1 after later steps, on the same line (what a loaded
machine does now and then to any Keras 3 log: batch-end callbacks run in a thread pool).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np


class Truth(keras.callbacks.Callback):
    """Keeps the logs Keras hands to callbacks: the running means, unrounded, by batch index."""

    async_safe = True  # batch-end calls may run in Keras's thread pool, in any order

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[dict] = []
        self._batches: dict[int, dict] = {}

    def on_epoch_begin(self, epoch, logs=None):
        self._batches = {}

    def on_train_batch_end(self, batch, logs=None):
        self._batches[batch] = {k: float(v) for k, v in (logs or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        batches = [self._batches[i] for i in sorted(self._batches)]
        self.epochs.append({"batches": batches, "end": {k: float(v) for k, v in logs.items()}})


class Slow(keras.callbacks.Callback):
    """Delays every fifth batch's callbacks, so the progress bar prints them late."""

    async_safe = True

    def on_train_batch_end(self, batch, logs=None):
        if batch % 5 == 4:
            time.sleep(0.12)


class LateFirst(keras.callbacks.Callback):
    """Runs each epoch's first batch-end callbacks after every other batch's, and 0.3 s later
    (more than the bar's 0.05 s redraw interval), so the bar draws step 1 last."""

    async_safe = True

    def __init__(self) -> None:
        super().__init__()
        self._rest_done = threading.Event()

    def on_epoch_begin(self, epoch, logs=None):
        self._rest_done.clear()

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.params["steps"] - 1:
            self._rest_done.set()
        elif batch == 0:
            self._rest_done.wait(timeout=60)
            time.sleep(0.3)


def main() -> None:
    samples, batch, epochs, verbose = (int(a) for a in sys.argv[1:5])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 8)).astype("float32")
    y = (x[:, :2].sum(axis=1) > 0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    mode = sys.argv[6] if len(sys.argv) > 6 else ""
    extras = mode == "extras"
    metrics: list = ["accuracy", keras.metrics.AUC(name="auc")] if extras else ["accuracy"]
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy", metrics=metrics)
    truth = Truth()
    split = 0.2 if extras else 0.0
    callbacks: list = {"slow": [Slow(), truth], "late_first": [LateFirst(), truth]}.get(
        mode, [truth]
    )
    calls = epochs if mode == "loop" else 1
    for call in range(calls):
        if mode == "loop":
            print(f"train_model:: starting epoch {call + 1}/{calls}", flush=True)
        model.fit(
            x,
            y,
            batch_size=batch,
            epochs=1 if mode == "loop" else epochs,
            verbose=verbose,
            callbacks=callbacks,
            validation_split=split,
        )
    trained = samples - int(samples * split)  # Keras holds out the last int(n * split) samples
    with open(sys.argv[5], "w") as f:
        json.dump({"samples": trained, "batch": batch, "epochs": truth.epochs}, f)


if __name__ == "__main__":
    main()
