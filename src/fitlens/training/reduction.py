"""Every rank's per-step rows made into the run's rows: the lens's reduction under DDP.

`gather_rows` is the `ReduceRows` hook of a lens in a data-parallel run (`fit` under torchrun,
the Lightning callback under Lightning's DDP): one ``all_gather`` of every rank's queued rows,
then `combine_rows` makes each step's rows one global row, the same on every rank.
`gather_rows_and_flags` carries a few numbers per rank along in the same collective (`fit`'s stop
and checkpoint requests under DDP), so that the ranks agree on them without a collective of
their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

from fitlens.view.lens import Rows


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
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    local = torch.from_numpy(np.ascontiguousarray(packed)).to(device)
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


__all__ = ["combine_rows", "gather_rows", "gather_rows_and_flags"]
