"""Step-time estimation and the ETA, with an injectable clock.

The seed user's Keras ETA swung from 11,726 s to 14,136 s within three batches because Keras 2
divided elapsed time by steps done, first (slow, warm-up) steps included. `StepTimer` instead:

* leaves the first ``warmup`` steps out (graph building, allocator warm-up, cold caches), as
  Keras 3 and tf.keras learned to do;
* follows drift with an EMA of seconds over an EMA of steps (each refresh's observation counts
  by how many steps it covers), bias-corrected as tqdm smooths its rate, so that the estimate
  starts at the first measured value instead of creeping up from zero;
* estimates both the current epoch's remaining time and the whole run's (remaining epochs, and
  the end-of-epoch evaluation time measured so far).

Times are seconds of the clock given (``time.perf_counter`` by default).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Clock = Callable[[], float]


class StepTimer:
    """Bias-corrected EMA of seconds per training step, with warm-up steps left out.

    Args:
        smoothing: weight of the newest observation in the EMA, in (0, 1]; 1 uses only the
            latest observation, small values average over about ``1 / smoothing`` updates.
        warmup: number of first steps of the run whose time is ignored.

    Example:
        >>> t = StepTimer(smoothing=0.5, warmup=1)
        >>> t.observe(steps=1, seconds=9.0)  # the slow first step is ignored
        >>> t.observe(steps=4, seconds=2.0)
        >>> t.seconds_per_step
        0.5
    """

    def __init__(self, smoothing: float = 0.3, warmup: int = 1) -> None:
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"Expected `smoothing` in (0, 1]. Received: {smoothing!r}.")
        if warmup < 0:
            raise ValueError(f"Expected `warmup` >= 0. Received: {warmup!r}.")
        self.smoothing = smoothing
        self.warmup = warmup
        self._seconds = 0.0  # EMA of the seconds per observation
        self._steps = 0.0  # EMA of the steps per observation (same bias: it cancels)
        self._warm_left = warmup

    def observe(self, steps: int, seconds: float) -> None:
        """Record that ``steps`` steps took ``seconds`` in total (one refresh interval)."""
        if steps <= 0:
            return
        if self._warm_left:
            ignored = min(self._warm_left, steps)
            self._warm_left -= ignored
            seconds *= (steps - ignored) / steps
            steps -= ignored
            if steps == 0:
                return
        a = self.smoothing
        self._seconds = (1 - a) * self._seconds + a * seconds
        self._steps = (1 - a) * self._steps + a * steps

    @property
    def seconds_per_step(self) -> float:
        """Smoothed seconds per step; NaN until a post-warm-up step has been seen."""
        return self._seconds / self._steps if self._steps > 0 else math.nan

    def remaining(self, steps_left: float) -> float:
        """Seconds for ``steps_left`` more steps; NaN when unknown."""
        return steps_left * self.seconds_per_step


def run_remaining(
    timer: StepTimer,
    *,
    steps_left_in_epoch: int | None,
    epochs_left_after: int,
    steps_per_epoch: int | None,
    eval_seconds: float,
    evals_left: int,
) -> float:
    """Seconds until the whole run ends: this epoch, later epochs, and their evaluations.

    ``eval_seconds`` is the time one end-of-epoch evaluation took (NaN before the first one is
    measured, in which case evaluation counts as free). Returns NaN when the epoch length is
    unknown.
    """
    if steps_left_in_epoch is None or steps_per_epoch is None:
        return math.nan
    steps = steps_left_in_epoch + epochs_left_after * steps_per_epoch
    evals = 0.0 if math.isnan(eval_seconds) else eval_seconds * evals_left
    return timer.remaining(steps) + evals


def format_seconds(seconds: float) -> str:
    """``"1:02:03"``, ``"02:03"`` for under an hour, ``"?"`` for NaN or infinity."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def default_clock() -> Clock:
    """The clock the loop uses unless one is injected: ``time.perf_counter``."""
    return time.perf_counter
