"""Small `fitlens.fit` runs, launched under ``torchrun`` by tests/training/test_distributed.py.

``python -m torch.distributed.run --nproc-per-node 2 --standalone train.py OUT MODE``:

* ``pair``: the script initialises the process group itself (fit must use it and leave it
  alone), then runs `run_pair`: the runs the tests compare with one process.
* ``crash`` / ``kill``: fit initialises the group; `run_shuffled` with a ``run_dir`` and a
  checkpoint every 3 steps, where rank 1 raises ``ValueError`` (``crash``) or SIGKILLs itself
  (``kill``) at the third step of the second epoch (after rank 0's mid-epoch checkpoint of the
  step before).
* ``signal-rank``: rank 1 sends itself SIGTERM there; ``signal-launcher``: rank 0 sends it to
  torchrun (which forwards it to every worker) and waits until it arrives. Both refresh the
  display every step and check the clock for a checkpoint at each (``every_minutes`` tiny);
  each rank writes ``OUT/stopped-rank<r>.json``: where it stopped and what it was told.
* ``hang``: rank 1 sleeps for an hour there (``ddp_timeout`` 5 s).
* ``restart``: under ``torchrun --max-restarts 1``, always ``resume=True``; rank 1 raises there
  in the first attempt only.
* ``resume``: `run_shuffled` resuming that ``run_dir``.

Writes ``OUT/<run>-rank<r>.json`` per run and rank: the history, the batch sizes, the final
weights and, per step, the collectives run (counted at the torch.distributed calls) and the
lens's last refreshed step.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torchmetrics

import fitlens

COUNTED = (
    "all_gather_single",
    "all_gather_into_tensor",
    "all_gather",
    "all_reduce",
    "broadcast",
    "barrier",
)
calls = [0]


def count_collectives() -> None:
    """Count every call of the torch.distributed collectives fitlens could use."""
    for name in COUNTED:
        real = getattr(dist, name, None)
        if real is None:
            continue

        def counted(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            calls[0] += 1
            return _real(*args, **kwargs)

        setattr(dist, name, counted)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


class Recorder(fitlens.Callback):
    """Per step: ``[epoch, step, lens.refreshed_step, collectives during the step's end]``."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.per_step: list[list[int]] = []
        self.before = 0
        self.reached = [0, 0]  # [epoch, step] of the last step done

    def on_batch_begin(self, step: int, logs: Any = None) -> None:
        lens = self.run.lens
        if step > 0:  # ``step`` steps are done: what the last one's refresh (if any) cost
            self.per_step.append([lens.epoch, step, lens.refreshed_step, calls[0] - self.before])
        self.before = calls[0]
        if self.fail and lens.epoch == 1 and step == 2:
            self.act(self.fail)

    def act(self, fail: str) -> None:
        if fail == "signal-launcher" and rank() == 0:
            os.kill(os.getppid(), signal.SIGTERM)  # torchrun's agent
            guard = signal.getsignal(signal.SIGTERM).__self__  # type: ignore[union-attr]
            for _ in range(3000):  # until torchrun's SIGTERM reached this worker too
                if guard.local:
                    break
                time.sleep(0.01)
        if rank() != 1:
            return
        if fail == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if fail == "signal-rank":
            os.kill(os.getpid(), signal.SIGTERM)
        elif fail == "hang":
            time.sleep(3600)
        elif fail in ("crash", "restart"):
            raise ValueError("bad batch on purpose")

    def on_batch_end(self, step: int, logs: Any = None) -> None:
        self.reached = [self.run.lens.epoch, step]

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        lens = self.run.lens
        self.per_step.append([epoch, lens.step, lens.refreshed_step, calls[0] - self.before])
        self.before = calls[0]


def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, y


def train(out: Path, name: str, n: int, batch: int, epochs: int, **kwargs: Any) -> None:
    """One fit on ``n`` samples (a ``DataLoader`` of global batch ``batch``, in order unless
    ``shuffle``), validated on the first 41 (20 and 21 per rank); results to ``out``."""
    x, y = data(n)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=kwargs.pop("shuffle", False)
    )
    validation: Any = kwargs.pop("validation", (x[:41], y[:41]))
    if kwargs.pop("val_loader", False):  # one process draws its workers' seed at each pass
        validation = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x[:41], y[:41]), batch_size=8
        )
    recorder = Recorder(kwargs.pop("fail", None))
    try:
        history = fitlens.fit(
            model,
            kwargs.pop("train", loader),
            loss=kwargs.pop("loss", "cross_entropy"),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
            metrics=kwargs.pop("metrics", ["accuracy"]),
            epochs=epochs,
            validation_data=validation,
            callbacks=[recorder],
            **kwargs,
        )
    except fitlens.TrainingInterrupted as e:
        stopped = {"reached": recorder.reached, "signal": e.signal_name, "hint": e.resume_hint}
        (out / f"stopped-rank{rank()}.json").write_text(json.dumps(stopped))
        raise
    save(out, name, history, model, recorder)


