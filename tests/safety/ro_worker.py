"""Runs `fitlens.fit` (the run of test_run_dir's `_fit`, 3 epochs) on a run directory and prints what happened as one JSON line (a helper
of the read-only file-system tests, which run it inside a mount namespace or as another user).

Usage: python ro_worker.py RUN_DIR [--resume] [--fill-at-epoch N FILE]
"""

from __future__ import annotations

import errno
import io
import json
import os
import sys
import warnings
from contextlib import redirect_stderr

import torch

import fitlens


class FillDisk(fitlens.Callback):
    """Fills the file system with ``path`` at the start of 0-based ``epoch`` (a disk that runs
    full mid-run: every later write fails with ENOSPC)."""

    def __init__(self, epoch: int, path: str) -> None:
        self.epoch, self.path = epoch, path

    def on_epoch_begin(self, epoch: int, logs: object) -> None:
        if epoch != self.epoch:
            return
        with open(self.path, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise


def main(argv: list[str]) -> None:
    run_dir, resume = argv[0], "--resume" in argv
    callbacks = []
    if "--fill-at-epoch" in argv:
        i = argv.index("--fill-at-epoch")
        callbacks.append(FillDisk(int(argv[i + 1]), argv[i + 2]))
    torch.manual_seed(0)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    y = (x.sum(1) > 0).long()
    err = io.StringIO()
    out: dict[str, object] = {}
    with warnings.catch_warnings(record=True) as caught, redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            history = fitlens.fit(
                torch.nn.Linear(3, 2), (x, y), loss="cross_entropy", optimizer="sgd",
                metrics=["accuracy"], epochs=3, batch_size=8, validation_data=(x, y),
                verbose=0, run_dir=run_dir, resume=resume, callbacks=callbacks,
            )  # fmt: skip
            out["epochs"] = len(history.epoch)
        except Exception as e:  # what the user sees: the type and message, and its chain
            out["error"] = f"{type(e).__name__}: {e}"
            out["chained"] = e.__cause__ is not None or (
                e.__context__ is not None and not e.__suppress_context__
            )
    checkpoints = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(checkpoints):
        out["checkpoints"] = sorted(os.listdir(checkpoints))
    out["warnings"] = [str(w.message) for w in caught]
    out["stderr"] = err.getvalue()
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
