"""End-of-epoch truth for `fit`: train-data passes, the gap decomposition and the jump forecast.

`EpochTruth` is what `fit` holds for this feature; the loop calls it at four places:

* ``watch(batches, epoch)`` wraps the training batches (keeps a sample of the first epoch's
  batches when the data cannot be subset by index);
* ``end_epoch(...)`` after the training steps of an epoch and the validation pass: runs the
  ``train_eval`` passes, builds every metric's `GapDecomposition`, makes the forecast for the
  next epoch, and returns the values for ``History.history``, the record for ``History.gaps``
  and the display lines;
* ``check(batches)`` after each flush: once the next epoch's first batches are on the host,
  the line that says whether the jump came as forecast (no extra host sync: it reads the
  batch log).

Keys added to ``History.history`` with ``train_eval`` (``m`` is every training metric and the
loss): ``train_eval_train_mode_m`` (current model, training data, train mode) and
``train_eval_m`` (eval mode). The display shows one gap line and one forecast line per epoch
end, for the *headline* metric: the first metric in ``metrics``, or the loss if there is none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from fitlens.adapters.data import BatchSource
from fitlens.adapters.evaluation import PassValue
from fitlens.adapters.losses import LossFn
from fitlens.adapters.metrics import TrackedMetric
from fitlens.adapters.train_eval import TrainSubset, parse_train_eval, train_passes
from fitlens.core.forecast import FORECAST_STEPS, Forecast
from fitlens.core.gap import Measured, normal_interval, wilson_interval
from fitlens.core.history import BatchLog
from fitlens.view.epoch_end import EpochEnd, EpochEndLines
from fitlens.view.recorder import Recorder


def measured(value: PassValue, population: int | None = None) -> Measured:
    """A pass value with its 95% interval: Wilson for proportions, normal otherwise."""
    if value.kind == "proportion":
        low, high = wilson_interval(value.mean, value.n, population=population)
    else:
        low, high = normal_interval(value.mean, value.sd, value.n, population=population)
    return Measured(value.mean, low, high, value.n)


class EpochTruth:
    """Per-run state of the end-of-epoch passes and forecasts.

    Args:
        train_eval: `fit`'s argument: None/False (off), True (all training data), a fraction in
            (0, 1] or a sample count.
        source: the training `BatchSource`.
        loss_fn, metrics, device: as the loop uses them.

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
    ) -> None:
        size = parse_train_eval(train_eval)
        self.subset = TrainSubset(source, size) if size is not None else None
        self.source = source
        self.loss_fn = loss_fn
        self.metrics = list(metrics)
        self.device = device
        self.names = ["loss"] + [m.name for m in self.metrics]
        self.headline = self.names[1] if len(self.names) > 1 else "loss"
        self.lines = EpochEndLines()  # the gap line, forecast and check, shared with the callbacks

    @property
    def forecast(self) -> Forecast | None:
        """The forecast waiting for its check (None when there is none)."""
        return self.lines.forecast

    def watch(self, batches: Iterator[Any], epoch: int, start: int = 0) -> Iterator[Any]:
        """The training batches of 0-based ``epoch`` from position ``start``, unchanged."""
        return self.subset.watch(batches, epoch, start) if self.subset is not None else batches

    def state_dict(self) -> dict[str, Any]:
        """The train_eval subset's state, for checkpoints (empty without train_eval)."""
        return self.subset.state_dict() if self.subset is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.subset is not None and state:
            self.subset.load_state_dict(state)

    def end_epoch(
        self,
        epoch: int,
        model: torch.nn.Module,
        recorder: Recorder,
        validation: Mapping[str, PassValue] | None,
        last: bool,
    ) -> EpochEnd:
        """Passes, decomposition and forecast at the end of 0-based ``epoch`` (recorder flushed).

        Args:
            validation: the validation pass's values, or None without validation data.
            last: True when no epoch follows (no forecast is made).
        """
        train_mode: dict[str, PassValue] = {}
        eval_mode: dict[str, PassValue] = {}
        if self.subset is not None:
            train_mode, eval_mode = train_passes(
                model, self.subset, self.loss_fn, self.metrics, self.device
            )
        population = self.subset.population if self.subset is not None else None
        out = self.lines.end_epoch(
            epoch,
            self.headline,
            {name: recorder.mean(name) for name in self.names},
            {name: recorder.now(name) for name in self.names},
            {k: measured(v) for k, v in validation.items()} if validation else None,
            recorder.batches,
            recorder.steps_flushed,
            self.source.steps,
            train_mode={k: measured(v, population) for k, v in train_mode.items()},
            eval_mode={k: measured(v, population) for k, v in eval_mode.items()},
            last=last,
        )
        for name in self.names if self.subset is not None else ():
            out.logs[f"train_eval_train_mode_{name}"] = train_mode[name].mean
            out.logs[f"train_eval_{name}"] = eval_mode[name].mean
        return out

    def check(self, batches: BatchLog, steps_flushed: int) -> str | None:
        """The forecast check line once the first batches of the forecast epoch are flushed.

        Args:
            batches: the run's batch log. steps_flushed: this epoch's steps in it so far.
        """
        return self.lines.check(batches, steps_flushed)


__all__ = ["FORECAST_STEPS", "EpochEnd", "EpochTruth", "measured"]
