"""`fitlens.predict`: the model's outputs over a dataset, stacked, with `fit`'s display.

The model runs in eval mode under ``torch.inference_mode()``; every module's train/eval flag is
put back afterwards (a batch-norm layer the user froze stays frozen). Each batch's outputs move
to the CPU as they come (memory on the device stays one batch's), and are concatenated at the
end. Progress goes through the same `Progress` display as `fit`: a bar (or log lines) once the
pass has run for `SHOW_AFTER` seconds, so short predictions print nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from fitlens.adapters.data import to_device
from fitlens.adapters.dtypes import Float64Cast, input_dtype
from fitlens.adapters.evaluation import forward, model_device
from fitlens.adapters.prediction import InputBatches, stack, to_cpu
from fitlens.adapters.prefetch import Prefetcher, validate_prefetch
from fitlens.view.progress import Progress, ProgressState
from fitlens.view.timing import Clock, default_clock

#: Seconds a pass runs before its progress is shown (a quick prediction prints nothing).
SHOW_AFTER = 1.0


def predict(
    model: torch.nn.Module,
    data: Any,
    *,
    batch_size: int | None = None,
    steps: int | None = None,
    prefetch: int = 0,
    verbose: int | Progress = 1,
    device: torch.device | str | None = None,
    clock: Clock | None = None,
) -> Any:
    """The model's outputs on ``data``, in order, stacked along the first dimension.

    Args:
        model: a ``torch.nn.Module``, called as in `fit` (``model(x)``, ``model(*x)``,
            ``model(**x)``).
        data: inputs ``x`` (a tensor or array, or a tuple/dict of them) cut into batches of
            ``batch_size``; or a ``DataLoader``, a list of batches or a generator (with
            ``steps``) whose batches are ``x`` or ``(x, y)`` / ``(x, y, w)`` (targets and
            weights ignored). See `fitlens.adapters.prediction`.
        batch_size: for arrays (default 32); an error with data that makes its own batches.
        steps: batches to run (required for a generator).
        prefetch: read this many batches ahead in a background thread, as in `fit`.
        verbose: 0, 1 or 2, or a configured `Progress`: at 1, a bar (lines in a log) once the
            pass has taken `SHOW_AFTER` seconds; at 2, only the closing line.
        device: where to run; default: where the model's parameters are.
        clock: seconds as a float; ``time.perf_counter`` unless injected (tests).

    Returns:
        CPU tensors in the structure the model returns: a tensor ``(N, ...)``, a tuple, list
        or dict of them. float64 inputs are cast to the model's dtype (one warning), as in
        `fit`.

    Example:
        >>> import torch, fitlens
        >>> model = torch.nn.Linear(4, 3)
        >>> fitlens.predict(model, torch.randn(100, 4), batch_size=32, verbose=0).shape
        torch.Size([100, 3])

    Raises:
        ValueError / TypeError: before the first batch, for invalid arguments; for a pass
            that yields no batch.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"Expected `model` to be a torch.nn.Module. Received: {type(model).__name__}."
        )
    progress = verbose if isinstance(verbose, Progress) else Progress(verbose)
    batches = InputBatches(data, batch_size, steps)
    dev = torch.device(device) if device is not None else model_device(model)
    cast = Float64Cast(input_dtype(model), "data")
    feeder = Prefetcher(prefetch, dev) if validate_prefetch(prefetch) else None
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    outputs: list[Any] = []
    shown = _Shown(progress, batches.steps, clock or default_clock())
    try:
        with torch.inference_mode():
            for x in _inputs(batches, feeder, dev):
                outputs.append(to_cpu(forward(model, cast(x))))
                shown.step()
    finally:
        for module, training in flags:
            module.training = training
        if feeder is not None:
            feeder.close()
        shown.close()
    if not outputs:
        raise ValueError("Expected `data` to yield at least one batch. Received none.")
    return stack(outputs)


def _inputs(batches: InputBatches, feeder: Prefetcher | None, dev: torch.device) -> Iterator[Any]:
    source: Iterator[Any] = iter(batches)
    if feeder is not None:
        source = feeder.epoch(source)  # yields (x, None, None) on the device
    for item in source:
        yield to_device(item[0], dev)


class _Shown:
    """The pass's progress through `Progress`: one "epoch" of ``steps`` batches."""

    def __init__(self, progress: Progress, steps: int | None, clock: Clock) -> None:
        self.progress, self.steps, self.clock = progress, steps, clock
        self.start = self.next = clock()
        self.done = 0
        self.opened = False

    def _state(self, elapsed: float) -> ProgressState:
        left = (self.steps - self.done) if self.steps is not None else None
        eta = elapsed / self.done * left if left is not None and self.done else float("nan")
        return ProgressState(1, 1, self.done, self.steps, elapsed, eta, eta)

    def step(self) -> None:
        self.done += 1
        now = self.clock()
        elapsed = now - self.start
        if now < self.next or elapsed < SHOW_AFTER or not self.progress.verbose:
            return
        if not self.opened:
            self.progress.begin_epoch(1, 1, self.steps)
            self.opened = True
        self.next = now + self.progress.refresh_interval
        if self.progress.will_draw(self.done, elapsed):
            self.progress.refresh(self._state(elapsed))

    def close(self) -> None:
        if self.opened or self.progress.verbose == 2:
            self.progress.end_epoch(self._state(self.clock() - self.start))
        else:
            self.progress.close()


__all__ = ["SHOW_AFTER", "predict"]
