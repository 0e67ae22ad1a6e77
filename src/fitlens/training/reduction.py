"""Every rank's numbers made into the run's: the reductions of a data-parallel run.

`gather_rows` is the `ReduceRows` hook of a lens in a data-parallel run (`fit` under torchrun,
the Lightning callback under Lightning's DDP): one ``all_gather`` of every rank's queued rows,
then `combine_rows` makes each step's rows one global row, the same on every rank.
`gather_rows_and_flags` carries a few numbers per rank along in the same collective (`fit`'s stop
and checkpoint requests under DDP), so that the ranks agree on them without a collective of
their own.
`sum_over_ranks` is the end-of-epoch passes' (validation, ``train_eval``): one ``all_reduce``
of a pass's sums and counts over the ranks' disjoint shards. `spread_nonfinite` lets
``on_nonfinite="skip"`` decide alike on every rank with no collective of its own: it routes a
rank's non-finite loss into the gradients that DDP all-reduces anyway. `SyncedMetric` is a
torchmetrics metric's epoch value, merged over the ranks by torchmetrics at each reduction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from fitlens.view.lens import Rows


def _comm_device() -> torch.device:
    """Where the default group's collectives take their tensors (CUDA for nccl)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def from_rank_0(local: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``local`` on every rank (one ``broadcast``; the same shape and dtype on every
    rank), returned on the CPU."""
    shared = local.detach().to(_comm_device()).clone()
    dist.broadcast(shared, src=0)
    return shared.cpu()


def sum_over_ranks(local: torch.Tensor) -> torch.Tensor:
    """``local`` (float64) summed over every rank of the default group: one ``all_reduce``;
    returned on the CPU. Every rank must call it, in the same order, with the same length."""
    device = _comm_device()
    summed = local.detach().to(device, torch.float64).clone()
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)
    return summed.cpu()


class SyncedMetric:
    """A stateful (torchmetrics) training metric's epoch value in a data-parallel run.

    ``metric.compute()`` merges the metric's state over the ranks (torchmetrics all-gathers it
    under torch.distributed), so every rank must call it at the same moment: `sync` is called
    by the rows' reduction, which every rank runs at the same steps (each display refresh and
    the epoch end), and `compute` returns the value of the latest `sync` without a collective,
    however often the display or the epoch end reads it. Never per step: torchmetrics' own
    per-batch value (``forward``) does not sync unless the metric was built with
    ``dist_sync_on_step=True``.

    Args:
        metric: the `TrackedMetric` (any object with ``compute() -> float`` and ``reset()``).
    """

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.value = math.nan  # before the epoch's first reduction

    def sync(self) -> None:
        """Merge the ranks' states into the epoch value so far (torchmetrics' collectives)."""
        self.value = float(self.metric.compute())

    def compute(self) -> float:
        return self.value

    def reset(self) -> None:
        self.metric.reset()
        self.value = math.nan


def loss_to_backward(
    spread: Callable[[torch.Tensor], torch.Tensor] | None,
    uneven: tuple[int, float] | None,
    step: Callable[[], int],
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The loss a rank back-propagates under DDP, when it is not the plain loss: `spread`
    (``on_nonfinite="skip"``, see `spread_nonfinite`) and, at the 1-based step ``uneven[0]``
    (the epoch's unequally shared last global batch), the loss times ``uneven[1]`` (see
    `ShardSampler.uneven_last_step`). ``step()``: the steps done so far in the epoch. None when
    neither applies (the step back-propagates its loss as it is)."""
    if uneven is None:
        return spread
    last, factor = uneven

    def scaled(loss: torch.Tensor) -> torch.Tensor:
        loss = spread(loss) if spread is not None else loss
        return loss * factor if step() + 1 == last else loss

    return scaled


