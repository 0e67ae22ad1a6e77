"""Benchmark: instructions `fit` executes against a hand-written loop (deterministic).

Wall-clock ratios on a shared virtual machine move by several percent from run to run (the
control runner of ``benchmarks/loop_overhead.py`` lands 1-7% away from the loop it copies), so
they cannot show a 1-3% overhead either way. Instruction counts can: this script runs the tiny
model of ``loop_overhead.py`` (MLP 64->64->2, batch 32, Adam, one torch thread) under
valgrind's callgrind, which counts every instruction the process executes, whatever the load.

For each runner (the hand loop (a), ``fit`` with its display to a file (c) or a terminal bar
(f)), it counts whole processes that run the loop once with ``--short`` and with ``--long``
steps, and once more with two ``--short`` calls in a row. Then

* per step = (count(long) - count(short)) / (long - short);
* per call = count(two calls) - count(one call) - short x per step: what a warm call costs
  beyond its steps (set-up, the first batch's checks, the epoch end); the first call also pays
  for imports, which the difference leaves out.

``fit`` runs on a steady clock (``fit(clock=...)``, a counter advancing a third of a 550 us
step per read, as in ``benchmarks/lens_cost.py``), so its display refreshes fall at the same
steps as on a real clock at that speed and not 50x more rarely, as they would under valgrind.
What it does not cover: instructions are not time. ``--caches`` runs valgrind's cachegrind
instead, which also simulates the caches (first level for instructions and data, and the last
level, sized as this CPU reports them) and a branch predictor, and prints their misses per step:
a model of the hardware, not the hardware (no second-level cache, no prefetchers), but the same
model for every runner and deterministic. Nor does it cover a GPU run, whose host-side work is
the same but whose steps are not.

Usage (needs ``valgrind``; each process takes minutes under callgrind, importing torch alone
about 9 billion instructions)::

    PYTHONPATH=src python benchmarks/loop_instructions.py            # ~45 min on 1 core
    PYTHONPATH=src python benchmarks/loop_instructions.py --runners a c
    PYTHONPATH=src python benchmarks/loop_instructions.py --runners a c --caches  # ~1 h
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys

RUNNERS = {
    "a": "hand loop, sums on device",
    "c": "fitlens.fit, display to file",
    "f": "fitlens.fit, terminal bar",
}


def run_in_process(runner: str, steps: int, calls: int) -> None:
    """The measured process: imports, then ``calls`` runs of ``runner`` over ``steps`` batches."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from loop_overhead import Case, make_batches, run_fitlens, run_hand_loop

    torch.set_num_threads(1)
    case = Case("tiny", (64, 64, 2), 32, steps)
    batches = make_batches(case)
    with open(os.devnull, "w") as sink:
        for _ in range(calls):
            if runner == "a":
                run_hand_loop(case, batches, False)
                continue
            steady = itertools.count(0.0, 550e-6 / 3).__next__
            run_fitlens(case, batches, sink, bar=runner == "f", clock=steady)


#: cachegrind's summary lines read with ``--caches``, as (column, label in its output).
CACHE_EVENTS = (
    ("I1 miss", r"I1\s+misses"),
    ("D1 miss", r"D1\s+misses"),
    ("LL miss", r"LL misses"),
    ("mispred", r"Mispredicts"),
)


def count(runner: str, steps: int, calls: int, caches: bool = False) -> dict[str, int]:
    """Events of one process running ``runner``: ``"instr"`` (callgrind's "Collected" total, or
    cachegrind's "I refs") and, with ``caches``, the simulated misses of `CACHE_EVENTS`."""
    if caches:
        tool = ["--tool=cachegrind", "--cache-sim=yes", "--branch-sim=yes"]
        tool.append("--cachegrind-out-file=/dev/null")
    else:
        tool = ["--tool=callgrind", "--callgrind-out-file=/dev/null"]
    cmd = ["valgrind", *tool, sys.executable, os.path.abspath(__file__)]
    cmd += ["--child", runner, str(steps), str(calls)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    labels: tuple[tuple[str, str], ...] = (("instr", r"I\s+refs" if caches else r"Collected"),)
    labels += CACHE_EVENTS if caches else ()
    events = {}
    for key, label in labels:
        found = re.search(label + r"\s*:\s*([\d,]+)", out)
        if found is None:
            raise RuntimeError(f"no {label!r} in valgrind's output:\n{out[-2000:]}")
        events[key] = int(found.group(1).replace(",", ""))
    return events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", nargs="+", choices=list(RUNNERS), default=list(RUNNERS))
    parser.add_argument("--short", type=int, default=100, help="steps of the short runs")
    parser.add_argument("--long", type=int, default=600, help="steps of the long run")
    parser.add_argument(
        "--caches",
        action="store_true",
        help="cachegrind: also simulated cache misses and branch mispredictions per step "
        "(no per-call column)",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_in_process(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    if shutil.which("valgrind") is None:
        parser.error("valgrind was not found: install it (e.g. `apt-get install -y valgrind`)")
    if not 0 < args.short < args.long:
        parser.error(f"need 0 < --short < --long, got {args.short} and {args.long}")
    tool = "cachegrind, simulated caches and branches" if args.caches else "callgrind"
    print(f"instructions ({tool}), tiny MLP; short {args.short} steps, long {args.long} steps")
    extra = [key for key, _ in CACHE_EVENTS] if args.caches else []
    print(
        f"  {'runner':34s} {'per step':>12s} {'vs a':>8s} {'per warm call':>15s}"
        + "".join(f" {key + '/step':>14s}" for key in extra)
    )
    base = None
    for key in args.runners:
        short = count(key, args.short, 1, args.caches)
        long = count(key, args.long, 1, args.caches)
        per_step = {e: (long[e] - short[e]) / (args.long - args.short) for e in short}
        step = per_step["instr"]
        call = count(key, args.short, 2)["instr"] - short["instr"] if not args.caches else None
        call_text = f"{call - args.short * step:15,.0f}" if call is not None else f"{'-':>15s}"
        base = step if key == "a" else base
        ratio = f"{step / base:.4f}x" if base else "-"
        print(
            f"  {key}. {RUNNERS[key]:31s} {step:12,.0f} {ratio:>8s} {call_text}"
            + "".join(f" {per_step[e]:14,.0f}" for e in extra),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
