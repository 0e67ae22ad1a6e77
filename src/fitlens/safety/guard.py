"""Keeping a run safe: run directory, checkpoints, exact resume, interruptions, non-finite loss.

`fit` drives one `RunGuard` through a handful of calls (``begin``, ``epoch_batches``,
``skips``, ``on_refresh``, ``after_step``, ``on_epoch_end``, ``close``). Everything about
*what* is saved and *when* lives here; `fit` only says where it is.

When checkpoints are written (`fitlens.safety.checkpoint.Checkpointing`): every ``every_steps``
steps and/or every ``every_minutes`` minutes (checked after each step), at every epoch end,
and when SIGINT/SIGTERM arrives. Each costs one host sync (to fold pending metrics and check
them and the parameters) plus the write. Without ``run_dir`` nothing is written and no sync is
added.

Non-finite values (``on_nonfinite``):

* ``"stop"`` (default): no per-step host sync. The batch values are checked when they reach the
  host anyway (display refresh, checkpoint, epoch end), so training stops up to one refresh
  interval (0.1 s by default) after the first non-finite step, with `NonFiniteError` naming the
  epoch, the step and the metric. The parameters are also checked before every checkpoint, so
  NaN weights never become the latest checkpoint: the last good one stays the latest.
  On stopping, the model, the optimizer, the LR schedulers (fit's and `Checkpointing`'s) and
  the fp16 loss scaler (with an unfinished accumulation group's gradients) in memory are put
  back to the latest good checkpoint, so they agree with one another (the error says so, or
  that there was none to restore). The history keeps the failing rows.
* ``"skip"``: the decision must precede ``optimizer.step()``, so after the backward pass the
  loss and every gradient are checked in one fused check read on the host (one sync per step:
  free on CPU, a pipeline stall on a GPU). The step is skipped entirely (no update, no
  optimizer-state change, the buffers the forward pass changed put back, not recorded in the
  history; its position is listed in ``history.params["skipped_batches"]``). More than
  ``max_skipped`` of an epoch's steps skipped, or all of them, stops with `NonFiniteError`. A device-side mask was rejected: zeroing the
  gradients still advances Adam's moments and step count and applies weight decay, so it is not
  a true skip, and keeping a copy of every parameter to roll back doubles the model's memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, NoReturn, Protocol

import numpy as np
import torch

from fitlens.adapters.data import BatchSource
from fitlens.adapters.rng import capture_rng
from fitlens.core.history import History
from fitlens.safety.checkpoint import (
    CheckpointError,
    Checkpointing,
    CheckpointStore,
    UnsafeCheckpointError,
    load_checkpoint,
)
from fitlens.safety.identity import compare, describe
from fitlens.safety.position import DataPosition
from fitlens.safety.run_dir import (
    RunDir,
    RunLock,
    finish_summary,
    prepare_run_dir,
    start_summary,
)
from fitlens.safety.signals import InterruptGuard, TrainingInterrupted
from fitlens.view.lens import Lens
from fitlens.view.progress import format_resume_line
from fitlens.view.timing import Clock

NonFinitePolicy = Literal["stop", "skip"]
_POLICIES = ("stop", "skip")
Resume = bool | Literal["allow_fresh"]
# What every checkpoint `fit` writes holds (besides "lens", checked first for its own message).
# Batch columns that may be non-finite in a sound run: the pre-clip gradient norm is NaN inside
# an accumulation group and inf on an fp16 overflow step (which the GradScaler skips).
_NOT_CHECKED = ("grad_norm",)
#: the parts (fit's `parts`) a non-finite stop puts back with the model: fit's LR schedule and
#: the update (fp16 scaler, accumulation group); not the train_eval subset or DDP's random states
_TRAINING_PARTS = ("schedule", "update")
_REQUIRED = ("position", "model", "optimizer", "params", "history", "rng", "epoch_start")


class Peers(Protocol):
    """The other processes of a data-parallel run, as run safety takes part with them (`fit`
    under DDP, `fitlens.training.distributed.Distributed`). Every process decides the same
    checkpoints and stops at the same steps; the process of rank 0 alone writes.

    Attributes:
        rank: this process's rank (0 writes and speaks).
        checkpoints: whether the run keeps checkpoints (rank 0 was given a ``run_dir``).
    """

    rank: int
    checkpoints: bool

    def take_due(self) -> bool:
        """Whether the processes agreed, at their latest collective, that a time-based
        checkpoint is due (the request is consumed)."""

    def gather_states(self, position: dict[str, Any]) -> None:
        """Every process's random states and data ``position`` (`DataPosition.state_dict`), to
        the next checkpoint (a collective; the stop signal travels with it)."""

    def done(self) -> None:
        """Wait until every process got here (after rank 0 wrote a stop's checkpoint)."""


class NonFiniteError(FloatingPointError):
    """Training stopped because a metric or the parameters became NaN or infinite.

    Attributes:
        epoch: 1-based epoch; step: 1-based step in it (None for parameters found non-finite at
        a checkpoint); metric: the metric's name, or ``"parameters"``; checkpoint: the latest
        good checkpoint's path (None without a run directory).
    """

    def __init__(self, message: str, epoch: int, step: int | None, metric: str, checkpoint: Any):
        super().__init__(message)
        self.epoch, self.step, self.metric, self.checkpoint = epoch, step, metric, checkpoint


class RunGuard:
    """The run directory, checkpoints, resume, interruption and non-finite policy of one `fit`.

    Raises (from the constructor, before training):
        ValueError: invalid ``on_nonfinite``; ``resume=True`` without ``run_dir``; a ``run_dir``
            holding checkpoints of an earlier run while ``resume`` is False.
    """

    def __init__(
        self,
        run_dir: str | Path | None,
        *,
        resume: Resume,
        checkpointing: Checkpointing | None,
        on_nonfinite: NonFinitePolicy,
        model: torch.nn.Module,
        max_skipped: float = 0.1,
        optimizer: torch.optim.Optimizer,
        history: History,
        lens: Lens,
        source: BatchSource,
        callbacks: Sequence[Any],
        clock: Clock,
        parts: Mapping[str, Any] | None = None,
        peers: Peers | None = None,
    ) -> None:
        if on_nonfinite not in _POLICIES:
            raise ValueError(
                f"Expected `on_nonfinite` to be one of {_POLICIES}. Received: {on_nonfinite!r}."
            )
        if not (isinstance(resume, bool) or resume == "allow_fresh"):
            raise ValueError(
                f'Expected `resume` to be False, True or "allow_fresh". Received: {resume!r}.'
            )
        if (
            isinstance(max_skipped, bool)
            or not isinstance(max_skipped, int | float)
            or not 0 <= max_skipped <= 1
        ):
            raise ValueError(
                "Expected `max_skipped` to be a fraction of an epoch's steps in [0, 1]. "
                f"Received: {max_skipped!r}."
            )
        if resume and run_dir is None:
            raise ValueError(
                "`resume=True` needs the `run_dir` of the run to continue: "
                "fit(..., run_dir='runs/my_run', resume=True)."
            )
        if checkpointing is not None and not isinstance(checkpointing, Checkpointing):
            raise TypeError(
                "Expected `checkpointing` to be a fitlens.Checkpointing(...). Received: "
                f"{type(checkpointing).__name__}."
            )
        self.policy = on_nonfinite
        self.max_skipped = float(max_skipped)
        self.config = checkpointing or Checkpointing()
        self.overrides = _override_values(optimizer, self.config.override_on_resume)
        self.model, self.optimizer, self.history = model, optimizer, history
        self.lens, self.source, self.clock = lens, source, clock
        self.callbacks = [cb for cb in callbacks if hasattr(cb, "state_dict")]
        self.parts = dict(parts or {})  # other objects with state_dict/load_state_dict
        self.peers = peers
        self.rundir = None
        if run_dir is not None:  # checked and created now: one clear error, before any step
            self.rundir = RunDir(prepare_run_dir(run_dir, _two_checkpoints(model)))
        self.lock = RunLock(self.rundir.path) if self.rundir is not None else None
        self.store = (
            CheckpointStore(self.rundir.checkpoints, self.config.keep) if self.rundir else None
        )
        if self.store and not resume and self.store.paths():
            raise ValueError(
                f"{run_dir} already holds checkpoints of an earlier run. Pass `resume=True` to "
                "continue it, or choose a new `run_dir`."
            )
        self.resume = resume
        # What the checkpoints belong to, as this call sets the run up (before any restore).
        self.identity = describe(model, optimizer, source, history.params)
        self.position = DataPosition(source)
        self.guard: InterruptGuard = InterruptGuard()
        self.pending_resume: dict[str, Any] | None = None
        self.resumed_from: str | None = None
        self.resume_note: str | None = None  # the resumed epoch's first line, for the lens
        self.last_checkpoint: Path | None = None
        self.saved_at: tuple[int, int] | None = None
        self.taken_at: tuple[int, int] | None = None  # DDP: every rank's last checkpoint
        self.checkpoint_seconds = 0.0
        self.checkpoints_written = 0
        self.checkpoints_failed = 0
        self.saved_step = 0  # global step of the latest checkpoint
        self.global_step = 0
        self.checked_rows = 0
        self.skipped: list[list[int]] = []
        self.started = clock() if self.rundir is not None else 0.0  # no clock read without it
        self.summary: dict[str, Any] = {}

    # -- start -------------------------------------------------------------------------------

    def begin(self, first_epoch: int = 0) -> int:
        """Restore the last good checkpoint when resuming; return the 0-based epoch to start at
        (the checkpoint's, else ``first_epoch``)."""
        if self.lock is not None:
            self.lock.acquire()
        try:
            return self._begin(first_epoch)
        except BaseException:
            if self.lock is not None:
                self.lock.release()
            raise

    def _begin(self, first_epoch: int) -> int:
        start_epoch = first_epoch
        if self.store is not None and self.resume:
            self.store.remove_temporaries()
            found = self.store.resume_from(allow_fresh=self.resume == "allow_fresh")
            if found is not None:
                path, state = found
                start_epoch = self._restore(path, state)
                self.resumed_from = str(path)
                self.last_checkpoint = path
                self.saved_step = self.global_step
        self.checked_rows = len(self.history.batches)
        if self.rundir is not None:
            self.rundir.start(self.history)
            self.summary = self._summary_start()
            self.rundir.write_summary(self.summary)
        self.last_time = self.clock() if self.checkpoints else 0.0
        self.guard.__enter__()
        return start_epoch

    def _restore(self, path: Path, state: dict[str, Any]) -> int:
        if "lens" not in state:  # "recorder": before the estimators moved into the lens
            raise ValueError(
                f"{self.resume_hint()} found a checkpoint written by an earlier fitlens version, "
                "whose estimator state this version cannot read. Finish that run with the "
                "version that started it, or start a new `run_dir`."
            )
        missing = [k for k in _REQUIRED if k not in state]
        if missing:
            raise ValueError(
                f"Cannot resume from {path}: it lacks {missing}, which every checkpoint that "
                "fitlens.fit writes holds; it was written by something else. Start a new "
                '`run_dir`, or resume="allow_fresh" after moving the file away.'
            )
        if "identity" in state:  # checkpoints written before it are resumed as before
            self._compare_identity(path, json.loads(state["identity"]), state["position"])
        saved_params = json.loads(state["params"])
        if saved_params.get("metrics") != self.history.params.get("metrics"):
            raise ValueError(
                f"Cannot resume: the checkpoint tracks metrics {saved_params.get('metrics')}, "
                f"this call tracks {self.history.params.get('metrics')}. Pass the same `metrics`."
            )
        steps, saved_steps = self.source.steps, saved_params.get("steps")
        if steps is not None and saved_steps is not None and steps != saved_steps:
            raise ValueError(
                f"Cannot resume: the checkpoint was taken with {saved_steps} steps per epoch, "
                f"this call has {steps}. Pass the same training data, batch_size and "
                "steps_per_epoch."
            )
        if steps is None and saved_steps is not None:
            self.source.steps = self.history.params["steps"] = saved_steps
        self._load_training(state, self.parts)
        self._apply_overrides(path)
        for cb, cb_state in zip(self.callbacks, state["callbacks"], strict=False):
            cb.load_state_dict(cb_state)
        self.history.load_state_dict(state["history"])
        self.skipped = [list(s) for s in state["skipped"]]
        self.history.params["skipped_batches"] = self.skipped
        pos = state["position"]
        self.global_step = int(pos["global_step"])
        self.pending_resume = state
        return int(pos["epoch"])

    def adopt(self, state: dict[str, Any]) -> int:
        """On a process other than rank 0 of a data-parallel run: restore the checkpoint rank 0
        read and shared (this rank's random states and data position in it), as `begin`
        restores its own; returns the 0-based epoch to start at. Rank 0 compared it with this
        run already."""
        start = self._restore(Path("<the checkpoint rank 0 read>"), _without(state, "identity"))
        self.saved_step = self.global_step
        self.checked_rows = len(self.history.batches)
        return start

    def _load_training(self, state: dict[str, Any], parts: Iterable[str]) -> None:
        """Put the model, the optimizer, `Checkpointing`'s scheduler and the ``parts`` named
        (fit's LR schedule, the update's fp16 scaler and unfinished accumulation group) back to
        a checkpoint's ``state``, so that they agree with each other."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.config.scheduler is not None and state["scheduler"] is not None:
            self.config.scheduler.load_state_dict(state["scheduler"])
        saved = state.get("parts", {})
        for name in parts:
            if name in self.parts and name in saved:
                self.parts[name].load_state_dict(saved[name])

    def _restored_words(self) -> str:
        """What a non-finite stop puts back, in words: ``model and optimizer``, with the LR
        scheduler and the fp16 loss scaler when the run has them."""
        update = self.parts.get("update")
        names = ["model", "optimizer"]
        if self.config.scheduler is not None or "schedule" in self.parts:
            names.append("LR scheduler")
        if getattr(update, "scaler", None) is not None:
            names.append("loss scaler")
        return ", ".join(names[:-1]) + " and " + names[-1]

    def _compare_identity(self, path: Path, saved: dict[str, Any], position: Any) -> None:
        """One error listing every difference that makes the resume wrong; a warning for those
        where continuing is sound. Afterwards the run keeps the identity it began with."""
        keys = self.config.override_on_resume
        errors, notes = compare(
            saved, self.identity, (position["epoch"], position["step"]), overridden=keys
        )
        if errors:
            listing = "".join(f"\n  - {e}" for e in errors)
            raise ValueError(
                f"Cannot resume from {path}: this call differs from the run that wrote it:"
                f"{listing}\nPass the same model, optimizer (class and settings), training data, "
                "metrics and enough epochs, or start a new `run_dir`. To change the learning "
                "rate (or another optimizer hyper-parameter) of the resumed run on purpose, pass "
                "checkpointing=fitlens.Checkpointing(override_on_resume=('lr',))."
            )
        if notes:
            warnings.warn(
                f"Resuming from {path} with: " + "; ".join(notes) + ".",
                RuntimeWarning,
                stacklevel=4,
            )
        groups = [dict(g) for g in saved["hyperparameters"]]
        for group, mine in zip(groups, self.identity["hyperparameters"], strict=False):
            group.update({k: mine[k] for k in keys if k in mine})  # the run's new settings
        self.identity = {
            **saved,
            "hyperparameters": groups,
            "epochs": self.identity["epochs"],
            "fitlens": self.identity["fitlens"],
        }

    def _apply_overrides(self, path: Path) -> None:
        """Put this call's values of ``override_on_resume`` over the restored optimizer's,
        naming each value that changes in one warning."""
        changed = []
        for i, (group, values) in enumerate(
            zip(self.optimizer.param_groups, self.overrides, strict=True)
        ):
            for key, value in values.items():
                restored = group[key]
                if not _same_value(restored, value):
                    changed.append(
                        f"optimizer hyper-parameter {key!r} (group {i}): {_shown(value)} as this "
                        f"call sets it, instead of the checkpoint's {_shown(restored)}"
                    )
                group[key] = value
        if changed:
            warnings.warn(
                f"Resuming from {path} with override_on_resume: " + "; ".join(changed) + ".",
                RuntimeWarning,
                stacklevel=5,
            )

    # -- per epoch and per step -------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> tuple[Iterator[Any], int]:
        """This epoch's batch iterator and the number of its steps already done (resume)."""
        state = self.pending_resume
        self.pending_resume = None
        self.resume_note = None
        if state is not None:
            step = int(state["position"]["step"])
            self.lens.load_state_dict(state["lens"], epoch_means=step > 0)
            started = self.clock()
            batches = self.position.resume_epoch(state["epoch_start"], epoch, step, state["rng"])
            skipped = step + (
                0 if self.source.restarts_each_epoch else epoch * (self.source.steps or 0)
            )
            self.resume_note = format_resume_line(
                str(self.resumed_from),
                epoch + 1,
                step,
                _written(self.resumed_from),
                skipped,
                self.clock() - started,
            )
            return batches, step
        self.position.begin_epoch()
        return self.source.epoch(), 0

    def skips(self, step: int, loss: torch.Tensor, gradients: bool = True) -> bool:
        """True when ``on_nonfinite="skip"`` and this step's loss or a gradient is not finite
        (1-based step; called after the backward pass; ``gradients=False``: the loss only, for
        fp16 scaled gradients, whose overflow the ``GradScaler`` skips itself).

        Raises:
            NonFiniteError: the epoch's skipped steps exceed ``max_skipped`` of its steps.
        """
        if self.policy != "skip":
            return False
        # A NaN or inf anywhere makes its tensor's sum non-finite, so one value per gradient
        # suffices (4x cheaper than an isfinite per tensor); a finite gradient whose sum
        # overflows float32 (above 3e38) counts as non-finite too.
        grads = [p.grad for p in self.model.parameters() if gradients and p.grad is not None]
        sums = [g.sum() for g in grads]
        if bool(torch.isfinite(torch.stack([loss.detach().reshape(()), *sums])).all()):
            return False  # the one host sync per step of "skip"
        epoch = self.lens.epoch + 1
        self.skipped.append([epoch, step])
        self.history.params["skipped_batches"] = self.skipped
        self.optimizer.zero_grad(set_to_none=True)
        what = "loss" if not math.isfinite(loss.item()) else "gradient"
        self._check_skipped(epoch, self.source.steps, what, step)
        return True

    def _check_skipped(self, epoch: int, steps: int | None, what: str, step: int | None) -> None:
        """Stop when 1-based ``epoch`` skipped more than ``max_skipped`` of its ``steps`` (or
        all of them), as far as they are known."""
        n = sum(1 for e, _ in self.skipped if e == epoch)
        if not steps or (n <= self.max_skipped * steps and n < steps):
            return
        raise NonFiniteError(
            f"{n} of the {steps} steps of epoch {epoch} were skipped for a non-finite "
            f"{what}, more than max_skipped={self.max_skipped:g} of an epoch allows; training "
            f'stopped (on_nonfinite="skip"). Skipped: {self.skipped}. {self._last_good()}',
            epoch,
            step,
            what,
            self.last_checkpoint,
        )

    def on_refresh(self) -> None:
        """After a display refresh (the lens was just flushed): check values, append history."""
        self._check_rows()
        if self.rundir is not None:
            self.rundir.append(self.history)

    def after_step(self, step: int) -> None:
        """Checkpoint when one is due; stop here if SIGINT/SIGTERM arrived."""
        self.global_step += 1
        # Without a run_dir there is nothing to write: not even the clock is read. Under DDP
        # the clock is read at refreshes only, and the ranks agree on it there.
        if self.checkpoints:
            every = self.config.every_steps
            last_step = self.source.steps is not None and step >= self.source.steps
            due = (every and self.global_step % every == 0) or (
                self.peers.take_due() if self.peers is not None else self.time_due()
            )
            if due and not last_step:  # the epoch-end checkpoint follows right after validation
                self.checkpoint(self.lens.epoch, step)
        if self.guard.received:
            self._interrupt(self.lens.epoch, step)

    @property
    def checkpoints(self) -> bool:
        """Whether this process takes part in checkpoints: it writes them, or (DDP) rank 0 does."""
        return self.store is not None or (self.peers is not None and self.peers.checkpoints)

    def time_due(self) -> bool:
        """Whether ``every_minutes`` have passed since the latest checkpoint (reads the clock)."""
        minutes = self.config.every_minutes
        return bool(self.checkpoints and minutes) and (
            self.clock() - self.last_time >= 60.0 * minutes  # type: ignore[operator]
        )

    def on_epoch_end(self, epoch: int) -> None:
        """After the epoch is recorded: append history, checkpoint the start of the next epoch."""
        if self.policy == "skip":  # steps may only be known now (data without a length)
            self._check_skipped(epoch + 1, self.lens.step, "loss or gradient", None)
        if self.rundir is not None:
            self.rundir.append(self.history)
        self._check_rows()  # the loop flushed at epoch end: the last steps are on the host
        self.checkpoint(epoch + 1, 0)
        if self.guard.received:
            self._interrupt(epoch + 1, 0)

    # -- checkpoints --------------------------------------------------------------------------

    def checkpoint(self, epoch: int, step: int) -> Path | None:
        """Save the position *after* ``step`` steps of 0-based ``epoch``; None if not written
        (under DDP: by this rank, which then only takes part)."""
        if not self.checkpoints:  # no run_dir: nothing to write, so no extra host sync either
            return None
        self.lens.flush()
        self._check_rows()
        if not _parameters_finite(self.model):
            raise NonFiniteError(
                f"The model's parameters or buffers became NaN or infinite in epoch "
                f"{self.lens.epoch + 1} (found before writing a checkpoint). {self._last_good()}",
                self.lens.epoch + 1,
                None,
                "parameters",
                self.last_checkpoint,
            )
        if self.peers is not None:  # every rank's random states and position, to rank 0
            self.peers.gather_states(self.position.state_dict())
            self.taken_at = (epoch, step)  # the same on every rank, written or not
        self.last_time = self.clock()
        if self.store is None:  # DDP: rank 0 writes it
            self.saved_at, self.saved_step = (epoch, step), self.global_step
            return None
        started = self.clock()
        try:
            path = self.store.save(self._state(epoch, step))
        except OSError as e:
            self.checkpoints_failed += 1
            warnings.warn(
                f"Could not write a checkpoint to {self.store.directory}: {e}. Training goes "
                f"on; the latest good checkpoint is still {self.last_checkpoint} "
                f"({self.global_step - self.saved_step} steps old).",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        if self.checkpoints_written == 0:
            try:  # once per run: prove the state loads back with weights_only=True
                load_checkpoint(path)
            except UnsafeCheckpointError as e:
                path.unlink(missing_ok=True)
                raise TypeError(
                    "The optimizer, scheduler or a callback's state holds objects other than "
                    "tensors and plain containers, so it could not be loaded safely. "
                    f"{e}"
                ) from e
        self.checkpoint_seconds += self.clock() - started
        self.checkpoints_written += 1
        self.last_checkpoint, self.saved_at = path, (epoch, step)
        self.saved_step = self.global_step
        return path

    def _state(self, epoch: int, step: int) -> dict[str, Any]:
        sched = self.config.scheduler
        return {
            "format": 1,
            "position": {"epoch": epoch, "step": step, "global_step": self.global_step},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None,
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "parts": {name: part.state_dict() for name, part in self.parts.items()},
            "lens": self.lens.state_dict(),
            "history": self.history.state_dict(),
            "params": json.dumps(self.history.params, default=str),
            "identity": json.dumps(self.identity),
            "skipped": self.skipped,
            "rng": capture_rng(),
            "epoch_start": self.position.state_dict(),
        }

    # -- stopping -----------------------------------------------------------------------------

    def _check_rows(self) -> None:
        batches = self.history.batches
        n = len(batches)
        if self.policy != "stop" or n <= self.checked_rows:
            return
        first: tuple[int, str] | None = None
        for name in batches.metric_names:
            if name in _NOT_CHECKED:
                continue
            rows = batches[name][self.checked_rows : n]
            if math.isfinite(rows.sum()):  # one reduction per refresh when all is well
                continue  # (a finite sum has no NaN or inf in it; an overflow looks below)
            bad = np.flatnonzero(~np.isfinite(rows))
            if bad.size and (first is None or bad[0] < first[0]):
                first = (int(bad[0]), name)
        if first is None:
            self.checked_rows = n
            return
        row = self.checked_rows + first[0]
        self.checked_rows = n
        epoch, step = int(batches["epoch"][row]), int(batches["step"][row])
        value = float(batches[first[1]][row])
        raise NonFiniteError(
            f"`{first[1]}` became {value} at epoch {epoch}, step {step}; training stopped "
            f'(on_nonfinite="stop"). {self._last_good()}',
            epoch,
            step,
            first[1],
            self.last_checkpoint,
        )

    def _last_good(self) -> str:
        """Put the model and optimizer in memory back to the latest good checkpoint, if any;
        say which, or that the model in memory still holds the non-finite state."""
        if self.last_checkpoint is None:
            why = "pass `run_dir=` to keep some" if self.store is None else "none was due yet"
            return (
                f"No checkpoint was written before it ({why}), so the model in memory was NOT "
                "restored: it holds the weights of the failing step."
            )
        try:
            state = load_checkpoint(self.last_checkpoint)
            self._load_training(state, _TRAINING_PARTS)
            restored = f"The {self._restored_words()} in memory were restored to it."
        except (CheckpointError, OSError, RuntimeError) as e:
            restored = f"The model in memory was NOT restored (reading it failed: {e})."
        return (
            f"The latest good checkpoint, {self.last_checkpoint}, is kept. {restored} Lower the "
            f"learning rate or clip gradients, then resume with {self.resume_hint()}."
        )

    def resume_hint(self) -> str:
        """The call that resumes this run."""
        assert self.rundir is not None
        return f"fit(..., run_dir={str(self.rundir.path)!r}, resume=True)"

    def _interrupt(self, epoch: int, step: int) -> NoReturn:
        name = self.guard.received or "SIGINT"
        path = self.last_checkpoint
        taken = self.taken_at if self.peers is not None else self.saved_at
        if self.checkpoints and taken != (epoch, step):
            path = self.checkpoint(epoch, step) or path
        where = f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
        if self.peers is not None:
            self.peers.done()  # no rank ends before rank 0 wrote the checkpoint
            if self.peers.rank != 0:  # one voice: rank 0 says where and how to resume
                raise TrainingInterrupted(f"{name} received; stopped at {where}", name, None, "")
        if self.rundir is None:
            message = (
                f"fitlens: {name} received; stopped at {where}. Nothing was saved: pass "
                "`run_dir=` to keep checkpoints that a run can resume from."
            )
            hint = ""
        else:
            hint = self.resume_hint()
            command = " ".join([Path(sys.executable).name, *sys.argv])
            if self.peers is not None:  # the workers' command line is not the one to rerun
                command = f"torchrun ... {' '.join(sys.argv)}"
            again = (
                f"run `{command}` again: it passes resume=True"
                if self.resume
                else f"run `{command}` again with resume=True added to its fit call"
            )
            message = (
                f"fitlens: {name} received; stopped at {where}. Checkpoint: {path}.\n"
                f"Resume with {hint}\n(e.g. {again})."
            )
        print(message, file=sys.stderr, flush=True)
        # The message is printed once, above; the traceback of an uncaught stop only names it.
        raise TrainingInterrupted(f"{name} received (see the message above)", name, path, hint)

    def close(self, error: BaseException | None) -> None:
        """Restore signal handlers, append the last history rows and write the summary."""
        self.guard.__exit__(None, None, None)
        if self.rundir is None:
            return
        # The device may be in an error state; the history flushed so far stands.
        with contextlib.suppress(Exception):
            self.lens.flush()
        self.rundir.append(self.history)
        self.rundir.close()
        if self.lock is not None:
            self.lock.release()
        old = self.global_step - self.saved_step
        if self.checkpoints_failed:
            print(
                f"fitlens: {self.checkpoints_failed} checkpoint write(s) failed this session; "
                f"the latest checkpoint, {self.last_checkpoint}, is {old} steps old.",
                file=sys.stderr,
                flush=True,
            )
        status = "completed"
        if isinstance(error, KeyboardInterrupt):  # a second Ctrl-C's plain one included
            status = "interrupted"
        elif isinstance(error, NonFiniteError):
            status = "nonfinite"
        elif error is not None:
            status = "failed"
        extra = {
            "session_seconds": self.clock() - self.started,
            "checkpoints": {
                "written_this_session": self.checkpoints_written,
                "failed_this_session": self.checkpoints_failed,
                "steps_since_latest": old,
                "seconds_this_session": self.checkpoint_seconds,
                "latest": str(self.last_checkpoint) if self.last_checkpoint else None,
            },
            "skipped_batches": self.skipped,
        }
        if "overflow_skipped_steps" in self.history.params:  # precision="16-mixed"
            extra["overflow_skipped_steps"] = self.history.params["overflow_skipped_steps"]
        self.rundir.write_summary(finish_summary(self.summary, self.history, status, error, extra))

    def _summary_start(self) -> dict[str, Any]:
        c = self.config
        settings = {
            "on_nonfinite": self.policy,
            "checkpointing": {
                "every_steps": c.every_steps,
                "every_minutes": c.every_minutes,
                "keep": c.keep,
                "scheduler": type(c.scheduler).__name__ if c.scheduler is not None else None,
                "override_on_resume": list(c.override_on_resume),
            },
        }
        return start_summary(
            self.history,
            self.model,
            self.optimizer,
            settings,
            self.resumed_from,
            {"torch": torch.__version__},
        )


def _parameters_finite(model: torch.nn.Module) -> bool:
    tensors = [*model.parameters(), *model.buffers()]
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True  # one host sync


def _override_values(optimizer: torch.optim.Optimizer, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Each parameter group's values of ``keys`` as this call built them (copied: the restore
    replaces the groups' values), or a clear error for a key the optimizer does not have."""
    missing = [k for k in keys if any(k not in g for g in optimizer.param_groups)]
    if missing:
        known = sorted({k for g in optimizer.param_groups for k in g if k != "params"})
        raise ValueError(
            f"Checkpointing(override_on_resume=...) names {missing}, which "
            f"{type(optimizer).__name__}'s parameter groups do not hold. Its hyper-parameters "
            f"are {known}."
        )
    return [
        {k: g[k].clone() if isinstance(g[k], torch.Tensor) else g[k] for k in keys}
        for g in optimizer.param_groups
    ]


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))
    return bool(a == b)


def _shown(value: Any) -> str:
    return repr(value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value)


def _two_checkpoints(model: torch.nn.Module) -> int:
    """Bytes two checkpoints need, estimated before the optimizer has any state: the model's
    state plus two optimizer tensors per parameter (Adam's moments; most optimizers keep at
    most that), twice."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return 2 * (state + 2 * params)


def _written(path: str | None) -> str:
    """When a checkpoint file was written (its modification time, UTC), or ``"?"``."""
    try:
        stamp = Path(path).stat().st_mtime if path else None
    except OSError:
        stamp = None
    if stamp is None:
        return "?"
    return datetime.fromtimestamp(stamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _without(state: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != key}
