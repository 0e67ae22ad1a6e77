"""`fitlens demo`: watch the epoch-start jump happen, and see why.

Trains a small MLP on scikit-learn's handwritten digits (shipped inside scikit-learn; nothing is
downloaded) with Adam, so that the model improves a lot during the first epochs. The mean column
then "jumps" at every epoch start, exactly as in a Keras log, while the now column does not.
At the end the demo puts numbers on what the user saw, from the recorded batches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: batches at the start of the next epoch whose running mean the demo compares (what the
#: display shows after that many steps).
FIRST_STEPS = 3


@dataclass(frozen=True)
class Boundary:
    """What one metric did across the boundary between epoch ``epoch`` and the next.

    ``mean_end``/``now_end``: the displayed values at the last step of ``epoch``;
    ``mean_next``/``now_next``: the displayed values after `FIRST_STEPS` steps of the next.
    """

    epoch: int
    mean_end: float
    now_end: float
    mean_next: float
    now_next: float

    @property
    def mean_jump(self) -> float:
        return self.mean_next - self.mean_end

    @property
    def now_jump(self) -> float:
        return self.now_next - self.now_end


def boundaries(
    history: object, metric: str, now: object, first_steps: int = FIRST_STEPS
) -> list[Boundary]:
    """Replay the recorded batches to get what the display showed around each epoch start.

    Args:
        history: a `fitlens.History` from `fit`.
        metric: a training metric name, e.g. ``"accuracy"``.
        now: the now estimator `fit` used (a fresh clone is replayed).
        first_steps: steps into the next epoch at which to read the display.
    """
    from fitlens.core.estimators import EpochMean, make_estimator

    batches = history.batches  # type: ignore[attr-defined]
    epochs, values, sizes = batches["epoch"], batches[metric], batches["size"]
    est = make_estimator(now)  # type: ignore[arg-type]
    shown: list[tuple[int, int, float, float]] = []  # (epoch, step, mean, now)
    mean = EpochMean()
    for i in range(len(values)):
        if i and epochs[i] != epochs[i - 1]:
            mean.reset()
        mean.update(values[i], sizes[i])
        est.update(values[i], sizes[i])
        shown.append((int(epochs[i]), int(batches["step"][i]), mean.value, est.value))
    out = []
    last_of = {e: row for row in shown for e in [row[0]]}
    for e in sorted(last_of)[:-1]:
        after = [r for r in shown if r[0] == e + 1 and r[1] == first_steps]
        if not after:
            continue
        end = last_of[e]
        out.append(Boundary(e, end[2], end[3], after[0][2], after[0][3]))
    return out


def explain_lines(bounds: Sequence[Boundary], metric: str, val_first: float | None) -> list[str]:
    """The plain-words explanation printed after training."""
    if not bounds:
        return []
    lines = [
        "",
        f"What you just saw ({metric}):",
        f"  {'boundary':<10}{'mean at end':>13}{f'mean after {FIRST_STEPS}':>16}{'jump':>9}"
        f"{'now at end':>13}{f'now after {FIRST_STEPS}':>15}{'jump':>9}",
    ]
    for b in bounds:
        lines.append(
            f"  {f'{b.epoch} -> {b.epoch + 1}':<10}{b.mean_end:>13.4f}{b.mean_next:>16.4f}"
            f"{b.mean_jump:>+9.4f}{b.now_end:>13.4f}{b.now_next:>15.4f}{b.now_jump:>+9.4f}"
        )
    b = max(bounds, key=lambda b: abs(b.mean_jump))
    lines += [
        "",
        "  The mean column is the average over the whole epoch so far, as Keras shows it. At the",
        f"  end of epoch {b.epoch} it still counted the batches from the epoch's start, when the model",
        f"  was worse, so it said {b.mean_end:.4f}. The next epoch's mean starts over from the current",
        f"  model and showed {b.mean_next:.4f} after {FIRST_STEPS} steps: a jump of {b.mean_jump:+.4f}.",
        "  The model did not improve suddenly: the now column, which follows the latest batches",
        f"  across the boundary, said {b.now_end:.4f} before it and {b.now_next:.4f} after it "
        f"({b.now_jump:+.4f}).",
        "  The jump is averaging lag. Read the now column for what the model can do at this step.",
    ]
    if val_first is not None:
        lines.append(
            f"  Validation (eval mode, unseen data) said {val_first:.4f} after epoch {b.epoch}."
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="fitlens demo",
        description="Train a small network on scikit-learn's digits and watch the mean column "
        "jump at every epoch start while the now column does not.",
    )
    parser.add_argument("--epochs", type=int, default=5, help="epochs to train (default 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--run-dir",
        metavar="DIR",
        help="also keep the run in DIR (history, checkpoints, summary) for `fitlens report DIR` "
        "and `fitlens show DIR`; DIR must not hold an earlier run",
    )
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs must be at least 2 to show an epoch boundary; got {args.epochs}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be a positive integer; got {args.batch_size}")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print(
            "fitlens demo: the demo's data ships with scikit-learn, which is not installed. "
            "Install it with: pip install 'fitlens[demo]'",
            file=sys.stderr,
        )
        return 2

    import torch

    import fitlens

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = rng.permutation(len(x))
    train, val = order[:1437], order[1437:]
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    steps = -(-len(train) // args.batch_size)
    print(
        f"fitlens demo: an MLP (64-64-10) learns handwritten digits ({len(train)} training and "
        f"{len(val)} validation images, {steps} batches of {args.batch_size} per epoch).\n"
        "Each metric shows its epoch mean (what Keras shows) and, in brackets, the now estimate.\n"
    )
    from fitlens.core.estimators import DEFAULT_NOW

    now = DEFAULT_NOW  # what a user gets
    if args.run_dir and (Path(args.run_dir) / "checkpoints").exists():
        print(
            f"fitlens demo: {args.run_dir} already holds a run; choose a new --run-dir "
            "(or delete that directory)",
            file=sys.stderr,
        )
        return 2
    history = fitlens.fit(
        model,
        (x[train], y[train]),
        loss="cross_entropy",
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        metrics=["accuracy"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(x[val], y[val]),
        verbose=1,  # as a user's run: a bar in a terminal, timed lines in a log
        now=now,
        train_eval=True,  # measure the current model on the training data at each epoch end
        run_dir=args.run_dir,
    )
    bounds = boundaries(history, "accuracy", now)
    best = max(bounds, key=lambda b: abs(b.mean_jump)) if bounds else None
    val_acc = history.history["val_accuracy"][best.epoch - 1] if best else None
    for line in explain_lines(bounds, "accuracy", val_acc):
        print(line)
    if args.run_dir:
        print(f"\nThe run is kept in {args.run_dir}: see it with `fitlens report {args.run_dir}`.")
    return 0
