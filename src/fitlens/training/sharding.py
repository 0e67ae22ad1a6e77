"""Splitting `fit`'s data across the ranks of a data-parallel run (see `fitlens.training.distributed`).

With ``W`` ranks and a (global) ``batch_size`` ``B`` (a multiple of ``W``), global batch ``i``
is the ``B`` samples at positions ``[i*B, (i+1)*B)`` of the epoch's order, dealt to the ranks
in turn (rank ``r`` takes positions ``r, r + W, ...``, ``B/W`` per step): the same samples, in
the same global steps, as one process with ``batch_size=B``. The epoch's order is drawn as one
process draws it (`ShardSampler`), from a generator that starts where rank 0's did, so with
the same seed the global batches are the one-process batches.

Evaluation passes (validation, ``train_eval``) need no equal steps, only a disjoint cover:
`shard_for_eval` gives each rank a contiguous part of the samples (or every ``W``-th batch of
a list of batches), every sample in exactly one part.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, IterableDataset, RandomSampler, Sampler, SequentialSampler

from fitlens.adapters.data import ArrayData, BatchSource, take

Draw = Literal["randperm", "seeded"]


class ShardSampler(Sampler[int]):
    """This rank's sample indices of an epoch, global batches dealt across ranks in turn.

    The epoch's order is drawn at each iteration, as the one-process data draws it, from
    ``generator`` (the same state on every rank, so every rank draws the same order):
    ``"randperm"``: ``torch.randperm(n, generator=generator)``, as array data (from torch's
    global generator) and a ``RandomSampler`` with its own generator do; ``"seeded"``: a seed
    drawn from ``generator``, then ``randperm`` from a generator seeded with it, as a
    ``RandomSampler`` without a generator does. ``generator=None``: ``0..n-1`` (no shuffle).
    Rank ``rank`` takes positions ``rank, rank + world, ...``, so batching its indices by
    ``batch_size // world`` gives it its share of each global batch of ``batch_size``.

    Every rank must run the same number of steps (DDP's gradient all-reduce pairs them). When the
    last global batch holds fewer than ``world`` samples (some rank would get none) or
    ``drop_last`` is set, the last partial global batch is left out of the epoch; otherwise
    every sample is used exactly once and the last batches are uneven (counted by their size).
    No sample is duplicated (unlike ``DistributedSampler``'s padding).
    """

    def __init__(
        self,
        n: int,
        rank: int,
        world: int,
        batch_size: int,
        *,
        generator: torch.Generator | None,
        draw: Draw = "randperm",
        drop_last: bool = False,
    ) -> None:
        if batch_size % world:
            raise ValueError(
                f"Expected a batch_size that {world} processes can share equally (a multiple of "
                f"{world}): under DDP batch_size is the global batch, each process takes "
                f"batch_size / {world} of it. Received batch_size={batch_size}."
            )
        self.n, self.rank, self.world, self.generator, self.draw = n, rank, world, generator, draw
        self.per_rank = batch_size // world
        self.epoch = 0
        tail = n % batch_size
        self.used = n - tail if drop_last or 0 < tail < world else n
        self.dropped = n - self.used

    @property
    def shuffle(self) -> bool:
        return self.generator is not None

    def set_epoch(self, epoch: int) -> None:
        """Record the epoch (the order is drawn from the generator, not from the epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(range(self.rank, self.used, self.world))

    def order(self) -> torch.Tensor:
        """The epoch's order of all ``n`` samples (draws from the generator when shuffling)."""
        if self.generator is None:
            return torch.arange(self.n)
        if self.draw == "seeded":
            seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator))
            return torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))
        return torch.randperm(self.n, generator=self.generator)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.rank : self.used : self.world].tolist())

    def uneven_last_step(self) -> tuple[int, float] | None:
        """``(step, factor)`` when the epoch's last global batch is shared unequally (its
        ``t`` samples not a multiple of ``world``): its 1-based step and the factor
        ``n * world / t`` for this rank's loss, ``n`` its share. DDP averages the ranks'
        gradients as equals; scaled so, their average is the gradient of the ``t`` samples'
        mean loss, as on one process. None when every global batch is shared equally."""
        batch = self.per_rank * self.world
        tail = self.used % batch
        if tail % self.world == 0:
            return None
        share = len(range(self.rank, tail, self.world))
        return math.ceil(self.used / batch), share * self.world / tail


