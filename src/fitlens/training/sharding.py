"""Splitting `fit`'s data across the ranks of a data-parallel run (see `fitlens.training.distributed`).

With ``W`` ranks and a per-rank ``batch_size`` ``b``, global batch ``i`` is the ``W * b``
samples at positions ``[i*W*b, (i+1)*W*b)`` of the epoch's order, dealt to the ranks in turn
(rank ``r`` takes positions ``r, r + W, ...``): the same samples, in the same global steps, as
one process with ``batch_size=W*b``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from fitlens.adapters.data import ArrayData, take


class ShardSampler(Sampler[int]):
    """This rank's sample indices of an epoch, global batches dealt across ranks in turn.

    The epoch's order is ``torch.randperm(n)`` from a generator seeded with ``seed + epoch``
    (every rank draws the same order; call `set_epoch` each epoch) or ``0..n-1`` without
    ``shuffle``. Rank ``rank`` takes positions ``rank, rank + world, ...``, so batching its
    indices by ``batch_size`` gives it its share of each global batch of ``world * batch_size``.

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
        shuffle: bool,
        seed: int,
        drop_last: bool = False,
    ) -> None:
        self.n, self.rank, self.world, self.shuffle, self.seed = n, rank, world, shuffle, seed
        self.epoch = 0
        per_step = world * batch_size
        tail = n % per_step
        self.used = n - tail if drop_last or 0 < tail < world else n
        self.dropped = n - self.used

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(range(self.rank, self.used, self.world))

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        return iter(order[self.rank : self.used : self.world].tolist())


class ShardedArrays:
    """`ArrayData` served through a `ShardSampler`: this rank's batches of ``(x, y)``."""

    def __init__(self, data: ArrayData, sampler: ShardSampler) -> None:
        self.data, self.sampler = data, sampler

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.data.batch_size)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        index = torch.tensor(list(self.sampler), dtype=torch.long)
        b = self.data.batch_size
        for start in range(0, len(index), b):
            part = index[start : start + b]
            yield take(self.data.x, part), take(self.data.y, part)


def rebuild_loader(loader: DataLoader, sampler: ShardSampler) -> DataLoader:
    """``loader`` with ``sampler`` in place of its default one (everything else kept)."""
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
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


__all__ = ["ShardSampler", "ShardedArrays", "rebuild_loader"]
