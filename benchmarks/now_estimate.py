"""How close is each now estimator to the truth, and what does the truth cost?

Trains small real models (with and without dropout and batch-norm, binary and multiclass, two
batch sizes, several epochs and seeds) with ``fit(train_eval=True)``, which measures at every
epoch end the current model on *all* the training data in train mode (the truth the training
accuracy should report). Each run's per-batch accuracies are then replayed through every
candidate estimator (the batch values do not depend on the estimator), and the script prints,
per epoch, |estimate - full pass| and |running mean - full pass| in percentage points, plus what
each costs in extra compute (a now estimate: no forward pass; the full pass: measured seconds).

Run:  PYTHONPATH=src python benchmarks/now_estimate.py [--seeds 3] [--epochs 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import fitlens
from fitlens.core.estimators import (
    EMA,
    EMATrend,
    Estimator,
    LastValue,
    TrendWindow,
    WindowMean,
)

CANDIDATES: dict[str, Callable[[], Estimator]] = {
    "last": LastValue,
    "window(10)": lambda: WindowMean(10),
    "window(20)": lambda: WindowMean(20),
    "window(50)": lambda: WindowMean(50),
    "ema(0.9)": lambda: EMA(0.9),
    "ema(0.95)": lambda: EMA(0.95),
    "ema(0.98)": lambda: EMA(0.98),
    "trend(20)": lambda: TrendWindow(20),
    "trend(30)": lambda: TrendWindow(30),
    "trend(50)": lambda: TrendWindow(50),
    "trend(100)": lambda: TrendWindow(100),
    "ema_trend(beta 0.9)": lambda: EMATrend(beta=0.9),
    "ema_trend(beta 0.95)": lambda: EMATrend(beta=0.95),
    "ema_trend(400)": lambda: EMATrend(400),
    "ema_trend(800)": lambda: EMATrend(800),
    "ema_trend(1200)": lambda: EMATrend(1200),
}


@dataclass
class Task:
    name: str
    x: np.ndarray
    y: np.ndarray
    build: Callable[[int], torch.nn.Module]
    loss: str


def _digits(binary: bool) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))[:1437]  # the demo's training split
    x, y = x[order], y[order]
    return (x, (y >= 5).astype(np.float32)) if binary else (x, y)


def _tabular() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=6000, n_features=20, n_informative=10, n_classes=3, random_state=0
    )
    return x.astype(np.float32), y


def tasks() -> list[Task]:
    nn = torch.nn
    dx, dy = _digits(False)
    bx, by = _digits(True)
    tx, ty = _tabular()
    return [
        Task(
            "demo mlp",
            dx,
            dy,
            lambda o: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, o)),
            "cross_entropy",
        ),
        Task(
            "dropout",
            dx,
            dy,
            lambda o: nn.Sequential(
                nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, o)
            ),
            "cross_entropy",
        ),
        Task(
            "batchnorm",
            dx,
            dy,
            lambda o: nn.Sequential(
                nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, o)
            ),
            "cross_entropy",
        ),
        Task(
            "binary",
            bx,
            by,
            lambda o: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1)),
            "binary_cross_entropy",
        ),
        Task(
            "tabular bn+drop",
            tx,
            ty,
            lambda o: nn.Sequential(
                nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, o)
            ),
            "cross_entropy",
        ),
    ]


@dataclass
class Run:
    task: str
    batch_size: int
    seed: int
    full: np.ndarray  # train-mode full-pass accuracy per epoch
    mean: np.ndarray  # reported running mean per epoch
    estimates: dict[str, np.ndarray]  # candidate -> value per epoch
    train_seconds: float
    pass_seconds: float  # both train_eval passes, all epochs


def replay(history: fitlens.History, make: Callable[[], Estimator]) -> np.ndarray:
    """The estimator's value at each epoch end, fed the run's batch accuracies in order."""
    b = history.batches
    est = make()
    out = []
    epochs = b["epoch"]
    for e in np.unique(epochs):
        rows = epochs == e
        est.update(b["accuracy"][rows], b["size"][rows])
        out.append(est.value)
    return np.array(out)


def run_one(task: Task, batch_size: int, seed: int, epochs: int) -> Run:
    torch.manual_seed(seed)
    outputs = 1 if task.loss == "binary_cross_entropy" else int(task.y.max()) + 1
    model = task.build(outputs)
    t0 = time.perf_counter()
    h = fitlens.fit(
        model,
        (task.x, task.y),
        loss=task.loss,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        metrics=["accuracy"],
        epochs=epochs,
        batch_size=batch_size,
        train_eval=True,
        verbose=0,
    )
    total = time.perf_counter() - t0
    passes = float(np.sum(h.timing["eval"]))
    return Run(
        task.name,
        batch_size,
        seed,
        np.array(h.history["train_eval_train_mode_accuracy"]),
        np.array(h.history["accuracy"]),
        {name: replay(h, make) for name, make in CANDIDATES.items()},
        total - passes,
        passes,
    )


def pp(x: float) -> str:
    return f"{100 * x:6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--default", default="ema_trend(800)", help="estimator of table 1")
    args = parser.parse_args()
    torch.set_num_threads(1)

    runs = [
        run_one(task, bs, seed, args.epochs)
        for task in tasks()
        for bs in (32, 128)
        for seed in range(args.seeds)
    ]
    chosen = args.default

    print(
        f"\n1. Per epoch, mean over {args.seeds} seeds: |x - full train-mode pass| in points of accuracy"
    )
    print(
        f"{'task':<16}{'batch':>6}{'epoch':>6}{'full':>8}{'|mean|':>8}{f'|{chosen}|':>18}{'ratio':>7}"
    )
    for key in sorted(
        {(r.task, r.batch_size) for r in runs}, key=lambda k: (tasks_order(k[0]), k[1])
    ):
        group = [r for r in runs if (r.task, r.batch_size) == key]
        full = np.mean([r.full for r in group], axis=0)
        mean_err = np.mean([np.abs(r.mean - r.full) for r in group], axis=0)
        now_err = np.mean([np.abs(r.estimates[chosen] - r.full) for r in group], axis=0)
        for e in range(args.epochs):
            ratio = mean_err[e] / now_err[e] if now_err[e] > 0 else float("inf")
            print(
                f"{key[0]:<16}{key[1]:>6}{e + 1:>6}{100 * full[e]:>8.2f}{pp(mean_err[e]):>8}"
                f"{pp(now_err[e]):>18}{ratio:>7.1f}"
            )

    print("\n2. Every candidate over all tasks, batch sizes, seeds (points of accuracy)")
    print(
        f"{'estimator':<22}{'mean err':>9}{'ep>=2':>8}{'max':>8}{'<=1pt':>7}"
        f"{'demo ratio':>11}{'demo ep>=2':>11}"
    )
    demo = [r for r in runs if r.task == "demo mlp" and r.batch_size == 32]
    demo_mean_err = np.mean([np.abs(r.mean - r.full) for r in demo], axis=0)
    rows = []
    for name in ["mean (reported)", *CANDIDATES]:
        errs = np.array(
            [
                np.abs((r.mean if name == "mean (reported)" else r.estimates[name]) - r.full)
                for r in runs
            ]
        )
        demo_err = np.mean(
            [
                np.abs((r.mean if name == "mean (reported)" else r.estimates[name]) - r.full)
                for r in demo
            ],
            axis=0,
        )
        rows.append(
            (
                name,
                errs.mean(),
                errs[:, 1:].mean(),
                errs.max(),
                float(np.mean(errs <= 0.01)),
                demo_mean_err.sum() / demo_err.sum(),
                demo_mean_err[1:].sum() / demo_err[1:].sum(),
            )
        )
    for name, m, m2, mx, hit, ratio, ratio2 in rows:
        print(
            f"{name:<22}{pp(m):>9}{pp(m2):>8}{pp(mx):>8}{100 * hit:>6.0f}%{ratio:>11.1f}{ratio2:>11.1f}"
        )

    train_s = sum(r.train_seconds for r in runs)
    pass_s = sum(r.pass_seconds for r in runs)
    print(
        "\n3. Extra compute: a now estimate needs no forward pass (it reuses the training batches'"
        "\n   values; replaying all candidates here costs microseconds per batch). The full pass"
        f"\n   (train_eval=True: train mode + eval mode over all training data) took {pass_s:.1f}s"
        f"\n   against {train_s:.1f}s of training: {100 * pass_s / train_s:.0f}% extra."
    )


def tasks_order(name: str) -> int:
    return [t for t in ("demo mlp", "dropout", "batchnorm", "binary", "tabular bn+drop")].index(
        name
    )


if __name__ == "__main__":
    main()
