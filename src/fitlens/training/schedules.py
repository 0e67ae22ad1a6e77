"""Learning-rate schedules in `fit`: ``scheduler=``, ``scheduler_interval=``, ``monitor=``.

``scheduler`` is a torch LR scheduler built on `fit`'s optimizer, or a factory
``optimizer -> scheduler`` (convenient with ``optimizer="adam"``). It is stepped after every
optimizer step (``scheduler_interval="step"``; with ``accumulate=k`` that is every k batches) or
after every epoch (``"epoch"``, the default, as Keras's ``LearningRateScheduler``), before the
epoch-end checkpoint. ``ReduceLROnPlateau`` is stepped at each epoch end with the epoch's
``monitor`` value (default ``"val_loss"``); for the known metrics (``loss``, ``mse``, ``mae``:
lower is better; ``accuracy``: higher) the direction is inferred and a scheduler built with
the other ``mode`` is refused before training.

The learning rate of the first parameter group is shown in the display (``lr``), recorded per
batch in ``history.batches["lr"]`` (the rate the batch's update used) and per epoch in
``history.history["lr"]`` (the rate of the epoch's last batch). The scheduler's state goes
into every checkpoint and is restored on resume; a scheduler also given to
``Checkpointing(scheduler=...)`` must be the same object.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

SchedulerInterval = Literal["epoch", "step"]
_INTERVALS = ("epoch", "step")
LR = "lr"
_MISORDER = r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`"
# Direction of the known metrics: True when lower is better.
_LOWER_IS_BETTER = {"loss": True, "mse": True, "mae": True, "accuracy": False}


def build_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer) -> Any:
    """The scheduler itself, or what the factory ``optimizer -> scheduler`` returns.

    Raises:
        TypeError: neither a scheduler (with ``step`` and ``state_dict``) nor a factory of one.
    """
    if callable(scheduler) and not hasattr(scheduler, "state_dict"):
        scheduler = scheduler(optimizer)
    if not (hasattr(scheduler, "step") and hasattr(scheduler, "state_dict")):
        raise TypeError(
            "Expected `scheduler` to be a torch LR scheduler or a function optimizer -> "
            f"scheduler, e.g. lambda opt: torch.optim.lr_scheduler.StepLR(opt, 10). Received: "
            f"{type(scheduler).__name__}."
        )
    owner = getattr(scheduler, "optimizer", optimizer)
    if owner is not optimizer:
        raise ValueError(
            "The `scheduler` was built on another optimizer than the one fit trains with. "
            "Build it on the same optimizer, or pass a factory: scheduler=lambda opt: ...(opt)."
        )
    return scheduler


def lower_is_better(monitor: str) -> bool | None:
    """Whether a lower ``monitor`` value is better, for the known metrics (None: unknown)."""
    base = monitor.removeprefix("val_").removeprefix("train_eval_")
    return _LOWER_IS_BETTER.get(base)


class Schedule:
    """One `fit` call's LR scheduler and its ``lr`` column.

    Args:
        scheduler: built (see `build_scheduler`); interval: ``"epoch"`` or ``"step"``;
        monitor: the epoch log that drives ``ReduceLROnPlateau``; optimizer: the one it drives;
        device: where the ``lr`` column's 0-d tensors live; has_validation: whether
        ``validation_data`` was given (``val_*`` monitors need it).

    Raises:
        ValueError: an unknown interval, a ``val_*`` monitor without validation data, or a
            ``ReduceLROnPlateau`` stepped per step or whose ``mode`` contradicts a known
            monitored metric.
    """

    def __init__(
        self,
        scheduler: Any,
        interval: Any,
        monitor: str,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        has_validation: bool,
    ) -> None:
        if interval not in _INTERVALS:
            raise ValueError(
                f"Expected `scheduler_interval` to be one of {_INTERVALS}. Received: {interval!r}."
            )
        self.scheduler, self.optimizer, self.device = scheduler, optimizer, device
        self.plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        if self.plateau and interval == "step":
            raise ValueError(
                "ReduceLROnPlateau steps on a monitored epoch value, once per epoch; "
                'scheduler_interval="step" cannot drive it. Leave scheduler_interval="epoch".'
            )
        self.interval: SchedulerInterval = interval
        self.monitor = monitor
        if self.plateau:
            _check_plateau(scheduler, monitor, has_validation)
        self._rate = float("nan")
        self._tensor = torch.zeros((), device=device)
        self.reported: dict[str, float] | None = None  # the lens's shown values, set by fit

    def lr(self) -> float:
        """The first parameter group's learning rate now."""
        return float(self.optimizer.param_groups[0]["lr"])

    def column(self) -> torch.Tensor:
        """The ``lr`` column's value for the current batch: a 0-d device tensor, made anew only
        when the rate changed (a fill, no transfer)."""
        rate = self.lr()
        if rate != self._rate:
            self._rate, self._tensor = rate, torch.full((), rate, device=self.device)
        return self._tensor

    def show(self) -> None:
        """Show the current rate in the display (the lens's reported values)."""
        if self.reported is not None:
            self.reported[LR] = self.lr()

    def after_optimizer_step(self) -> None:
        """Step a per-step scheduler."""
        if self.interval == "step":
            if getattr(self.scheduler, "_step_count", 0) > 1:
                self.scheduler.step()
            else:
                # torch checks the first step only: after an fp16 overflow GradScaler skipped
                # the optimizer's step (fitlens counts it), which torch takes for a call out
                # of order; fitlens always steps the scheduler after the optimizer
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=_MISORDER, category=UserWarning)
                    self.scheduler.step()
            self.show()

    def end_epoch(self, logs: dict[str, float], history: dict[str, list[float]]) -> None:
        """After the epoch is recorded in ``history`` (``History.history``), with ``logs``: drop
        ``lr_now`` (a rate has no now estimate), step a per-epoch scheduler
        (``ReduceLROnPlateau`` with ``logs[monitor]``).

        Raises:
            ValueError: ``monitor`` is not among the epoch's logs (the names are listed).
        """
        history.pop(f"{LR}_now", None)
        logs.pop(f"{LR}_now", None)
        if self.plateau:
            if self.monitor not in logs:
                raise ValueError(
                    f"ReduceLROnPlateau monitors {self.monitor!r}, which this epoch did not "
                    f"log. Logged: {sorted(logs)}. Pass monitor= one of them."
                )
            self.scheduler.step(logs[self.monitor])
        elif self.interval == "epoch":
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])