def spread_nonfinite(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss to back-propagate under DDP with ``on_nonfinite="skip"``: ``loss + (0 * loss) *
    p``, ``p`` one element of the model's first trainable parameter. Its value and gradients
    are the loss's when the loss is finite (adding 0); when it is not, ``0 * loss`` is NaN and
    so is ``p``'s gradient, which DDP's gradient all-reduce hands to every rank. Every rank's
    skip check (loss and gradients) then sees a non-finite gradient and skips the same step,
    even when the loss is infinite with finite gradients (an infinite constant term), with no
    collective beyond DDP's. Costs three scalar ops per step."""
    anchor = next(p for p in model.parameters() if p.requires_grad)

    def spread(loss: torch.Tensor) -> torch.Tensor:
        return loss + loss.detach().mul(0.0) * anchor.reshape(-1)[0]

    return spread


def _all_gather(out: torch.Tensor, local: torch.Tensor) -> None:
    """Every rank's ``local`` into ``out``, rank after rank (one collective)."""
    gather = getattr(dist, "all_gather_single", None)  # the name from torch 2.10 on
    if gather is None:
        gather = dist.all_gather_into_tensor
    gather(out, local)


def gather_rows(rows: Rows) -> Rows:
    """The run's rows from this rank's: one ``all_gather`` over the default process group, then
    `combine_rows`. A `ReduceRows` for any lens in a data-parallel run (`fit`'s, or a framework
    callback's under the framework's own DDP); every rank must call it at the same steps."""
    return gather_rows_and_flags(rows, ())[0]


def gather_rows_and_flags(rows: Rows, flags: Sequence[float]) -> tuple[Rows, np.ndarray]:
    """`gather_rows`, with ``flags`` (this rank's few numbers, the same length on every rank)
    carried in the same ``all_gather``; returns the run's rows and every rank's flags,
    ``(world, len(flags))``. ``rows`` must hold at least one step."""
    n, k = rows.values.shape
    m = len(flags)
    world = dist.get_world_size()
    packed = np.concatenate(
        [
            rows.steps[:, None].astype(np.float64),
            rows.values,
            rows.weights,
            rows.sizes[:, None],
            rows.step_times[:, None],
            rows.data_times[:, None],
            np.broadcast_to(np.asarray(flags, dtype=np.float64), (n, m)),
        ],
        axis=1,
    )
    width = 2 * k + 4 + m
    device = _comm_device()
    # A copy torch owns: a tensor over numpy's memory would be freed by gloo's worker thread
    # when the collective's work object goes, which needs the GIL, while destroy_process_group
    # holds it joining that thread (a deadlock at the end of fit, seen under torchrun).
    local = torch.tensor(packed, device=device)
    out = torch.empty((world * n, width), dtype=local.dtype, device=device)
    _all_gather(out, local)
    gathered = out.cpu().numpy().reshape(world, n, width)
    if not np.array_equal(gathered[:, :, 0], np.broadcast_to(gathered[0, :, 0], (world, n))):
        raise RuntimeError(
            "The ranks reached a display refresh at different steps: every rank must run "
            "the same number of steps per epoch (give each the same number of batches)."
        )
    return combine_rows(gathered[:, :, : 2 * k + 4], k), gathered[:, 0, 2 * k + 4 :]


def combine_rows(gathered: np.ndarray, k: int) -> Rows:
    """One global row per step from every rank's rows.

    Args:
        gathered: ``(world, n, 2k + 4)``: per rank and step, the step, ``k`` values, ``k``
            weights, the size, the step time and the data time.
        k: metrics.

    Returns:
        `Rows` where each value is the weight-averaged value over the ranks (weights summed; a
        value with no weight anywhere is NaN at weight 0), sizes summed, and times the slowest
        rank's (the ranks wait for each other in the gradient all-reduce).
    """
    values, weights = gathered[:, :, 1 : 1 + k], gathered[:, :, 1 + k : 1 + 2 * k]
    total = weights.sum(axis=0)
    summed = np.where(weights > 0, values * weights, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(total > 0, summed / np.where(total > 0, total, 1.0), np.nan)
    return Rows(
        steps=gathered[0, :, 0].astype(np.int64),
        values=mean,
        weights=total,
        sizes=gathered[:, :, 1 + 2 * k].sum(axis=0),
        step_times=gathered[:, :, 2 + 2 * k].max(axis=0),
        data_times=gathered[:, :, 3 + 2 * k].max(axis=0),
    )


__all__ = [
    "SyncedMetric",
    "combine_rows",
    "from_rank_0",
    "gather_rows",
    "gather_rows_and_flags",
    "loss_to_backward",
    "spread_nonfinite",
    "sum_over_ranks",
]
