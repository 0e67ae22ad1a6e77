"""Mixed precision in `fitlens.fit`: steps per second at each ``precision=``, side by side.

Trains the same MLP (784->1024->1024->10, batch 256, Adam, a list of ready batches in memory)
with ``fitlens.fit(..., precision=p)`` for ``"32"`` and ``"bf16-mixed"`` on CPU, and for
``"32"``, ``"bf16-mixed"`` and ``"16-mixed"`` on CUDA when a GPU is present. Each run is one
epoch, timed around the ``fit`` call only, repeated ``--repeats`` times in alternating order
after one untimed warm-up each; the table shows the median steps/s, the ratio to ``"32"`` on
the same device, and the last epoch's loss (mixed precision should train as well).

On CPU, bfloat16 only pays where the CPU has bf16 matrix instructions (AVX512-BF16, AMX);
elsewhere PyTorch emulates it and bf16-mixed is slower than float32. The table says which.

Usage::

    PYTHONPATH=src python benchmarks/amp.py               # ~1-2 minutes on 2 cores
    PYTHONPATH=src python benchmarks/amp.py --steps 20 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from _machine import describe_machine

import fitlens


def make_batches(steps: int, batch: int, device: torch.device) -> list[tuple[Any, Any]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        x = torch.randn(batch, 784, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        out.append((x.to(device), y.to(device)))
    return out


def make_model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )
    return net.to(device)


def run(
    precision: str, batches: list[tuple[Any, Any]], device: torch.device
) -> tuple[float, float]:
    """One epoch: (steps per second, the epoch's mean loss)."""
    model = make_model(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    h = fitlens.fit(
        model, batches, loss="cross_entropy", optimizer="adam", verbose=0,
        precision=precision,  # type: ignore[arg-type]
    )  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(batches) / (time.perf_counter() - start), h.history["loss"][-1]


def bf16_hardware() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return "unknown"
    found = [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()]
    return ", ".join(found) if found else "none (bf16 emulated)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(describe_machine())
    print(f"CPU bf16 instructions: {bf16_hardware()}")
    print(f"MLP 784-1024-1024-10, batch {args.batch}, Adam, {args.steps} steps per run, "
          f"median of {args.repeats} runs")  # fmt: skip
    cases = [(torch.device("cpu"), p) for p in ("32", "bf16-mixed")]
    if torch.cuda.is_available():
        cases += [(torch.device("cuda"), p) for p in ("32", "bf16-mixed", "16-mixed")]
    data = {d: make_batches(args.steps, args.batch, d) for d in {d for d, _ in cases}}
    for d, p in cases:  # warm-up: allocators, kernels, autocast caches
        run(p, data[d][:3], d)
    rates: dict[tuple[torch.device, str], list[float]] = {c: [] for c in cases}
    losses: dict[tuple[torch.device, str], float] = {}
    for r in range(args.repeats):
        for d, p in cases if r % 2 == 0 else cases[::-1]:
            rate, loss = run(p, data[d], d)
            rates[(d, p)].append(rate)
            losses[(d, p)] = loss
    print(f"\n{'device':<7}{'precision':<12}{'steps/s':>10}{'vs 32':>8}{'loss':>9}")
    for d, p in cases:
        median = statistics.median(rates[(d, p)])
        base = statistics.median(rates[(d, "32")])
        print(f"{d.type:<7}{p:<12}{median:>10.1f}{median / base:>7.2f}x{losses[(d, p)]:>9.4f}")


if __name__ == "__main__":
    main()
