"""Cost of keeping a run safe: run directory, checkpoints and on_nonfinite="skip" vs plain fit.

Prints seconds per configuration (median of ``--repeats`` runs) and the ratio to plain ``fit``
measured in the same process, plus the time to write one checkpoint of a model of ~N MB.

    PYTHONPATH=src python benchmarks/bench_checkpoint.py [--steps 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import fitlens
from fitlens.safety.checkpoint import CheckpointStore


def _run(steps: int, hidden: int, **kwargs: Any) -> float:
    torch.manual_seed(0)
    x = torch.randn(steps * 32, 64)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Sequential(
        torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
    )
    start = time.perf_counter()
    fitlens.fit(
        model, (x, y), loss="cross_entropy", optimizer="adam", metrics=["accuracy"],
        epochs=2, batch_size=32, verbose=0, **kwargs,
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=400, help="steps per epoch")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    def configs(tmp: Path) -> dict[str, Any]:
        every = fitlens.Checkpointing(every_steps=100, every_minutes=None)
        return {
            "plain fit": lambda i: {},
            "run_dir (epoch-end checkpoints)": lambda i: {"run_dir": tmp / f"a{i}"},
            "run_dir + every 100 steps": lambda i: {
                "run_dir": tmp / f"b{i}",
                "checkpointing": every,
            },
            'on_nonfinite="skip"': lambda i: {"on_nonfinite": "skip"},
        }

    _run(20, args.hidden)  # warm-up (imports, allocator)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results = {}
        for name, make in configs(tmp).items():
            times = [_run(args.steps, args.hidden, **make(i)) for i in range(args.repeats)]
            results[name] = statistics.median(times)
        base = results["plain fit"]
        steps = 2 * args.steps
        print(f"{steps} steps, MLP 64-{args.hidden}-2, batch 32, CPU, 1 thread")
        print(f"{'configuration':36s} {'seconds':>8s} {'ms/step':>8s} {'ratio':>6s}")
        for name, t in results.items():
            print(f"{name:36s} {t:8.3f} {1000 * t / steps:8.3f} {t / base:6.2f}")

        model = torch.nn.Linear(1024, 1024)  # 4 MB of float32 weights (+ 8 MB Adam state)
        opt = torch.optim.Adam(model.parameters())
        model(torch.randn(2, 1024)).sum().backward()
        opt.step()
        state = {"model": model.state_dict(), "optimizer": opt.state_dict()}
        store = CheckpointStore(tmp / "ckpt")
        times = []
        for _ in range(5):
            start = time.perf_counter()
            path = store.save(state)
            times.append(time.perf_counter() - start)
        mb = path.stat().st_size / 1e6
        print(f"one checkpoint of {mb:.1f} MB (atomic, fsync'ed): "
              f"{1000 * statistics.median(times):.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
