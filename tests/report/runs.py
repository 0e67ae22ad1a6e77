"""Real runs for the report tests (helpers): a small MLP trained by `fitlens.fit`, with a run directory."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fitlens


def blob_data(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 3-class problem: ``n`` samples of 8 float32 features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    centers = rng.normal(size=(3, 8)) * 2
    x = (centers[y] + rng.normal(size=(n, 8))).astype(np.float32)
    return x, y


def train(
    run_dir: Path | None = None,
    *,
    epochs: int = 3,
    batch_size: int = 16,
    metrics: Any = ("accuracy",),
    train_eval: Any = None,
    callbacks: Any = (),
    resume: bool = False,
    n: int = 240,
    clock: Any = None,
    tensorboard: Any = None,
) -> tuple[fitlens.History, str]:
    """Train the seeded MLP; returns the history and everything the display printed."""
    torch.manual_seed(0)
    x, y = blob_data(n)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    out = io.StringIO()
    history = fitlens.fit(
        model,
        (x[: n - 60], y[: n - 60]),
        loss="cross_entropy",
        optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
        metrics=list(metrics) if not isinstance(metrics, dict) else metrics,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=(x[n - 60 :], y[n - 60 :]),
        verbose=fitlens.Progress(1, file=out, mode="lines"),
        train_eval=train_eval,
        run_dir=run_dir,
        resume=resume,
        callbacks=list(callbacks),
        clock=clock,
        tensorboard=tensorboard,
    )
    return history, out.getvalue()


class InterruptAt(fitlens.Callback):
    """Sends this process a real SIGINT after global step ``at`` (fit stops after that step)."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step = epoch, step

    def on_batch_end(self, step: int, logs: Any) -> None:
        if self.run.epoch == self.epoch and step == self.step:
            os.kill(os.getpid(), signal.SIGINT)
