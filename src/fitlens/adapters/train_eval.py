"""Evaluation passes of the current model on training data, with no side effects.

`fit(train_eval=...)` runs, at every epoch end, the model on a fixed part of the training data
twice: in *train mode* (dropout active, batch-norm normalising with batch statistics, as during
training) and in *eval mode* (as at inference). Both run under ``torch.no_grad()`` and inside
`preserved_state`, which restores every buffer (batch-norm running statistics and counters),
every module's train/eval flag, and the random state training draws from (torch CPU and CUDA,
numpy's and Python's global generators). Training therefore continues exactly as without the
passes: the same seeded run ends with identical weights.

Which data (`TrainSubset`):

* ``(x, y)`` arrays: all rows, or a fixed random subset of rows drawn once per run with the
  subset's own ``torch.Generator`` (training's random state is not touched), served in batches
  of the training batch size in a fixed order.
* a re-iterable (DataLoader, list of batches) or a generator: with everything requested
  (``train_eval=True`` or ``1.0``) a re-iterable is iterated afresh at each pass; otherwise, and
  always for a generator (which cannot be replayed), a fixed random sample of the first epoch's
  *batches* is kept (references to the batches as yielded, on their original device) and reused
  at every epoch end. A count of samples is rounded up to whole batches.

Each pass is a `fitlens.adapters.evaluation.measure_batches`: means plus the sample count and spread
that the intervals of the gap decomposition need.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from fitlens.adapters.data import (
    ArrayData,
    BatchSource,
    batch_size_of,
    take,
    to_device,
    unpack_weighted,
)
from fitlens.adapters.evaluation import PassValue, measure_batches
from fitlens.adapters.losses import LossFn
from fitlens.adapters.metrics import TrackedMetric
from fitlens.adapters.rng import capture_rng, restore_rng
from fitlens.adapters.weights import BatchWeights


@contextmanager
def preserved_state(model: torch.nn.Module) -> Iterator[None]:
    """Restore the model's buffers and mode flags and the global random states on exit."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    flags = [(m, m.training) for m in model.modules()]
    rng = capture_rng()
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, saved in buffers:
                buf.copy_(saved)
        for module, training in flags:
            module.training = training
        restore_rng(rng)


def parse_train_eval(spec: Any) -> float | int | None:
    """Validate ``fit``'s ``train_eval``: None/False (off), True (all), a fraction or a count.

    Returns ``None`` (off), a float fraction in (0, 1], or an int count of samples.
    """
    if spec is None or spec is False:
        return None
    if spec is True:
        return 1.0
    if isinstance(spec, int | np.integer):
        if spec < 1:
            raise ValueError(
                f"Expected `train_eval` to be a fraction in (0, 1] or a sample count >= 1. "
                f"Received: {spec!r}. Pass train_eval=True for all the training data."
            )
        return int(spec)
    if isinstance(spec, float | np.floating):
        if not (0.0 < spec <= 1.0):
            raise ValueError(
                f"Expected a `train_eval` fraction in (0, 1]. Received: {spec!r}. Pass a "
                "fraction such as 0.2, an integer sample count such as 2000, or True for all."
            )
        return float(spec)
    raise TypeError(
        f"Expected `train_eval` to be None, True, a fraction in (0, 1] or an integer count. "
        f"Received: {type(spec).__name__}."
    )


