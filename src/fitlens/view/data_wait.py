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

    def check(self, epoch: int, timing: Mapping[str, float], prefetch: int | None) -> str | None:
        """The hint line for 0-based ``epoch`` if due (at most once per run), else None.

        ``prefetch`` is `fitlens.fit`'s read-ahead depth; None outside `fit` (a framework's
        loop), where the advice leaves `fit`'s option out.
        """
        share = data_share(timing)
        if (
            self.given
            or not share > self.threshold
            or not timing.get("time", 0.0) >= self.min_seconds
        ):
            return None
        self.given = True
        if prefetch is None:
            ahead = ""
        elif prefetch:
            ahead = f"raise prefetch= (now {prefetch}) if making a batch releases the GIL; "
        else:
            ahead = (
                "pass fit(..., prefetch=4) to read batches in a background thread while the "
                "model computes; "
            )
        return (
            f"Input pipeline bottleneck: waiting for data took {share:.0%} of epoch "
            f"{epoch + 1} ({timing['data_wait']:.1f}s of {timing['time']:.1f}s); the model "
            f"was idle meanwhile. Try: {ahead}for a torch DataLoader, num_workers=N "
            "(worker processes) and pin_memory=True on CUDA; or precompute/cache the batches."
        )
