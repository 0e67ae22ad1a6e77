"""How much does ``fit(prefetch=N)`` gain when making a batch costs as much as a training step?

1. Measures the training step time of a medium MLP (784->512->512->10, batch 128) on batches
   already in memory.
2. Builds a generator whose per-batch cost equals that step time and releases the GIL:
   ``--work sleep`` (waiting on I/O, the default) or ``--work numpy`` (a calibrated numpy sort
   of a float array, which runs with the GIL released; needs a free core).
3. Trains on it with ``prefetch=0`` and ``prefetch=4``, repeated, and prints the median steps/s
   and the speed-up (the limit is 2x: the step and the batch overlap completely).

Usage::

    PYTHONPATH=src python benchmarks/prefetch.py                 # ~1 minute
    PYTHONPATH=src python benchmarks/prefetch.py --work numpy --steps 200 --repeats 5
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from _machine import describe_machine

import fitlens

SIZES = (784, 512, 512, 10)
BATCH = 128


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(SIZES[0], SIZES[1]),
        nn.ReLU(),
        nn.Linear(SIZES[1], SIZES[2]),
        nn.ReLU(),
        nn.Linear(SIZES[2], SIZES[3]),
    )


def train(batches: Iterator, steps: int, prefetch: int) -> float:
    model = make_model()
    start = time.perf_counter()
    fitlens.fit(
        model,
        batches,
        loss="cross_entropy",
        optimizer="adam",
        steps_per_epoch=steps,
        verbose=0,
        prefetch=prefetch,
    )
    return time.perf_counter() - start


def step_seconds(steps: int) -> float:
    """Median training step time on in-memory batches (no data cost)."""
    x, y = torch.randn(BATCH, SIZES[0]), torch.randint(0, SIZES[-1], (BATCH,))
    ready = [(x, y)] * steps
    return min(train(iter(ready), steps, 0) for _ in range(3)) / steps


def numpy_work(seconds: float) -> Callable[[], None]:
    """A numpy job (sorting floats: runs with the GIL released) taking about ``seconds``."""
    rng = np.random.default_rng(0)
    n = 1 << 14
    for _ in range(4):  # sorting is n log n: rescale a few times until the cost fits
        block = rng.random(n)
        start = time.perf_counter()
        for _ in range(5):
            np.sort(block)
        per = (time.perf_counter() - start) / 5
        n = max(1024, int(n * seconds / per))
    big = rng.random(n)
    return lambda: np.sort(big)  # type: ignore[return-value]


def batches(cost: Callable[[], None]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], BATCH)
    while True:
        cost()  # the batch's loading / decoding
        yield x, y


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", choices=["sleep", "numpy"], default="sleep")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(describe_machine())
    step = step_seconds(args.steps)
    cost = functools.partial(time.sleep, step) if args.work == "sleep" else numpy_work(step)
    t = time.perf_counter()
    for _ in range(10):
        cost()
    data = (time.perf_counter() - t) / 10
    print(
        f"medium MLP, batch {BATCH}, {args.steps} steps; step {step * 1e3:.1f} ms, "
        f"batch cost ({args.work}) {data * 1e3:.1f} ms; median of {args.repeats}\n"
    )
    rates: dict[int, list[float]] = {0: [], args.prefetch: []}
    for _ in range(args.repeats):
        for depth in rates:
            rates[depth].append(args.steps / train(batches(cost), args.steps, depth))
    base = statistics.median(rates[0])
    print(f"  {'prefetch':10s} {'steps/s':>9s} {'speed-up':>9s}")
    for depth, rs in rates.items():
        rate = statistics.median(rs)
        print(f"  {depth:<10d} {rate:9.1f} {rate / base:8.2f}x")
    ideal = 1 / max(step, data) / (1 / (step + data))
    print(f"\n  ideal speed-up (step + batch) / max(step, batch): {ideal:.2f}x")


if __name__ == "__main__":
    main()
