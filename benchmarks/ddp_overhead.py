"""What does fitlens cost over a hand-written DDP loop? Steps per second on 2 processes.

Runs, on each of 2 processes started by torchrun (gloo on CPU, nccl on CUDA), the same model,
data (a list of ready batches per rank, in memory), optimiser (Adam) and number of steps
through:

    a. a hand-written ``DistributedDataParallel`` loop keeping the loss and accuracy sums on
       the device and all-reducing them once, at the epoch end (the floor);
    b. ``fitlens.fit(..., strategy="ddp")`` with its display on (rank 0, writing to a file):
       global values at every refresh (one all_gather of the queued rows) and at the epoch end.

for a tiny MLP (64->64->2, batch 32 per rank: overhead dominates) and a medium one
(784->512->512->10, batch 128 per rank). Each runner is timed around its training call (one
epoch), after a barrier, repeated ``--repeats`` times in alternating order after one untimed
warm-up each; rank 0 prints the median steps/s, the ratio b/a by wall clock and the median over
repeats of each repeat's CPU-time ratio ("paired", less disturbed by other processes on a
shared machine), and the collectives fitlens ran per step (``history.params["collectives"]``;
DDP's own gradient all-reduce is the same in both and not counted).

Usage::

    PYTHONPATH=src python benchmarks/ddp_overhead.py              # launches torchrun itself
    PYTHONPATH=src python benchmarks/ddp_overhead.py --repeats 7
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(__file__))
from _machine import describe_machine

import fitlens

Times = tuple[float, float]  # (wall seconds, CPU seconds of this process)
collectives: list[int] = []  # per fitlens run, as fit counts them (history.params)


@dataclass(frozen=True)
class Case:
    name: str
    sizes: tuple[int, ...]
    batch: int
    steps: int


def now() -> Times:
    return time.perf_counter(), time.process_time()


def make_batches(case: Case, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(dist.get_rank())  # this rank's own shard
    n_in, n_out = case.sizes[0], case.sizes[-1]
    return [
        (
            torch.randn(case.batch, n_in, generator=g).to(device),
            torch.randint(0, n_out, (case.batch,), generator=g).to(device),
        )
        for _ in range(case.steps)
    ]


def mlp(sizes: tuple[int, ...], device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).to(device)


def run_hand_loop(case: Case, batches: list, device: torch.device) -> Times:
    module = mlp(case.sizes, device)
    ids = [device.index] if device.type == "cuda" else None
    model = DistributedDataParallel(module, device_ids=ids)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    dist.barrier()
    start = now()
    sums = torch.zeros(3, device=device)  # loss * n, correct, n
    for x, y in batches:
        out = model(x)
        loss = loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n = y.shape[0]
        sums[0] += loss.detach() * n
        sums[1] += (out.detach().argmax(-1) == y).sum()
        sums[2] += n
    dist.all_reduce(sums)  # the one collective, at the epoch end
    _ = (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()
    wall, cpu = now()
    return wall - start[0], cpu - start[1]


def run_fitlens(case: Case, batches: list, device: torch.device, out: io.TextIOBase) -> Times:
    model = mlp(case.sizes, device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    progress = fitlens.Progress(1, file=out)
    dist.barrier()
    start = now()
    history = fitlens.fit(
        model,
        batches,
        loss="cross_entropy",
        optimizer=opt,
        metrics=["accuracy"],
        verbose=progress,
        strategy="ddp",
        device=device,
    )
    wall, cpu = now()
    collectives.append(history.params["collectives"])
    return wall - start[0], cpu - start[1]


def worker(repeats: int) -> None:
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    cases = [
        Case("tiny MLP 64-64-2, batch 32/rank", (64, 64, 2), 32, 400),
        Case("medium MLP 784-512-512-10, batch 128/rank", (784, 512, 512, 10), 128, 150),
    ]
    if rank == 0:
        print(describe_machine())
        print(
            f"world size {dist.get_world_size()}, backend {dist.get_backend()}, {repeats} repeats"
        )
        print(
            f"{'case':44} {'hand steps/s':>12} {'fitlens steps/s':>15} {'ratio':>6} "
            f"{'paired cpu':>10} {'collectives/step':>16}"
        )
    sink = open(os.devnull, "w")  # noqa: SIM115 - the display's output, for the whole run
    for case in cases:
        batches = make_batches(case, device)
        run_hand_loop(case, batches, device)  # warm-up, untimed
        run_fitlens(case, batches, device, sink)
        hand: list[Times] = []
        lens: list[Times] = []
        collectives.clear()
        for r in range(repeats):
            order = ("hand", "fitlens") if r % 2 == 0 else ("fitlens", "hand")
            for which in order:
                if which == "hand":
                    hand.append(run_hand_loop(case, batches, device))
                else:
                    lens.append(run_fitlens(case, batches, device, sink))
        if rank == 0:
            hand_rate = case.steps / statistics.median(t[0] for t in hand)
            lens_rate = case.steps / statistics.median(t[0] for t in lens)
            paired = statistics.median(h[1] / f[1] for h, f in zip(hand, lens, strict=True))
            per_step = sum(collectives) / (repeats * case.steps)
            print(
                f"{case.name:44} {hand_rate:12.1f} {lens_rate:15.1f} "
                f"{lens_rate / hand_rate:6.3f} {paired:10.3f} {per_step:16.4f}"
            )
    if rank == 0:
        print(
            "collectives/step: fitlens's own (one all_gather per display refresh and epoch end, "
            "none between refreshes), averaged over the epoch's steps"
        )
    sink.close()
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.repeats)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--standalone", __file__, "--worker", "--repeats", str(args.repeats)]
    print("$", " ".join(command[1:]), flush=True)
    sys.exit(subprocess.call(command, env=env))


if __name__ == "__main__":
    main()
