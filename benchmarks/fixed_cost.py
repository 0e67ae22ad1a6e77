"""What does one `fit` call cost beyond its steps? A short `fit` against the same hand loop.

Runs ``fitlens.fit`` (display to a file, as runner (c) of ``benchmarks/loop_overhead.py``) and
the hand-written loop (a) on the same ``--steps`` ready batches of the tiny MLP (64->64->2,
batch 32, Adam), alternated ``--pairs`` times after three untimed rounds, and prints the
minimum CPU time of the process (``time.process_time``) of each and their difference: the
fixed cost of a call (set-up, the first batch's checks, the epoch end) plus its display
refreshes (a log writes a line every tenth of an epoch, each with a flush). The minimum of
many short runs is the cost without interference from other processes.

Usage::

    PYTHONPATH=src python benchmarks/fixed_cost.py              # 20 steps, 40 pairs, ~2 s
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import describe_machine
from loop_overhead import Case, make_batches, run_fitlens, run_hand_loop


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20, help="steps per call")
    parser.add_argument("--pairs", type=int, default=40, help="alternated (hand, fit) pairs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    case = Case("tiny MLP 64-64-2, batch 32", (64, 64, 2), 32, args.steps)
    batches = make_batches(case)
    print(describe_machine())
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with open(os.devnull, "w") as sink:
        for _ in range(3):
            run_hand_loop(case, batches, False)
            run_fitlens(case, batches, sink)
        hand, fit = [], []
        for _ in range(args.pairs):
            hand.append(run_hand_loop(case, batches, False)[1])
            fit.append(run_fitlens(case, batches, sink)[1])
    print(
        f"{case.name}, {case.steps} steps, minimum CPU time of {args.pairs} pairs: "
        f"fit {min(fit) * 1e3:.2f} ms, hand loop {min(hand) * 1e3:.2f} ms, "
        f"fixed cost per call {(min(fit) - min(hand)) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