class TrainSubset:
    """The fixed part of the training data that the end-of-epoch passes use.

    Args:
        source: the training `BatchSource`.
        size: a fraction in (0, 1] or a sample count (from `parse_train_eval`).
        seed: seed of the subset's own generator.

    Raises:
        ValueError: a count larger than the array data, or data with neither a length nor
            ``steps_per_epoch`` (the first batch checks a count against other data).
    """

    def __init__(self, source: BatchSource, size: float | int, *, seed: int = 0) -> None:
        self.source = source
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.population: int | None = None  # samples in the training data, once known
        self._indices: torch.Tensor | None = None
        self._keep: set[int] | None = None  # batch positions kept from the first epoch
        self._kept: list[Any] = []
        self._seen = 0  # training samples passed through `watch` in the first epoch
        self._subset: ArrayData | None = None
        self.replay = False  # True: iterate the re-iterable afresh at each pass
        # Under DDP: this rank's part of the array subset (the others hold the rest).
        self.split: Callable[[ArrayData], ArrayData] | None = None
        if source.kind == "arrays":
            data = source.iterable
            assert isinstance(data, ArrayData)
            self._arrays = data  # all of it, also once DDP shards the training source
            self.population = data.n
            count = self._count(data.n)
            if count < data.n:
                self._indices = torch.randperm(data.n, generator=self.generator)[:count].sort()[0]
            return
        if source.steps is None:
            raise ValueError(
                "`train_eval` needs to know how much training data there is, but `train` has no "
                "length and no `steps_per_epoch`. Pass `steps_per_epoch=N` or data with a "
                "length (a list of batches, a DataLoader, or (x, y) arrays)."
            )
        self.replay = source.kind == "iterable" and size == 1.0
        if not self.replay and isinstance(size, float):
            k = min(source.steps, math.ceil(size * source.steps))
            self._choose(k)

    def _count(self, available: int) -> int:
        if isinstance(self.size, float):
            return max(1, round(self.size * available))
        if self.size > available:
            raise ValueError(
                f"Expected a `train_eval` count of at most the {available} training samples. "
                f"Received: {self.size}. Pass a smaller count, a fraction, or True for all."
            )
        return self.size

    def _choose(self, k: int) -> None:
        assert self.source.steps is not None
        order = torch.randperm(self.source.steps, generator=self.generator)[:k]
        self._keep = set(order.tolist())

    def watch(self, batches: Iterator[Any], epoch: int, start: int = 0) -> Iterator[Any]:
        """Pass the training batches through; in the first epoch keep the sampled ones.

        ``start`` is the position of the first batch (not 0 when a run resumes mid-epoch).
        """
        if epoch > 0 or self.source.kind == "arrays":
            yield from batches
            return
        for position, batch in enumerate(batches, start=start):
            n = batch_size_of(unpack_weighted(batch, "train")[1])
            if position == 0 and self._keep is None and not self.replay:
                steps = self.source.steps or 1
                k = math.ceil(self._count(n * steps) / n) if isinstance(self.size, int) else steps
                self._choose(min(steps, k))
            if self._keep is not None and position in self._keep:
                self._kept.append(batch)
            self._seen += n
            yield batch
        self.population = self._seen

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to use the same subset: the batches kept from the first
        epoch (as CPU tensors; their size is the subset's) and the samples counted so far."""
        cpu = torch.device("cpu")
        return {
            "keep": sorted(self._keep) if self._keep is not None else None,
            "kept": [to_device(b, cpu) for b in self._kept],
            "seen": self._seen,
            "population": self.population,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict` (arrays need nothing: their subset follows from the seed)."""
        if self.source.kind == "arrays":
            return
        self._keep = set(state["keep"]) if state["keep"] is not None else None
        self._kept = list(state["kept"])
        self._seen = int(state["seen"])
        self.population = state["population"]

    def batches(self) -> Iterable[Any]:
        """The subset's batches, the same at every epoch end."""
        if self.source.kind == "arrays":
            data = self._arrays
            if self._subset is None:
                if self._indices is None:
                    self._subset = ArrayData(data.x, data.y, data.batch_size, False, data.w)
                else:
                    x, y = take(data.x, self._indices), take(data.y, self._indices)
                    w = take(data.w, self._indices) if data.w is not None else None
                    self._subset = ArrayData(x, y, data.batch_size, False, w)
                if self.split is not None:
                    self._subset = self.split(self._subset)
            return self._subset
        if self.replay:
            return _limited(self.source.iterable, self.source.steps)
        return list(self._kept)


def _limited(iterable: Iterable[Any], steps: int | None) -> Iterator[Any]:
    for i, batch in enumerate(iterable):
        if steps is not None and i >= steps:
            return
        yield batch


def train_passes(
    model: torch.nn.Module,
    subset: TrainSubset,
    loss_fn: LossFn,
    metrics: Sequence[TrackedMetric],
    device: torch.device,
    weigh: BatchWeights | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[dict[str, PassValue], dict[str, PassValue]]:
    """``(train mode, eval mode)`` values of the current model on the subset; no side effects.

    Weighted as training is: the batches' own sample weights and ``weigh`` (the class weights),
    so the values compare with the training means on the same weighting.

    The train-mode pass keeps the modules' flags as training left them (a batch-norm layer the
    user froze in eval mode stays frozen); the eval-mode pass calls ``model.eval()``.
    ``reduce``: under DDP, each pass's sums over the ranks (see `measure_batches`).
    """
    flags = [(m, m.training) for m in model.modules()]

    def one_pass() -> dict[str, PassValue]:
        fresh = [m.fresh() for m in metrics]
        return measure_batches(
            model, subset.batches(), "loss", loss_fn, fresh, device, weigh=weigh, reduce=reduce
        )

    with preserved_state(model):
        # Train mode updates batch-norm running statistics as it goes (restored on exit), so
        # the eval-mode pass, which reads them, comes first.
        model.eval()
        eval_mode = one_pass()
        for module, training in flags:
            module.training = training
        train_mode = one_pass()
    return train_mode, eval_mode
