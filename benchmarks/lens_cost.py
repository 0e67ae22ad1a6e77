"""What does the lens cost per training step? Each part of `Lens`, timed inside real `fit` runs.

Runs ``fitlens.fit`` on the tiny MLP of ``benchmarks/loop_overhead.py`` (64->64->2, batch 32,
Adam, ``metrics=["accuracy"]``, one epoch of 2,000 ready batches) with the display

    file:     a log file (a line at every tenth of the epoch and one per epoch);
    terminal: a fake terminal (a file whose ``isatty()`` is True: status lines redrawn in
              place 10 times a second, the now estimates read at most every 0.5 s);

on a steady clock (``fit(clock=...)``: a counter advancing a third of a 550 us step per read,
so the display refreshes at the same steps in every run, 10 times a second as on an idle
machine; ``--clock real`` uses ``time.perf_counter``, and a loaded machine's slower steps then
refresh more often per step), and wraps the methods of the `Lens` (and what they call: the
transfer to the host, the estimator updates, the display) with a timer. Each row is the time spent inside that method
per training step (its calls' total over the epoch divided by the steps), best (smallest) of
``--repeats`` runs, interleaved; indented rows are inside the row above them. The timer's own
cost (an empty method wrapped the same way, measured each run) is subtracted per call.

A step of this model takes ~550 us, so 0.97x of a hand-written loop leaves fitlens ~17 us per
step. Costs per step measured this way are far steadier on a shared machine than the ratios
of end-to-end runs: another process taking the CPU inflates a run's times, and the best of
several runs is the cost without it.

Usage::

    PYTHONPATH=src python benchmarks/lens_cost.py                  # ~30 s on 2 cores
    PYTHONPATH=src python benchmarks/lens_cost.py --timer cpu --repeats 9
"""

from __future__ import annotations

import argparse
import functools
import io
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _machine import describe_machine
from loop_overhead import Case, make_batches, torch_mlp

import fitlens
import fitlens.training.step as step_module
from fitlens.core.stream import MetricStream
from fitlens.view.lens import Lens
from fitlens.view.progress import Progress

#: (row label, indentation, owner, method name): the parts timed, in the order shown. The
#: per-step methods (depth 1) add up to the lens's whole cost per step.
PARTS: list[tuple[str, int, Any, str]] = [
    ("begin_step (clock read)", 1, Lens, "begin_step"),
    ("record (queue the values, clock read)", 1, Lens, "record"),
    ("refresh_if_due", 1, Lens, "refresh_if_due"),
    ("refresh", 2, Lens, "refresh"),
    ("flush", 3, Lens, "flush"),
    ("to_host (one transfer)", 4, None, "to_host"),
    ("MetricStream.append (batch log, blocks)", 4, MetricStream, "append"),
    ("estimator updates", 5, MetricStream, "_update"),
    ("now estimates read", 3, Lens, "_shown_snapshot"),
    ("display (Progress.refresh)", 3, Progress, "refresh"),
    ("end_step (clock read)", 1, Lens, "end_step"),
    ("begin_epoch", 1, Lens, "begin_epoch"),
    ("end_epoch (flush, estimates, lines)", 1, Lens, "end_epoch"),
]

#: A control: a trivial function (a type check and a shape read) that the training step calls
#: right before `Lens.record`, timed the same way. Right after the step's torch work, any timed
#: call measures a few microseconds (cold caches, the timer's first read): its row is the floor
#: under the per-step rows, which is not the lens's own cost.
CONTROL = ("control: batch_size_of (trivial, beside record)", step_module, "batch_size_of")


#: The steady clock's seconds per read: a step of the tiny model (~550 us) reads it 3 times.
STEADY_TICK = 550e-6 / 3


class FakeTerminal(io.StringIO):
    """A file that says it is a terminal, so `Progress` redraws its status lines in place."""

    def isatty(self) -> bool:
        return True


class Timers:
    """Seconds and calls per wrapped method over one run."""

    def __init__(self, timer: Callable[[], float]) -> None:
        self.timer = timer
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        timer, seconds, calls = self.timer, self.seconds, self.calls
        seconds[key], calls[key] = 0.0, 0

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = timer()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[key] += timer() - start
                calls[key] += 1

        return timed

    def floor(self) -> float:
        """Seconds the wrapper itself adds to one call (an empty function, best of 5)."""
        empty = self.wrap("_floor", lambda: None)
        best = float("inf")
        for _ in range(5):
            self.seconds["_floor"], n = 0.0, 20_000
            for _ in range(n):
                empty()
            best = min(best, self.seconds["_floor"] / n)
        return best


