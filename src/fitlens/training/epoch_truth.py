"""`fit`'s end-of-epoch measurements: validation and ``train_eval`` values with their intervals.

`EpochTruth` holds the ``train_eval`` subset of one `fit` call; the loop calls it twice:

* ``watch(batches, epoch)`` wraps the training batches (keeps a sample of the first epoch's
  batches when the data cannot be subset by index);
* ``passes(model)`` at the epoch end: runs the ``train_eval`` passes (train mode and eval mode,
  without side effects) and returns them as `Measured` values for the gap decomposition, plus
  the values for ``History.history``.

The gap line, the forecast and its check are the `Lens`'s (`fitlens.view.epoch_end`), shared
with the framework callbacks. Keys added to ``History.history`` with ``train_eval`` (``m`` is
every training metric and the loss): ``train_eval_train_mode_m`` (current model, training data,
train mode) and ``train_eval_m`` (eval mode).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from fitlens.adapters.data import BatchSource
from fitlens.adapters.evaluation import PassValue
from fitlens.adapters.losses import LossFn
from fitlens.adapters.metrics import TrackedMetric
from fitlens.adapters.train_eval import TrainSubset, parse_train_eval, train_passes
from fitlens.adapters.weights import BatchWeights
from fitlens.core.gap import Measured, normal_interval, wilson_interval
from fitlens.training.sharding import split_arrays


def measured(value: PassValue, population: int | None = None) -> Measured:
    """A pass value with its 95% interval: Wilson for proportions, normal otherwise; a weighted
    mean's interval is that of Kish's effective sample size ``n / design``."""
    # weighted means: the interval of n / design samples out of population / design (Kish)
    n = value.n / value.design
    pop = population / value.design if population is not None else None
    if value.kind == "proportion":
        low, high = wilson_interval(value.mean, n, population=pop)
    else:
        low, high = normal_interval(value.mean, value.sd, n, population=pop)
    return Measured(value.mean, low, high, value.n)


class EpochTruth:
    """Per-run state of the end-of-epoch passes and forecasts.

    Args:
        train_eval: `fit`'s argument: None/False (off), True (all training data), a fraction in
            (0, 1] or a sample count.
        source: the training `BatchSource`.
        loss_fn, metrics, device: as the loop uses them.
        weigh: the class weights (`fitlens.adapters.weights.BatchWeights`) or None: the passes
            weigh the training data as training does (with the batches' own sample weights).

    Raises:
        ValueError / TypeError: for a bad ``train_eval`` (before training starts).
    """

    def __init__(
        self,
        train_eval: Any,
        source: BatchSource,
        loss_fn: LossFn,
        metrics: Sequence[TrackedMetric],
        device: torch.device,
        weigh: BatchWeights | None = None,
    ) -> None:
        size = parse_train_eval(train_eval)
        self.weigh = weigh
        self.subset = TrainSubset(source, size) if size is not None else None
        self.source = source
        self.loss_fn = loss_fn
        self.metrics = list(metrics)
        self.device = device
        self.names = ["loss"] + [m.name for m in self.metrics]
        self.reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.generators: list[torch.Generator] = []

    def distribute(
        self,
        rank: int,
        world: int,
        reduce: Callable[[torch.Tensor], torch.Tensor],
        generators: list[torch.Generator],
    ) -> None:
        """Under DDP: each rank measures its disjoint part of the subset, ``reduce`` sums the
        passes' sums over the ranks (one collective per pass), so the values are global.
        ``generators``: the sharded data's shuffling generators, put back after the passes (as
        the passes put back torch's global one on one process, which shuffles there).

        Array data: the subset (drawn from all the samples, the same on every rank) is split
        by `split_arrays`. ``train_eval=True`` on a re-iterable: each rank replays its own
        shard of the training data. Raises ValueError for the kept-batch sample (a fraction or
        count of a ``DataLoader`` or list, any generator): each rank would keep batches of its
        own, which a checkpoint written by rank 0 alone could not restore.
        """
        subset = self.subset
        if subset is None:
            return
        if self.source.kind == "arrays":
            subset.split = functools.partial(split_arrays, rank=rank, world=world)
        elif not subset.replay:
            raise ValueError(
                "Under DDP, `train_eval` takes (x, y) arrays (any fraction or count) or "
                "train_eval=True on a DataLoader or list of batches. Received a fraction or "
                f"count of a {self.source.kind} (each rank would keep a sample of its own "
                "batches, which rank 0's checkpoint cannot restore): pass arrays, or True."
            )
        self.reduce, self.generators = reduce, generators

    def watch(self, batches: Iterator[Any], epoch: int, start: int = 0) -> Iterator[Any]:
        """The training batches of 0-based ``epoch`` from position ``start``, unchanged."""
        return self.subset.watch(batches, epoch, start) if self.subset is not None else batches

    def state_dict(self) -> dict[str, Any]:
        """The train_eval subset's state, for checkpoints (empty without train_eval)."""
        return self.subset.state_dict() if self.subset is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.subset is not None and state:
            self.subset.load_state_dict(state)

    def passes(
        self, model: torch.nn.Module
    ) -> tuple[dict[str, Measured], dict[str, Measured], dict[str, float]]:
        """The ``train_eval`` passes at an epoch end: train mode, eval mode, history values.

        All three are empty without ``train_eval``.
        """
        if self.subset is None:
            return {}, {}, {}
        states = [g.get_state() for g in self.generators]
        train_mode, eval_mode = train_passes(
            model, self.subset, self.loss_fn, self.metrics, self.device, self.weigh, self.reduce
        )
        for generator, state in zip(self.generators, states, strict=True):
            generator.set_state(state)
        population = self.subset.population
        if self.reduce is not None and self.subset.replay:  # the pass is all the ranks' data
            population = eval_mode["loss"].n
        logs: dict[str, float] = {}
        for name in self.names:
            logs[f"train_eval_train_mode_{name}"] = train_mode[name].mean
            logs[f"train_eval_{name}"] = eval_mode[name].mean
        return (
            {k: measured(v, population) for k, v in train_mode.items()},
            {k: measured(v, population) for k, v in eval_mode.items()},
            logs,
        )


__all__ = ["EpochTruth", "measured"]