def save(out: Path, name: str, history: Any, model: torch.nn.Module, recorder: Any) -> None:
    """``OUT/<name>-rank<r>.json``: what the tests compare."""
    result = {
        "history": history.history,
        "sizes": [float(s) for s in history.batches["size"]],
        "weights": {k: v.tolist() for k, v in model.state_dict().items()},
        "per_step": recorder.per_step if recorder is not None else [],
        "skipped": history.params.get("skipped_batches", []),
        "world_size": history.params.get("world_size", 1),
        "collectives": history.params.get("collectives", 0),
    }
    (out / f"{name}-rank{rank()}.json").write_text(json.dumps(result))


def run_shuffled(out: Path, name: str, **kwargs: Any) -> None:
    """Shuffled arrays, 32 a step, 3 epochs, a train_eval subset of half of them (drawn from
    all 128, split across ranks): the run compared, interrupted and resumed."""
    x, y = data(128)
    kwargs = {"batch_size": 32, "verbose": 0, "train_eval": 0.5, **kwargs}
    train(out, name, 128, 32, 3, train=(x, y), **kwargs)


def readme_example(out: Path) -> None:
    """The README's quick start as it stands (``verbose=0`` aside): the same code on one
    process and under torchrun."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype("float32")
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    history = fitlens.fit(model, (x[:1400], y[:1400]), loss="cross_entropy", optimizer="adam",
                          metrics=["accuracy"], epochs=5, batch_size=32,
                          validation_data=(x[1400:], y[1400:]), verbose=0)  # fmt: skip
    save(out, "readme", history, model, None)


def infinite_on_label_99(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, plus an infinite constant on a batch holding label 99: a non-finite loss
    whose gradients are finite (only the rank holding that sample sees it)."""
    bad = (targets == 99).any()
    inf = torch.tensor(float("inf"))
    loss = torch.nn.functional.cross_entropy(outputs, targets.clamp(max=2))
    return loss + torch.where(bad, inf, torch.zeros(()))


def run_pair(out: Path, world: int) -> None:
    """The runs compared across world sizes: the same code, 32 samples per global step."""
    readme_example(out)
    # A shuffled DataLoader, train_eval on all of it (each rank replays its own shard), a
    # validation DataLoader (split; it draws from the generator the training order comes from).
    train(out, "even", 128, 32, 2, verbose=0, shuffle=True, train_eval=True, val_loader=True)
    train(out, "uneven", 101, 32, 1, verbose=1)  # 101 = 3 x 32 + 5: ranks get 3 and 2
    run_shuffled(out, "uninterrupted")
    x, y = data(128)
    w = torch.linspace(0.5, 2.0, 128)  # sample weights and class weights: global weighted sums
    train(out, "weighted", 128, 32, 1, verbose=0, train=(x, y), batch_size=32, sample_weight=w,
          class_weight={0: 3.0, 2: 0.5}, validation=(x[:41], y[:41], w[:41]),
          train_eval=0.5)  # fmt: skip
    # A torchmetrics F1 over the epoch (not a mean of batch values): merged over the ranks at
    # each refresh, in validation (split) and in train_eval (each rank's shard).
    f1 = torchmetrics.classification.MulticlassF1Score(3, average="macro")
    train(out, "torchmetrics", 128, 32, 2, verbose=0, shuffle=True, train_eval=True,
          metrics={"f1": f1})  # fmt: skip
    y = y.clone()
    y[41] = 99  # in global batch 2 (samples 32-63, in order), on rank 1 (odd positions)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    train(out, "skip", 128, 32, 2, verbose=0, train=loader, loss=infinite_on_label_99,
          on_nonfinite="skip", max_skipped=0.5)  # fmt: skip
    if world > 1:
        x, y = data(97)  # 97 = 6 x 16 + 1: rank 1 would get none of the last; left out, warned
        train(out, "arrays", 97, 16, 2, verbose=0, train=(x, y), batch_size=16)


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    count_collectives()
    if mode == "pair":
        dist.init_process_group("gloo")
        run_pair(out, dist.get_world_size())
        (out / f"group-rank{rank()}.json").write_text(json.dumps(dist.is_initialized()))
        dist.destroy_process_group()
    elif mode == "resume":
        run_shuffled(out, mode, run_dir=out / "run", resume=True)
    elif mode == "restart":  # the first attempt fails; torchrun's restart resumes
        first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        every = fitlens.Checkpointing(every_steps=3)
        kwargs = {"fail": mode} if first else {}
        run_shuffled(out, mode, run_dir=out / "run", resume=True, checkpointing=every, **kwargs)
    elif mode.startswith("signal"):
        every = fitlens.Checkpointing(every_minutes=1e-9)  # due at every refresh
        verbose = fitlens.Progress(0, refresh_per_second=1e9)  # a refresh every step
        run_shuffled(
            out, mode, run_dir=out / "run", fail=mode, checkpointing=every, verbose=verbose
        )
    else:
        timeout = 5 if mode == "hang" else 20
        every = fitlens.Checkpointing(every_steps=3)
        run_shuffled(
            out, mode, run_dir=out / "run", fail=mode, ddp_timeout=timeout, checkpointing=every
        )


if __name__ == "__main__":
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the tests' hang report
    main()
