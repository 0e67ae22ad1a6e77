"""The training runs behind ``benchmarks/now_estimate.py``: model families, and one run's trace.

A trace is what a now estimator sees (every batch's accuracy and loss with its size, in order)
and what it should have said (the current model's train-mode metrics over *all* the training
data at every epoch end, from ``fit(train_eval=True)``). Estimators are replayed on traces, so
each run is trained once and cached as ``.npz`` (the batch values do not depend on the estimator).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import fitlens

nn = torch.nn


@dataclass
class Family:
    name: str
    data: Callable[[], tuple[np.ndarray, np.ndarray]]
    build: Callable[[int], torch.nn.Module]
    loss: str

    @property
    def regression(self) -> bool:
        return self.loss == "mse"


def _digits(binary: bool = False, label_noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))[:1437]  # the demo's training split
    x, y = x[order], y[order]
    if label_noise:  # a fixed share of labels replaced by uniformly random classes
        rng = np.random.default_rng(1)
        flip = rng.random(len(y)) < label_noise
        y = np.where(flip, rng.integers(0, 10, len(y)), y)
    return (x, (y >= 5).astype(np.float32)) if binary else (x, y)


def _images() -> tuple[np.ndarray, np.ndarray]:
    x, y = _digits()
    return x.reshape(-1, 1, 8, 8), y


def _tabular() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=6000, n_features=20, n_informative=10, n_classes=3, random_state=0
    )
    return x.astype(np.float32), y


def _regression() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=2000, n_features=10, noise=1.0, random_state=0)
    y = (y - y.mean()) / y.std()  # the loss in units of the target's variance
    return x.astype(np.float32), y.astype(np.float32).reshape(-1, 1)


def _mlp(i: int, hidden: int, o: int, *middle: torch.nn.Module) -> torch.nn.Module:
    return nn.Sequential(nn.Linear(i, hidden), *middle, nn.ReLU(), nn.Linear(hidden, o))


def _cnn(o: int) -> torch.nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(16 * 4 * 4, o),
    )


FAMILIES = [
    Family("demo mlp", _digits, lambda o: _mlp(64, 64, o), "cross_entropy"),
    Family(
        "dropout",
        _digits,
        lambda o: nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, o)),
        "cross_entropy",
    ),
    Family("batchnorm", _digits, lambda o: _mlp(64, 64, o, nn.BatchNorm1d(64)), "cross_entropy"),
    Family(
        "binary",
        lambda: _digits(binary=True),
        lambda o: _mlp(64, 32, o),
        "binary_cross_entropy_with_logits",
    ),
    Family(
        "tabular bn+drop",
        _tabular,
        lambda o: nn.Sequential(
            nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, o)
        ),
        "cross_entropy",
    ),
    Family("cnn", _images, _cnn, "cross_entropy"),
    Family(
        "label noise", lambda: _digits(label_noise=0.2), lambda o: _mlp(64, 128, o), "cross_entropy"
    ),
    Family("regression", _regression, lambda o: _mlp(10, 64, 1), "mse"),
]


@dataclass
class Trace:
    """One training run. Per batch: epoch, size, metric (accuracy; the loss for regression), loss.
    Per epoch: the full train-mode pass of the metric and the loss, and the running mean shown."""

    family: str
    batch_size: int
    seed: int
    epoch: np.ndarray
    size: np.ndarray
    metric: np.ndarray
    loss: np.ndarray
    full: np.ndarray
    full_loss: np.ndarray
    mean: np.ndarray
    train_seconds: float
    pass_seconds: float


def _train(family: Family, batch_size: int, seed: int, epochs: int) -> Trace:
    x, y = family.data()
    torch.manual_seed(seed)
    outputs = 1 if family.loss != "cross_entropy" else int(y.max()) + 1
    model = family.build(outputs)
    t0 = time.perf_counter()
    h = fitlens.fit(
        model,
        (x, y),
        loss=family.loss,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        metrics=[] if family.regression else ["accuracy"],
        epochs=epochs,
        batch_size=batch_size,
        train_eval=True,
        verbose=0,
    )
    total = time.perf_counter() - t0
    passes = float(np.sum(h.timing["eval"]))
    metric = "loss" if family.regression else "accuracy"
    b = h.batches
    return Trace(
        family.name,
        batch_size,
        seed,
        np.asarray(b["epoch"]),
        np.asarray(b["size"], dtype=np.float64),
        np.asarray(b[metric], dtype=np.float64),
        np.asarray(b["loss"], dtype=np.float64),
        np.asarray(h.history[f"train_eval_train_mode_{metric}"]),
        np.asarray(h.history["train_eval_train_mode_loss"]),
        np.asarray(h.history[metric]),
        total - passes,
        passes,
    )


_ARRAYS = ("epoch", "size", "metric", "loss", "full", "full_loss", "mean")


def trace(family: Family, batch_size: int, seed: int, epochs: int, cache: Path | None) -> Trace:
    """The run's trace, from ``cache`` when it holds one for the same configuration."""
    path = None
    if cache is not None:
        key = f"{family.name.replace(' ', '_')}-b{batch_size}-s{seed}-e{epochs}.npz"
        path = cache / key
        if path.exists():
            with np.load(path) as z:
                arrays = {k: z[k] for k in _ARRAYS}
                seconds = z["seconds"]
            return Trace(
                family.name, batch_size, seed, **arrays, train_seconds=float(seconds[0]),
                pass_seconds=float(seconds[1]),
            )  # fmt: skip
    t = _train(family, batch_size, seed, epochs)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            **{k: getattr(t, k) for k in _ARRAYS},
            seconds=np.array([t.train_seconds, t.pass_seconds]),
        )
    return t


BATCH_SIZES = (16, 32, 64, 256)


def all_traces(seeds: range, epochs: int, cache: Path | None) -> list[Trace]:
    """Every family at every batch size for ``seeds``, in a fixed order."""
    torch.set_num_threads(1)
    return [
        trace(f, bs, seed, epochs, cache) for seed in seeds for f in FAMILIES for bs in BATCH_SIZES
    ]


if __name__ == "__main__":  # fill a cache: python now_traces.py CACHE FIRST_SEED LAST_SEED
    import sys

    all_traces(range(int(sys.argv[2]), int(sys.argv[3]) + 1), 10, Path(sys.argv[1]))
