"""What does fitlens cost over a hand-written PyTorch loop? Steps per second, side by side.

Runs the same model, data (a list of ready batches in memory), optimiser (Adam) and number of
steps through:

    a. a minimal hand-written loop keeping the loss and accuracy sums on the device (the floor);
    b. the same loop calling ``.item()`` on the loss every step (what most people write);
    c. ``fitlens.fit`` with its display on, writing to a file (a log's lines);
    d. Keras 3 ``model.fit`` on the torch backend, ``verbose=1`` (if keras is installed);
    e. Lightning's ``Trainer`` with ``self.log(on_step=True, on_epoch=True, prog_bar=True)``
       (if lightning is installed);
    f. ``fitlens.fit`` with the terminal display (status lines redrawn in place, 10 times a
       second), written to a file.

for a tiny MLP (64->64->2, batch 32: overhead dominates) and a medium one (784->512->512->10,
batch 128). Each runner is timed around its training call only (one epoch over the batches),
repeated ``--repeats`` times, interleaved in alternating order, after one untimed warm-up each;
the table shows the median steps/s and the ratio to (a), by wall clock and by CPU time of the
process (``time.process_time``: on a shared machine it is less disturbed by other processes;
with one intra-op thread and an idle machine both agree), and "paired": the median over repeats
of each repeat's CPU-time ratio to the (a) run beside it.

glibc's malloc returns the big activation and gradient buffers of the medium model to the
kernel and page-faults them back in (about 1,000 minor faults per step here), by an amount that
varies from run to run with the heap's layout: +-5% per run for every runner alike. Unless
``--default-malloc`` is given, the script re-runs itself with ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` raised so that freed memory is reused (no faults), which makes the
comparison stable; it changes nothing else.

Usage::

    PYTHONPATH=src python benchmarks/loop_overhead.py            # ~2-3 minutes on 2 cores
    PYTHONPATH=src python benchmarks/loop_overhead.py --long     # 3x the steps, 9 repeats
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras can be imported

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from _machine import describe_machine

import fitlens

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "100000000", "MALLOC_TRIM_THRESHOLD_": "1000000000"}


@dataclass(frozen=True)
class Case:
    name: str
    sizes: tuple[int, ...]
    batch: int
    steps: int


Times = tuple[float, float]  # (wall seconds, CPU seconds of this process)


def now() -> Times:
    return time.perf_counter(), time.process_time()


def elapsed(start: Times) -> Times:
    wall, cpu = now()
    return wall - start[0], cpu - start[1]


def make_batches(case: Case, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    n_in, n_out = case.sizes[0], case.sizes[-1]
    return [
        (
            torch.randn(case.batch, n_in, generator=g),
            torch.randint(0, n_out, (case.batch,), generator=g),
        )
        for _ in range(case.steps)
    ]


def torch_mlp(sizes: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def run_hand_loop(case: Case, batches: list, item_every_step: bool) -> Times:
    model = torch_mlp(case.sizes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    start = now()
    loss_sum = torch.zeros(())
    correct = torch.zeros(())
    seen = 0
    running = 0.0
    for x, y in batches:
        out = model(x)
        loss = loss_fn(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n = y.shape[0]
        if item_every_step:
            running += loss.item() * n
        else:
            loss_sum += loss.detach() * n
        correct += (out.detach().argmax(-1) == y).sum()
        seen += n
    _ = (loss_sum.item() + running) / seen, correct.item() / seen  # the one sync at the end
    return elapsed(start)


def run_fitlens(
    case: Case,
    batches: list,
    out_file: io.TextIOBase,
    bar: bool = False,
    clock: Callable[[], float] | None = None,
) -> Times:
    model = torch_mlp(case.sizes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # bar: what a terminal gets (status lines redrawn 10 times a second, each reading the now
    # estimates); otherwise a log file's lines
    progress = fitlens.Progress(1, file=out_file, mode="bar" if bar else "auto")
    start = now()
    fitlens.fit(
        model,
        batches,
        loss="cross_entropy",
        optimizer=opt,
        metrics=["accuracy"],
        verbose=progress,
        clock=clock,
    )
    return elapsed(start)


def run_keras(case: Case, batches: list, out_file: io.TextIOBase) -> Times:
    import keras
    import numpy as np

    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    keras.utils.set_random_seed(0)
    layers = [keras.Input((case.sizes[0],))]
    for i, width in enumerate(case.sizes[1:]):
        last = i == len(case.sizes) - 2
        layers.append(keras.layers.Dense(width, activation=None if last else "relu"))
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    with contextlib.redirect_stdout(out_file):
        start = now()
        model.fit(x, y, batch_size=case.batch, epochs=1, shuffle=False, verbose=1)
        return elapsed(start)


class Batches:
    """A plain re-iterable over ready batches (Lightning reads a bare list as several loaders)."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def run_lightning(case: Case, batches: list, out_file: io.TextIOBase) -> Times:
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch_mlp(case.sizes)
            self.loss_fn = nn.CrossEntropyLoss()

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            x, y = batch
            out = self.net(x)
            loss = self.loss_fn(out, y)
            acc = (out.argmax(-1) == y).float().mean()
            self.log("loss", loss, on_step=True, on_epoch=True, prog_bar=True)
            self.log("accuracy", acc, on_step=True, on_epoch=True, prog_bar=True)
            return loss

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    module = Module()
    with contextlib.redirect_stdout(out_file), contextlib.redirect_stderr(out_file):
        trainer = L.Trainer(
            max_epochs=1,
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=True,
            num_sanity_val_steps=0,
        )
        start = now()
        trainer.fit(module, train_dataloaders=Batches(batches))
        return elapsed(start)


