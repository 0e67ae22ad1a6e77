"""Cost of keeping a run safe: run directory, checkpoints and on_nonfinite="skip" vs plain fit.

Prints seconds per configuration (median of ``--repeats`` runs) and the ratio to plain ``fit``
measured in the same process, plus the time to write one checkpoint of a model of ~N MB.

    PYTHONPATH=src python benchmarks/bench_checkpoint.py [--steps 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

import fitlens
from fitlens.core.files import fsync_dir, write_atomic
from fitlens.safety.checkpoint import CheckpointStore, decode, load_checkpoint


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
        _compare_writes(tmp, path.read_bytes())


def _previous_write(path: Path, data: bytes) -> None:
    """The write fitlens used before `write_atomic` (predictable temp name, follows links):
    kept here only as the baseline of the comparison."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _median_seconds(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compare_writes(tmp: Path, checkpoint: bytes, repeats: int = 21) -> None:
    """Median time of the safer `write_atomic` vs the previous write, for a summary-sized file
    and a checkpoint; and of the bounded checkpoint load vs reading the whole file."""
    print(
        f"{'write/load (median of ' + str(repeats) + ')':36s} {'previous':>9s} {'safer':>9s} {'ratio':>6s}"
    )
    path = tmp / "w" / "c.pt"
    path.parent.mkdir(exist_ok=True)
    rows: list[tuple[str, Any, Any]] = []
    for label, data in (
        ("write 2 kB (summary.json)", b"x" * 2000),
        ("write checkpoint", checkpoint),
    ):
        target = tmp / "w" / label.split()[1]
        rows.append(
            (label, partial(_previous_write, target, data), partial(write_atomic, target, data))
        )
    path.write_bytes(checkpoint)
    rows.append(
        (
            "load checkpoint (checked, bounded)",
            lambda: decode(path.read_bytes()),
            partial(load_checkpoint, path),
        )
    )
    for label, previous, safer in rows:
        before, after = _median_seconds(previous, repeats), _median_seconds(safer, repeats)
        print(f"{label:36s} {1000 * before:7.2f}ms {1000 * after:7.2f}ms {after / before:6.2f}")


if __name__ == "__main__":
    main()