@contextmanager
def timed_lens(timers: Timers) -> Iterator[None]:
    """Wrap every part of `PARTS` for the duration of the block."""
    saved: list[tuple[Any, str, Any]] = []
    for _, _, owner, name in [*PARTS, (CONTROL[0], 0, *CONTROL[1:])]:
        if owner is None or name not in owner.__dict__:  # not in this version of fitlens
            continue
        saved.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, timers.wrap(f"{owner.__name__}.{name}", owner.__dict__[name]))
    init = Lens.__init__

    def init_with_timed_transfer(self: Lens, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.to_host = timers.wrap("to_host", self.to_host)

    Lens.__init__ = init_with_timed_transfer  # type: ignore[method-assign]
    try:
        yield
    finally:
        Lens.__init__ = init  # type: ignore[method-assign]
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def key_of(owner: Any, name: str) -> str:
    return name if owner is None else f"{owner.__name__}.{name}"


def run_once(
    case: Case, batches: list, display: str, timer: Callable[[], float], steady: bool
) -> dict:
    """One timed `fit`; returns ``{key: (seconds per step, calls per step)}`` and the step time."""
    model = torch_mlp(case.sizes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    timers = Timers(timer)
    floor = timers.floor()
    with tempfile.TemporaryFile("w+") as log:
        out = log if display == "file" else FakeTerminal()
        progress = Progress(1, file=out)
        with timed_lens(timers):
            start = timer()
            fitlens.fit(
                model,
                batches,
                loss="cross_entropy",
                optimizer=opt,
                metrics=["accuracy"],
                verbose=progress,
                clock=itertools.count(0.0, STEADY_TICK).__next__ if steady else None,
            )
            total = timer() - start
    steps = len(batches)
    result = {}
    for key, seconds in timers.seconds.items():
        calls = timers.calls[key]
        result[key] = (max(seconds - floor * calls, 0.0) / steps, calls / steps)
    result["_step"] = (total / steps, 1.0)
    result["_floor"] = (floor, 0.0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per display (best)")
    parser.add_argument("--steps", type=int, default=2000, help="steps of the one epoch")
    parser.add_argument(
        "--timer",
        choices=["wall", "cpu"],
        default="wall",
        help="time.perf_counter (wall) or time.process_time (CPU time of this process)",
    )
    parser.add_argument(
        "--clock",
        choices=["steady", "real"],
        default="steady",
        help="the clock fit's display runs on: steady (a counter advancing 550/3 us per read, "
        "so refreshes fall at the same steps in every run, as on an idle machine; default) "
        "or real (time.perf_counter: a loaded machine's slower steps refresh more often)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    timer = time.perf_counter if args.timer == "wall" else time.process_time
    case = Case("tiny MLP 64-64-2, batch 32", (64, 64, 2), 32, args.steps)
    batches = make_batches(case)
    displays = ["file", "terminal"]
    print(describe_machine())
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{case.name}, {case.steps} steps, fit(metrics=['accuracy']); timer: {args.timer}; "
        f"display clock: {args.clock}; "
        f"best of {args.repeats} interleaved runs per display (one warm-up each)\n"
    )
    best: dict[str, dict[str, tuple[float, float]]] = {d: {} for d in displays}
    for d in displays:
        run_once(case, batches, d, timer, args.clock == "steady")  # warm-up
    for _ in range(args.repeats):
        for d in displays:
            got = run_once(case, batches, d, timer, args.clock == "steady")
            for key, (sec, calls) in got.items():
                held = best[d].get(key)
                if held is None or sec < held[0]:
                    best[d][key] = (sec, calls)
    width = 46

    def row(label: str, cell: Callable[[dict[str, tuple[float, float]]], str]) -> None:
        print(f"  {label:{width}s}" + "".join(cell(best[d]) for d in displays))

    def part(key: str, calls: bool = True) -> Callable[[dict[str, tuple[float, float]]], str]:
        def cell(got: dict[str, tuple[float, float]]) -> str:
            if key not in got:
                return f" {'-':>9s} {'-':>6s}"
            return f" {got[key][0] * 1e6:9.2f} " + (f"{got[key][1]:6.3f}" if calls else " " * 6)

        return cell

    print(f"  {'us per step':{width}s}" + "".join(f" {d:>9s} {'calls':>6s}" for d in displays))
    for label, depth, owner, name in PARTS:
        row("  " * (depth - 1) + label, part(key_of(owner, name)))
    tops = [key_of(o, n) for _, depth, o, n in PARTS if depth == 1]
    for d in displays:
        best[d]["_lens"] = (sum(best[d][k][0] for k in tops if k in best[d]), 0.0)
    row("lens in all (the depth-1 rows)", part("_lens", calls=False))
    row(CONTROL[0], part(key_of(*CONTROL[1:]), calls=False))
    row("whole step of fit (best run)", part("_step", calls=False))
    row("timer cost per call (subtracted)", part("_floor", calls=False))
    for d in displays:
        per_flush = best[d][key_of(Lens, "flush")]
        refresh = best[d][key_of(Lens, "refresh")]
        print(
            f"\n{d}: {refresh[1] * case.steps:.0f} refreshes, {per_flush[1] * case.steps:.0f} "
            f"flushes; {refresh[0] / refresh[1] * 1e6:.0f} us per refresh, "
            f"{per_flush[0] / per_flush[1] * 1e6:.0f} us per flush"
        )


if __name__ == "__main__":
    main()
