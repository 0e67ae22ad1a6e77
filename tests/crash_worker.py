"""A tiny training job run in child processes by test_crash.py (not a test module).

`train` trains a small model with a run directory and, depending on ``kill``, kills its own
process with a real SIGKILL/SIGTERM at a chosen point: after a given global step, in the middle
of a checkpoint write, between the complete temporary file and its rename, after the rename,
in the middle of a history append, or during the end-of-epoch validation. A run that completes
saves its final weights and history to ``result.pt`` in the run directory.
"""

from __future__ import annotations

import errno
import os
import signal
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

import fitlens
from fitlens.core import files as ckpt_module
from fitlens.safety import run_dir as rundir_module

EPOCHS = 3
STEPS = 8  # per epoch: 80 samples in batches of 10
EVERY = 4  # checkpoint every 4 steps (and at every epoch end)
KINDS = ("arrays", "loader", "loader_global", "generator")


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(80, 6, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def _generator_factory() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(11)  # its own seeded stream: resumable exactly
    while True:
        x = rng.standard_normal((10, 6)).astype(np.float32)
        yield torch.from_numpy(x), torch.from_numpy((x[:, 0] > 0).astype(np.int64))


def train_data(kind: str) -> Any:
    x, y = _data()
    if kind == "arrays":
        return (x, y)
    dataset = torch.utils.data.TensorDataset(x, y)
    if kind == "loader":
        gen = torch.Generator().manual_seed(3)
        return torch.utils.data.DataLoader(dataset, batch_size=10, shuffle=True, generator=gen)
    if kind == "loader_global":
        return torch.utils.data.DataLoader(dataset, batch_size=10, shuffle=True)
    return _generator_factory


class Validation:
    """Re-iterable validation batches; kills the process while evaluating epoch ``kill_epoch``."""

    def __init__(self, kill_epoch: int | None = None) -> None:
        x, y = _data()
        self.batches = [(x[i : i + 40], y[i : i + 40]) for i in (0, 40)]
        self.kill_epoch = kill_epoch
        self.passes = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.passes += 1
        yield self.batches[0]
        if self.passes == self.kill_epoch:
            os.kill(os.getpid(), signal.SIGKILL)
        yield self.batches[1]


class SignalAt(fitlens.Callback):
    """Sends ``sig`` to this process after global step ``at`` (1-based)."""

    def __init__(self, at: int, sig: int) -> None:
        self.at, self.sig, self.seen = at, sig, 0

    def on_batch_end(self, step: int, logs: Any) -> None:
        self.seen = self.run.epoch * STEPS + step
        if self.seen == self.at:
            os.kill(os.getpid(), self.sig)


def _patch_checkpoint_write(nth: int, phase: str) -> None:
    """Kill (or fail) the ``nth`` checkpoint write of this process at ``phase``."""
    calls = {"write": 0, "publish": 0}
    real_write, real_publish = ckpt_module._write_bytes, ckpt_module._publish

    def is_ckpt(name: str) -> bool:
        return os.path.basename(str(name)).startswith(".ckpt-")

    def write_bytes(f: Any, data: bytes) -> None:
        if not is_ckpt(f.name):
            return real_write(f, data)
        calls["write"] += 1
        if calls["write"] == nth and phase == "partial":
            f.write(data[: len(data) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if calls["write"] in (nth, nth + 1) and phase == "disk_full":
            f.write(data[:100])
            raise OSError(errno.ENOSPC, "No space left on device (simulated)")
        return real_write(f, data)

    def publish(tmp: Any, path: Any) -> None:
        if not is_ckpt(tmp):
            return real_publish(tmp, path)
        calls["publish"] += 1
        if calls["publish"] == nth and phase == "before_rename":
            os.kill(os.getpid(), signal.SIGKILL)
        real_publish(tmp, path)
        if calls["publish"] == nth and phase == "after_rename":
            os.kill(os.getpid(), signal.SIGKILL)

    ckpt_module._write_bytes = write_bytes  # type: ignore[assignment]
    ckpt_module._publish = publish  # type: ignore[assignment]


def _patch_torn_history(nth: int) -> None:
    """Kill in the middle of the ``nth`` history append, leaving torn last lines."""
    calls = {"n": 0}
    append = rundir_module.RunDir._append

    def torn(self: Any, history: Any) -> None:
        calls["n"] += 1
        if calls["n"] == nth:
            for f in self._files.values():
                f.write('{"type": "batch", "epoch": 1, "st')
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        append(self, history)

    rundir_module.RunDir._append = torn  # type: ignore[method-assign]


def train(
    run_dir: str, kind: str, kill: tuple[Any, ...] | None = None, resume: bool | str = False
) -> None:
    """Train (or resume) the job; see the module docstring for ``kill``."""
    torch.set_num_threads(1)
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 2)
    )
    torch.manual_seed(2)  # the data order (arrays) and dropout come from here
    callbacks: list[fitlens.Callback] = []
    validation = Validation()
    what = kill[0] if kill else None
    if what == "step":
        callbacks.append(SignalAt(kill[1], signal.SIGKILL))  # type: ignore[index]
    elif what == "sigterm":
        callbacks.append(SignalAt(kill[1], signal.SIGTERM))  # type: ignore[index]
    elif what == "write":
        _patch_checkpoint_write(kill[1], kill[2])  # type: ignore[index]
    elif what == "history":
        _patch_torn_history(kill[1])  # type: ignore[index]
    elif what == "validation":
        validation = Validation(kill_epoch=kill[1])  # type: ignore[index]
    elif what == "disk_full_then_kill":
        _patch_checkpoint_write(kill[1], "disk_full")  # type: ignore[index]
        callbacks.append(SignalAt(kill[2], signal.SIGKILL))  # type: ignore[index]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fitlens.fit(
            model,
            train_data(kind),
            loss="cross_entropy",
            optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
            metrics=["accuracy"],
            epochs=EPOCHS,
            batch_size=10 if kind == "arrays" else None,  # loaders make their own batches
            steps_per_epoch=STEPS if kind == "generator" else None,
            validation_data=validation,
            callbacks=callbacks,
            verbose=0,
            clock=lambda: 0.0,  # deterministic refresh points (step 1, checkpoints, epoch end)
            run_dir=run_dir,
            resume=resume,
            checkpointing=fitlens.Checkpointing(every_steps=EVERY, every_minutes=None),
        )
    torch.save(
        {
            "model": model.state_dict(),
            "history": history.history,
            "batches": {
                c: torch.from_numpy(np.array(history.batches[c])) for c in ("loss", "accuracy")
            },
            "warnings": [str(w.message) for w in caught],
        },
        os.path.join(run_dir, "result.pt"),
    )