class ShardedArrays:
    """`ArrayData` served through a `ShardSampler`: this rank's batches of ``(x, y)`` (or
    ``(x, y, w)`` with sample weights)."""

    def __init__(self, data: ArrayData, sampler: ShardSampler) -> None:
        self.data, self.sampler = data, sampler

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.sampler.per_rank)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        index = torch.tensor(list(self.sampler), dtype=torch.long)
        b, data = self.sampler.per_rank, self.data
        for start in range(0, len(index), b):
            rows = index[start : start + b]
            if data.w is None:
                yield take(data.x, rows), take(data.y, rows)
            else:
                yield take(data.x, rows), take(data.y, rows), take(data.w, rows)


def part(n: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous part of ``n`` items: ``[rank*n//world, (rank+1)*n//world)``
    (sizes differ by at most one; a part may be empty when ``n < world``)."""
    return range(rank * n // world, (rank + 1) * n // world)


def split_arrays(data: ArrayData, rank: int, world: int) -> ArrayData:
    """Rank ``rank``'s `part` of the samples of ``data``, in order (not shuffled)."""
    index = torch.tensor(part(data.n, rank, world), dtype=torch.long)
    w = take(data.w, index) if data.w is not None else None
    return ArrayData(take(data.x, index), take(data.y, index), data.batch_size, False, w)


class EvalPart(Sampler[int]):
    """The indices of a rank's part of an evaluation ``DataLoader``, in order. With ``draws``
    (a generator), each pass first draws one seed from it, as the ``RandomSampler`` it replaces
    draws from torch's global generator on one process (its order does not matter to sums)."""

    def __init__(self, indices: range, draws: torch.Generator | None) -> None:
        self.indices, self.draws = indices, draws

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        if self.draws is not None:
            torch.empty((), dtype=torch.int64).random_(generator=self.draws)
        return iter(self.indices)


def shard_for_eval(
    source: BatchSource, rank: int, world: int, shuffling: torch.Generator | None = None
) -> bool:
    """Make ``source`` (an evaluation pass's data, in place) this rank's disjoint part.

    Arrays and a ``DataLoader`` with PyTorch's default sampler are split by samples (`part`); a
    list or tuple of batches by batches (rank ``r`` takes batches ``r, r + world, ...``). Other
    data (a generator, a ``DataLoader`` with its own sampler or an ``IterableDataset``, a pass
    limited by ``steps`` to fewer batches than the data has) cannot be split without knowing
    what each rank's copy holds: it is left as it is and False returned (each rank then
    evaluates all of it, the same values everywhere).

    ``shuffling``: the training data's shuffling generator under DDP (see `ShardSampler`). On
    one process a ``DataLoader`` without a generator draws from torch's global generator at
    each pass (its workers' seed; a shuffled one its order's seed too), which moves the next
    shuffle of the training data; the split loader draws as many values from ``shuffling``.
    """
    data = source.iterable
    if source.steps is not None and source.kind != "generator":
        try:
            if source.steps < len(data):  # type: ignore[arg-type]
                return False
        except TypeError:
            return False
    if isinstance(data, ArrayData):
        source.iterable = split_arrays(data, rank, world)
    elif isinstance(data, DataLoader):
        if not default_sampler(data):
            return False
        indices = part(len(data.dataset), rank, world)  # type: ignore[arg-type]
        sampled = data.sampler  # a RandomSampler without a generator draws from the global one
        global_draw = isinstance(sampled, RandomSampler) and sampled.generator is None
        sampler = EvalPart(indices, shuffling if global_draw else None)
        source.iterable = rebuild_loader(data, sampler, generator=data.generator or shuffling)
    elif isinstance(data, list | tuple):
        source.iterable = list(data[rank::world])
    else:
        return False
    source.steps = len(source.iterable)
    return True


def default_sampler(loader: DataLoader) -> bool:
    """True for a map-style ``DataLoader`` batching PyTorch's default sampler (which fitlens
    may replace): not an ``IterableDataset``, not the user's own sampler or batch sampler."""
    return (
        not isinstance(loader.dataset, IterableDataset)
        and loader.batch_size is not None
        and type(loader.sampler) in (SequentialSampler, RandomSampler)
    )


def rebuild_loader(
    loader: DataLoader,
    sampler: Sampler[int] | list[int],
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """``loader`` with ``sampler`` in place of its default one, batches of ``batch_size`` (None:
    the loader's) and the worker seeds drawn from ``generator`` (None: torch's global
    generator, as a loader without one); everything else kept."""
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_size=batch_size or loader.batch_size,
        sampler=sampler,
        generator=generator,
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=False,  # the sampler already left out what drop_last drops
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        prefetch_factor=loader.prefetch_factor if workers else None,
        persistent_workers=loader.persistent_workers,
    )


__all__ = [
    "EvalPart",
    "ShardSampler",
    "ShardedArrays",
    "default_sampler",
    "part",
    "rebuild_loader",
    "shard_for_eval",
    "split_arrays",
]
