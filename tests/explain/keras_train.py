"""Train a tiny Keras 3 model (torch backend) and record Keras's own full-precision running means.

Run by ``test_real_keras.py`` in a subprocess, so its progress bar goes wherever the test points
stdout (a pseudo-terminal, a pipe). Usage:

    python keras_train.py SAMPLES BATCH EPOCHS VERBOSE TRUTH.json [extras]

``extras`` adds an AUC metric and holds out 20% for validation (``val_*`` values).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np


class Truth(keras.callbacks.Callback):
    """Keeps the logs Keras hands to callbacks: the running means, unrounded."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append({"batches": [], "end": None})

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[-1]["batches"].append({k: float(v) for k, v in (logs or {}).items()})

    def on_epoch_end(self, epoch, logs=None):
        self.epochs[-1]["end"] = {k: float(v) for k, v in (logs or {}).items()}


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
    extras = sys.argv[6:] == ["extras"]
    metrics: list = ["accuracy", keras.metrics.AUC(name="auc")] if extras else ["accuracy"]
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy", metrics=metrics)
    truth = Truth()
    split = 0.2 if extras else 0.0
    model.fit(
        x,
        y,
        batch_size=batch,
        epochs=epochs,
        verbose=verbose,
        callbacks=[truth],
        validation_split=split,
    )
    trained = samples - int(samples * split)  # Keras holds out the last int(n * split) samples
    with open(sys.argv[5], "w") as f:
        json.dump({"samples": trained, "batch": batch, "epochs": truth.epochs}, f)


if __name__ == "__main__":
    main()
