"""Where an epoch's time went, and the one hint fitlens gives when the input pipeline is slow.

`fit` measures, per epoch (stored in ``History.timing``, seconds):

* ``data_wait``: time the loop spent waiting for the next batch (the user's generator or
  DataLoader, plus moving the batch to the device);
* ``compute``: time spent in training steps (forward, backward, optimiser step), as the host
  sees it: on CUDA, kernels still queued show up at the next sync, not here;
* ``eval``: end-of-epoch passes (validation);
* ``time``: the whole epoch, wall clock.

When waiting for data takes more than ``threshold`` of an epoch, the model is starved: a faster
GPU would not help, a faster input pipeline would. `DataWaitHint` then returns one line naming
what to try, once per run (not every epoch).

Example:
    >>> hint = DataWaitHint(threshold=0.3, min_seconds=0.0)
    >>> line = hint.check(epoch=0, timing={"time": 10.0, "data_wait": 6.0}, prefetch=0)
    >>> line.split(":")[0]
    'Input pipeline bottleneck'
    >>> hint.check(epoch=1, timing={"time": 10.0, "data_wait": 6.0}, prefetch=0) is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def data_share(timing: Mapping[str, float]) -> float:
    """Fraction of the epoch's wall time spent waiting for data (NaN when unknown)."""
    total = timing.get("time", math.nan)
    wait = timing.get("data_wait", math.nan)
    return wait / total if total > 0 else math.nan


class DataWaitHint:
    """Says, once per run, that the input pipeline is the bottleneck.

    Args:
        threshold: share of an epoch's wall time spent waiting for data above which the hint
            is given, in (0, 1).
        min_seconds: epochs shorter than this are ignored (their shares are mostly noise).
    """

    def __init__(self, threshold: float = 0.3, min_seconds: float = 1.0) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"Expected `threshold` in (0, 1). Received: {threshold!r}.")
        self.threshold = threshold
        self.min_seconds = min_seconds
        self.given = False

    def check(
        self,
        epoch: int,
        timing: Mapping[str, float],
        prefetch: int | None,
        data: str | None = None,
        workers: int | None = None,
    ) -> str | None:
        """The hint line for 0-based ``epoch`` if due (at most once per run), else None.

        Args:
            epoch: 0-based epoch. timing: its ``time`` and ``data_wait`` seconds.
            prefetch: `fitlens.fit`'s read-ahead depth; None outside `fit` (a framework's
                loop), where the advice leaves `fit`'s option out.
            data: the input `fit` saw: ``"generator"``, ``"dataloader"``, ``"arrays"`` or
                ``"iterable"``; None when unknown (the advice then covers the usual fixes).
            workers: a DataLoader's ``num_workers``.
        """
        share = data_share(timing)
        if (
            self.given
            or not share > self.threshold
            or not timing.get("time", 0.0) >= self.min_seconds
        ):
            return None
        self.given = True
        return (
            f"Input pipeline bottleneck: waiting for data took {share:.0%} of epoch "
            f"{epoch + 1} ({timing['data_wait']:.1f}s of {timing['time']:.1f}s); the model "
            f"was idle meanwhile. {advice(prefetch, data, workers)}"
        )


_WORKERS = (
    "make batches in parallel: a torch Dataset in a DataLoader(num_workers=N) (worker "
    "processes; pin_memory=True on CUDA)"
)
_CHEAPER = "or precompute/cache the batches."


def advice(prefetch: int | None, data: str | None, workers: int | None) -> str:
    """What can make the input faster, for the input kind seen.

    A read-ahead thread (`fit`'s ``prefetch=``) hides the time of making a batch behind the
    model's step as long as making one takes less time than a step (and releases the GIL while
    it works); parallel loading (a DataLoader's worker processes) makes several batches at once.
    Once a thread is reading ahead and the model still waits, only parallel loading (or cheaper
    batches) helps: a deeper buffer fills no faster.
    """
    if data == "dataloader" and workers:
        return (
            f"Try: the DataLoader already loads in parallel with num_workers={workers}: raise "
            "num_workers (up to the CPU cores) and prefetch_factor, persistent_workers=True to "
            f"keep the workers across epochs, {_CHEAPER}"
        )
    if data == "dataloader":
        return (
            "Try: the DataLoader makes every batch in the training process (num_workers=0): "
            "pass num_workers=N to make batches in parallel in worker processes "
            f"(pin_memory=True on CUDA), {_CHEAPER}"
        )
    if data == "arrays":
        return (
            "Try: the batches are sliced from arrays in memory, so the wait is the copy to the "
            "device: move x and y to the device before fit, or pass fit(..., prefetch=2) to "
            "copy the next batches in a background thread."
        )
    if prefetch is None:  # a framework's loop: its own loader options
        return (
            "Try: for a torch DataLoader, num_workers=N (worker processes) and pin_memory=True "
            f"on CUDA; {_CHEAPER}"
        )
    if prefetch:
        return (
            f"Try: {_WORKERS}. prefetch={prefetch} already reads ahead, but in one thread that "
            f"makes one batch at a time: a larger prefetch= fills no faster. Or {_CHEAPER[3:]}"
        )
    return (
        "Try: fit(..., prefetch=4): a background thread makes the next batches while the model "
        "computes, which hides the wait while a batch takes less time than a step (one thread "
        f"makes one batch at a time). If a batch takes longer, {_WORKERS}; {_CHEAPER}"
    )