def _check_plateau(scheduler: Any, monitor: str, has_validation: bool) -> None:
    if monitor.startswith("val_") and not has_validation:
        raise ValueError(
            f"ReduceLROnPlateau is driven by monitor={monitor!r}, which needs validation_data. "
            'Pass validation_data=..., or monitor="loss" to follow the training loss.'
        )
    lower = lower_is_better(monitor)
    if lower is not None and (scheduler.mode == "min") != lower:
        wanted = "min" if lower else "max"
        raise ValueError(
            f"ReduceLROnPlateau(mode={scheduler.mode!r}) would reduce the learning rate when "
            f"{monitor} stops {'rising' if scheduler.mode == 'max' else 'falling'}, but lower "
            f"{monitor} is {'better' if lower else 'worse'}. Build it with mode={wanted!r}."
        )


def resolve_schedule(
    scheduler: Any,
    interval: Any,
    monitor: Any,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    has_validation: bool,
    checkpointed: Any,
) -> Schedule | None:
    """The `Schedule` of `fit`'s arguments, or None without ``scheduler``.

    ``checkpointed`` is ``Checkpointing(scheduler=...)``'s: the same object (saved once) or
    None; another scheduler is refused (it would be saved but never stepped by fit).
    """
    if not isinstance(monitor, str):
        raise TypeError(f"Expected `monitor` to be a metric name. Received: {monitor!r}.")
    if scheduler is None:
        return None
    built = build_scheduler(scheduler, optimizer)
    if checkpointed is not None and checkpointed is not built:
        raise ValueError(
            "fit(scheduler=...) and Checkpointing(scheduler=...) name different schedulers. "
            "Pass it to fit only: fit checkpoints the scheduler it steps."
        )
    return Schedule(built, interval, monitor, optimizer, device, has_validation)


Factory = Callable[[torch.optim.Optimizer], Any]

__all__ = ["LR", "Factory", "Schedule", "SchedulerInterval", "build_scheduler", "resolve_schedule"]