def available(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per runner (median)")
    parser.add_argument("--long", action="store_true", help="3x the steps and 9 repeats")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: least noise)"
    )
    parser.add_argument("--skip", default="", help="comma-separated runners to skip, e.g. d,e")
    parser.add_argument(
        "--default-malloc", action="store_true", help="keep glibc's default malloc settings"
    )
    args = parser.parse_args()
    if not args.default_malloc and MALLOC_ENV.items() - os.environ.items():
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    torch.set_num_threads(args.threads)
    scale = 3 if args.long else 1
    repeats = 9 if args.long else args.repeats
    cases = [
        Case("tiny MLP 64-64-2, batch 32", (64, 64, 2), 32, 2000 * scale),
        Case("medium MLP 784-512-512-10, batch 128", (784, 512, 512, 10), 128, 200 * scale),
    ]
    if available("lightning"):
        import lightning  # noqa: F401  (sets its loggers up on import; quiet them after)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    skip = set(filter(None, args.skip.split(",")))

    print(describe_machine())
    malloc = " ".join(f"{k}={os.environ[k]}" for k in MALLOC_ENV if k in os.environ)
    print(f"repeats: {repeats} (median shown), one untimed warm-up per runner")
    print(f"malloc: {malloc or 'glibc defaults'}\n")
    with tempfile.TemporaryFile("w+") as out_file:
        runners: dict[str, Callable[[Case, list], Times]] = {
            "a. hand loop, sums on device": lambda c, b: run_hand_loop(c, b, False),
            "b. hand loop, .item() per step": lambda c, b: run_hand_loop(c, b, True),
            "c. fitlens.fit, display to file": lambda c, b: run_fitlens(c, b, out_file),
        }
        if "f" not in skip:
            runners["f. fitlens.fit, terminal bar"] = lambda c, b: run_fitlens(c, b, out_file, True)
        if available("keras") and "d" not in skip:
            runners["d. Keras 3 (torch) fit verbose=1"] = lambda c, b: run_keras(c, b, out_file)
        if available("lightning") and "e" not in skip:
            runners["e. Lightning Trainer, self.log"] = lambda c, b: run_lightning(c, b, out_file)
        for case in cases:
            batches = make_batches(case)
            times: dict[str, list[Times]] = {k: [] for k in runners}
            for fn in runners.values():
                fn(case, batches)  # warm-up
            order = list(runners)
            for _ in range(repeats):
                for key in order:  # alternate the order: slow drifts of the machine cancel
                    times[key].append(runners[key](case, batches))
                order.reverse()
            print(f"{case.name}, {case.steps} steps")
            print(
                f"  {'runner':34s} {'steps/s':>8s} {'vs a':>7s}   {'min..max steps/s':>17s}"
                f" {'CPU steps/s':>12s} {'vs a':>7s} {'paired':>7s}"
            )
            base_wall = base_cpu = 0.0
            base = next(iter(times.values()))
            for key, ts in times.items():
                wall = case.steps / statistics.median(t[0] for t in ts)
                cpu = case.steps / statistics.median(t[1] for t in ts)
                base_wall, base_cpu = base_wall or wall, base_cpu or cpu
                lo = case.steps / max(t[0] for t in ts)
                hi = case.steps / min(t[0] for t in ts)
                # each repeat's ratio to (a) run next to it: a slow spell of the machine that
                # hits both runs of a repeat cancels, which the ratio of medians does not
                paired = statistics.median(b[1] / t[1] for b, t in zip(base, ts, strict=True))
                print(
                    f"  {key:34s} {wall:8.0f} {wall / base_wall:6.3f}x   {f'{lo:.0f}..{hi:.0f}':>17s}"
                    f" {cpu:12.0f} {cpu / base_cpu:6.3f}x {paired:6.3f}x"
                )
            print()


if __name__ == "__main__":
    main()
