"""Memory of ``History.batches`` per recorded training step, for a million steps.

1. Appends 1,000,000 rows (loss and accuracy columns) to a `BatchLog` in chunks of 250 rows, as
   the loop's refreshes do, and reports: bytes per step of the recorded rows (``nbytes``), bytes
   allocated including the geometric growth's spare capacity, and the peak traced by
   ``tracemalloc`` while recording (the growth copies old and new arrays for a moment).
2. Runs ``fitlens.fit`` for ``--fit-steps`` steps of a tiny model and reports the same figures
   for the ``History`` it returns, to show that the loop stores nothing else per step.

Usage::

    PYTHONPATH=src python benchmarks/history_memory.py                  # ~15 s
    PYTHONPATH=src python benchmarks/history_memory.py --steps 10000000
"""

from __future__ import annotations

import argparse
import os
import sys
import tracemalloc

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import describe_machine

import fitlens
from fitlens.core.history import BatchLog


def allocated(log: BatchLog) -> int:
    return sum(a.nbytes for a in log._columns.values())


def record_rows(steps: int, chunk: int = 250) -> tuple[BatchLog, int]:
    tracemalloc.start()
    log = BatchLog(["loss", "accuracy"])
    rng = np.random.default_rng(0)
    values = rng.random((2, chunk))
    steps_in_epoch = 1000
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        log.append(
            {
                "epoch": np.full(n, done // steps_in_epoch + 1),
                "step": np.arange(done, done + n) % steps_in_epoch + 1,
                "size": np.full(n, 32),
                "step_time": np.full(n, 1e-3),
                "data_time": np.full(n, 1e-4),
                "loss": values[0, :n],
                "accuracy": values[1, :n],
            }
        )
        done += n
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return log, peak


def fit_rows(steps: int) -> tuple[fitlens.History, int]:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 2)
    x, y = torch.randn(4, 8), torch.randint(0, 2, (4,))
    batches = [(x, y)] * steps
    fitlens.fit(model, batches[:10], loss="cross_entropy", optimizer="sgd", verbose=0)  # imports
    tracemalloc.start()
    history = fitlens.fit(
        model, batches, loss="cross_entropy", optimizer="sgd", metrics=["accuracy"], verbose=0
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return history, peak


def row(label: str, steps: int, nbytes: int, alloc: int, peak: int) -> str:
    return (
        f"  {label:28s} {steps:>10,d} {nbytes / steps:10.1f} {nbytes / 2**20:9.1f} "
        f"{alloc / 2**20:10.1f} {peak / 2**20:10.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--fit-steps", type=int, default=20_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe_machine())
    print(
        "columns: epoch, step, size (int32), step_time, data_time (float32), loss, accuracy (float64)\n"
    )
    print(
        f"  {'':28s} {'steps':>10s} {'B/step':>10s} {'rows MiB':>9s} {'alloc MiB':>10s} "
        f"{'peak MiB':>10s}"
    )
    log, peak = record_rows(args.steps)
    print(row("BatchLog.append (chunks 250)", args.steps, log.nbytes, allocated(log), peak))
    if args.fit_steps:
        history, peak = fit_rows(args.fit_steps)
        b = history.batches
        print(row("fitlens.fit, tiny model", len(b), b.nbytes, allocated(b), peak))
    print(
        "\n  B/step: bytes of recorded rows per step; alloc: with the spare capacity of geometric "
        "growth;\n  peak: tracemalloc peak while recording (growth briefly holds old and new "
        "arrays; for fit it\n  also counts the Python and numpy objects fit makes meanwhile; "
        "tracemalloc does not see torch's allocator)."
    )


if __name__ == "__main__":
    main()
