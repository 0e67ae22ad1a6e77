"""What one `fitlens.fit` call sets up before its first step, and what it does per epoch.

`check_arguments` rejects bad arguments before anything is built. `Training` resolves the rest
(loss, metrics, optimizer, data sources, device) and holds the objects the loop drives: the
`TrainStep`, the `Lens`, the run safety (`RunGuard`) and the callbacks. Its two epoch-level
methods keep the loop short: ``begin_epoch`` returns the epoch's batches on the device,
``end_epoch`` runs validation and the ``train_eval`` passes and closes the epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fitlens.adapters.data import ArrayData, BatchSource, to_device, unpack_weighted
from fitlens.adapters.dtypes import Float64Cast, input_dtype
from fitlens.adapters.evaluation import measure_batches, model_device
from fitlens.adapters.losses import LossFn, loss_range, resolve_loss, weighable
from fitlens.adapters.metrics import resolve_metrics
from fitlens.adapters.optimizers import resolve_optimizer
from fitlens.adapters.prefetch import Prefetcher, validate_prefetch
from fitlens.adapters.weights import BatchWeights, check_class_weight
from fitlens.core.estimators import Estimator
from fitlens.core.history import History, check_metric_names
from fitlens.safety.checkpoint import Checkpointing
from fitlens.safety.guard import NonFinitePolicy, Resume, RunGuard
from fitlens.safety.signals import SharedInterrupt
from fitlens.training.callbacks import Callback, CallbackList, RunState
from fitlens.training.distributed import (
    Distributed,
    Strategy,
    check_ddp_timeout,
    check_supported,
    closed_on_error,
    resolve_strategy,
)
from fitlens.training.epoch_truth import EpochTruth, measured
from fitlens.training.reduction import SyncedMetric, loss_to_backward, spread_nonfinite
from fitlens.training.schedules import LR, SchedulerInterval, resolve_schedule
from fitlens.training.step import TrainStep, tensors_to_host
from fitlens.training.update import (
    GRAD_NORM,
    Precision,
    TunedStep,
    Update,
    check_update_options,
    compiled,
    split_grad_norm,
)
from fitlens.view.lens import Lens, now_param
from fitlens.view.progress import Progress
from fitlens.view.tensorboard import TensorBoardWriter, param_group_rates
from fitlens.view.timing import Clock, default_clock


def check_arguments(model: Any, epochs: Any, initial_epoch: Any, history: Any) -> tuple[int, int]:
    """Validate `fit`'s run length; return the 0-based first epoch and the end (exclusive).

    Without ``initial_epoch``, a ``history`` handed back from an earlier call is continued:
    ``epochs`` more epochs, numbered on. With it, as in Keras, epochs ``initial_epoch`` to
    ``epochs - 1`` run.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Expected `epochs` to be an integer >= 1. Received: {epochs!r}.")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"Expected `model` to be a torch.nn.Module. Received: {type(model).__name__}."
        )
    if history is not None and not isinstance(history, History):
        raise TypeError(
            "Expected `history` to be the fitlens.History an earlier fit call returned. "
            f"Received: {type(history).__name__}."
        )
    if initial_epoch is None:
        done = history.epoch[-1] + 1 if history is not None and history.epoch else 0
        return done, done + epochs
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, int):
        raise ValueError(f"Expected `initial_epoch` to be an integer. Received: {initial_epoch!r}.")
    if not 0 <= initial_epoch < epochs:
        raise ValueError(
            f"Expected 0 <= initial_epoch < epochs (as in Keras, epochs initial_epoch to "
            f"epochs - 1 run). Received: initial_epoch={initial_epoch}, epochs={epochs}."
        )
    return initial_epoch, epochs


class Training:
    """The objects of one `fit` call, set up before the first step.

    Takes `fit`'s arguments as they are, and ``end``: the 0-based epoch after the last to run.
    """

    @closed_on_error  # under DDP: a failing set-up tears down the process group fit started
    def __init__(
        self,
        model: torch.nn.Module,
        train: Any,
        *,
        loss: str | LossFn,
        optimizer: str | torch.optim.Optimizer,
        metrics: Sequence[Any] | Mapping[str, Any],
        epochs: int,
        steps_per_epoch: int | None,
        batch_size: int | None,
        shuffle: bool,
        class_weight: Mapping[int, float] | None,
        sample_weight: Any,
        validation_data: Any,
        validation_steps: int | None,
        callbacks: Sequence[Callback],
        verbose: int | Progress,
        tensorboard: str | Path | None,
        device: torch.device | str | None,
        now: str | Estimator,
        train_eval: bool | float | int | None,
        prefetch: int,
        run_dir: str | Path | None,
        resume: Resume,
        checkpointing: Checkpointing | None,
        on_nonfinite: NonFinitePolicy,
        max_skipped: float,
        initial_epoch: int | None,
        history: History | None,
        clock: Clock | None,
        strategy: Strategy,
        ddp_timeout: float,
        end: int,
        precision: Precision = "32",
        accumulate: int = 1,
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
        scheduler: Any = None,
        scheduler_interval: SchedulerInterval = "epoch",
        monitor: str = "val_loss",
        compile: bool | Mapping[str, Any] = False,
    ) -> None:
        clock = clock or default_clock()
        progress = verbose if isinstance(verbose, Progress) else Progress(verbose)
        board = TensorBoardWriter(tensorboard) if tensorboard is not None else None
        check_update_options(precision, accumulate, clip_grad_norm, clip_grad_value, on_nonfinite)
        _, self.loss_fn = resolve_loss(loss)
        metrics, grad_norm = split_grad_norm(metrics)
        self.metrics = resolve_metrics(metrics, reserved=("loss",))
        check_metric_names(m.name for m in self.metrics)
        check_ddp_timeout(ddp_timeout)
        wrapped, self.dist = model, None  # under DDP: the wrapped model runs the step
        self.resume, self.checkpoints = resume, run_dir is not None
        if resolve_strategy(strategy):
            check_supported(on_nonfinite=on_nonfinite, precision=precision)
            self.dist = d = Distributed(model, device, ddp_timeout)
            wrapped, model, device = d.wrapped, d.module, d.device
            if d.rank != 0:  # one voice: the other ranks write nothing, on the same schedule
                progress = Progress(0, refresh_per_second=1.0 / progress.refresh_interval)
                run_dir, resume = None, False  # rank 0 reads the checkpoint and shares it
        self.device = dev = torch.device(device) if device is not None else model_device(model)
        self.model = model.to(dev)
        for m in self.metrics:
            m.to(dev)
        self.optimizer = resolve_optimizer(optimizer, model)
        self.source = BatchSource(
            train,
            name="train",
            steps=steps_per_epoch,
            batch_size=batch_size,
            shuffle=shuffle,
            sample_weight=sample_weight,
        )
        weights = check_class_weight(class_weight)
        if weights is not None or sample_weight is not None:
            weighable(self.loss_fn)  # a user callable's batch mean cannot be weighted
        self.cast = Float64Cast(input_dtype(model), "train")  # float64 inputs: one rule
        self.val_cast = Float64Cast(self.cast.dtype, "validation_data")
        # class weights weigh training and train_eval, not validation (Keras: training only)
        weigh = BatchWeights(weights, dev, self.cast.dtype) if weights is not None else None
        # Before DDP shards the source: the train_eval subset is drawn from all the samples.
        self.truth = EpochTruth(train_eval, self.source, self.loss_fn, self.metrics, dev, weigh)
        if self.dist is not None:
            d = self.dist
            self.truth.distribute(d.rank, d.world, d.sum_sums, d.generators)
            # Weights need nothing more: each rank's loss is sum(w * loss) / n over its equal
            # share n, so DDP's mean of the ranks' gradients is the global batch's, and the
            # reduction weighs the ranks' weighted metric means by their weights.
            d.shard(self.source, batch_size)
        self.val_source = None
        self.val_reduce = None  # under DDP, with validation split across ranks: their sum
        if validation_data is not None:
            self.val_source = BatchSource(
                validation_data, name="validation_data", steps=validation_steps, shuffle=False
            )
            if _weighted_arrays(self.val_source):
                weighable(self.loss_fn)  # (x, y, w) validation arrays need per-sample losses
            if self.dist is not None and self.dist.shard_eval(self.val_source):
                self.val_reduce = self.dist.sum_sums
        self.val_metrics = [m.fresh().to(dev) for m in self.metrics]
        if self.dist is not None:  # torchmetrics merges the ranks' states of split data only
            for metrics, split in ((self.metrics, True), (self.val_metrics, bool(self.val_reduce))):
                for m in metrics:
                    if m.stateful and hasattr(m.fn, "sync_on_compute"):
                        m.fn.sync_on_compute = split
        self.feeder = Prefetcher(prefetch, dev) if validate_prefetch(prefetch) else None
        self.schedule = resolve_schedule(
            scheduler,
            scheduler_interval,
            monitor,
            self.optimizer,
            dev,
            validation_data is not None,
            checkpointing.scheduler if checkpointing is not None else None,
        )
        if self.schedule is not None and "lr" in getattr(checkpointing, "override_on_resume", ()):
            raise ValueError(
                "Checkpointing(override_on_resume=('lr', ...)) cannot be combined with "
                "fit(scheduler=...): the restored scheduler would keep steering the learning "
                "rate from the checkpoint's values. Change the rate through the scheduler instead."
            )
        extra = [GRAD_NORM] * grad_norm + [LR] * (self.schedule is not None)
        names = ["loss"] + [m.name for m in self.metrics] + extra
        data = self.source.iterable
        loader = data if isinstance(data, torch.utils.data.DataLoader) else None
        params = {
            "epochs": end,
            "steps": self.source.steps,
            "batch_size": batch_size,
            "metrics": names,
            "now": now_param(now),
            "device": str(dev),
            "data": "dataloader" if loader else self.source.kind,
            "workers": loader.num_workers if loader else None,
            "prefetch": prefetch,
            "precision": precision,
            "accumulate": accumulate,
            "clip_grad_norm": clip_grad_norm,
            "clip_grad_value": clip_grad_value,
            "scheduler": type(self.schedule.scheduler).__name__ if self.schedule else None,
            "scheduler_interval": self.schedule.interval if self.schedule else None,
        }
        self.lens = _lens(history, progress, now, clock, prefetch)
        self.lens.history.params.update(params)
        ranges = {"loss": loss_range(self.loss_fn), **{m.name: m.range for m in self.metrics}}
        epoch_values: dict[str, Any] = {m.name: m for m in self.metrics if m.stateful}
        if self.dist is not None:  # merged over the ranks at each reduction, on every rank
            epoch_values = {k: SyncedMetric(m) for k, m in epoch_values.items()}
            self.dist.synced = list(epoch_values.values())
        self.lens.set_metrics(
            names, valued=names[: len(names) - len(extra)], epoch_values=epoch_values, ranges=ranges
        )
        self.lens.begin_run(end, self.source.steps)
        if self.dist is not None:
            self.dist.attach(self.lens)
            self.lens.history.params["world_size"] = self.dist.world
        self.history = self.lens.history
        self.run = RunState(
            model, self.optimizer, self.history, self.history.params, lens=self.lens
        )
        self.callbacks = CallbackList(callbacks, self.run)
        # Run directory, checkpoints, resume, SIGINT/SIGTERM and the non-finite policy.
        self.safety = RunGuard(
            run_dir,
            resume=resume,
            checkpointing=checkpointing,
            on_nonfinite=on_nonfinite,
            max_skipped=max_skipped,
            model=model,
            optimizer=self.optimizer,
            history=self.history,
            lens=self.lens,
            source=self.source,
            callbacks=callbacks,
            clock=clock,
            parts={"train_eval": self.truth, **({"ddp": self.dist} if self.dist else {})},
            peers=self.dist,
        )
        self.update = Update(
            model,
            self.optimizer,
            dev,
            precision=precision,
            accumulate=accumulate,
            clip_grad_norm=clip_grad_norm,
            clip_grad_value=clip_grad_value,
            grad_norm=grad_norm,
        )
        tuned = self.update.active or self.schedule is not None
        if tuned:  # the defaults keep the plain step: no extra work per step
            self.safety.parts["update"] = self.update
        if self.schedule is not None:
            self.safety.parts["schedule"] = self.schedule
            self.schedule.reported = self.lens.reported
            self.update.after_step.append(self.schedule.after_optimizer_step)
        if self.dist is not None:  # a signal on any rank stops every rank at the same step
            guard = SharedInterrupt(ddp_timeout, f"rank {self.dist.rank} of {self.dist.world}")
            self.safety.guard = guard
            self.dist.watch(guard, self.safety.time_due, self.checkpoints)
        self.lens.after_refresh.append(self.safety.on_refresh)  # append history; "stop" check
        lens, safety = self.lens, self.safety
        grads = self.update.scaler is None  # a scaler skips overflowing gradients itself
        skips = (
            (lambda loss: safety.skips(lens.step + 1, loss, gradients=grads))
            if on_nonfinite == "skip"
            else None
        )
        step_model = compiled(wrapped, compile)  # under DDP: the wrapped model
        step_args = (step_model, self.loss_fn, self.optimizer, self.metrics, lens, skips, weigh)
        self.step = (
            TunedStep(
                *step_args,
                update=self.update,
                rate=self.schedule.column if self.schedule is not None else None,
            )
            if tuned
            else TrainStep(*step_args)
        )
        if self.dist is not None:  # every rank skips the same steps; an uneven last batch
            spread = spread_nonfinite(model) if skips is not None else None
            self.step.spread = loss_to_backward(spread, self.dist.uneven, lambda: lens.step)
        self.tensorboard = board
        if board is not None:
            optimizer = self.optimizer
            board.attach(lens, lambda: param_group_rates(optimizer))
        self.stop = False
        self.logs: dict[str, float] = {}
        self.first_epoch: int | None = None  # set by fit once the resume point is known

    def share_resume(self, first: int) -> int:
        """Under DDP with ``resume``: every rank restores the checkpoint rank 0's run safety
        read (one broadcast), with its own random states and data position; returns the epoch
        to start at."""
        if self.dist is None or not self.resume:
            return first
        state = self.dist.share_resume(self.safety.pending_resume)
        if state is None:
            return first
        if self.dist.rank == 0:
            self.safety.pending_resume = state
            return first
        return self.safety.adopt(state)

    def begin_epoch(self, epoch: int) -> Iterator[tuple[Any, Any, Any]]:
        """Start 0-based ``epoch``; its ``(x, y, w)`` batches on the device (``w``: the batch's
        sample weights or None), resumed mid-epoch when a checkpoint says so."""
        self.run.epoch = epoch
        self.model.train()
        self.callbacks.epoch_begin(epoch, {})
        self.lens.begin_epoch(epoch)
        note = self.update.describe(self.source.steps) if epoch == self.first_epoch else None
        if note is not None:
            self.lens.progress.write(note)
        if self.schedule is not None:
            self.schedule.show()
        if self.dist is not None:
            self.dist.begin_epoch(epoch)  # a new order per epoch, the same on every rank
        batches, done = self.safety.epoch_batches(epoch)  # done > 0 when resuming mid-epoch
        self.lens.resume_at(done, self.safety.resume_note)
        if self.feeder is not None:  # read ahead in a background thread
            batches = self.feeder.epoch(batches)
        return _on_device(self.truth.watch(batches, epoch, done), self.device, self.cast)

    def end_epoch(self, epoch: int, end: int) -> None:
        """Validate, measure and record 0-based ``epoch`` (``end``: the loop's last + 1); sets
        ``stop`` when training must end here."""
        lens, source, run = self.lens, self.source, self.run
        if lens.step == 0:
            warnings.warn(
                f"`train` yielded no batches in epoch {epoch + 1}; stopping training.",
                stacklevel=3,
            )
            self.stop = True
            return
        self.update.finish()  # gradients of an unfinished accumulation group
        ran_out = source.steps is not None and lens.step < source.steps and not run.stop_training
        if source.steps is None:  # no len(): now we know
            source.steps = lens.steps = self.history.params["steps"] = lens.step
        validation = None
        if self.val_source is not None:
            self.model.eval()
            values = measure_batches(  # means as `evaluate`, plus spreads for intervals
                self.model,
                self.val_source.epoch(),
                "loss",
                self.loss_fn,
                [m.fresh() for m in self.val_metrics],
                self.device,
                name="validation_data",
                cast=self.val_cast,
                reduce=self.val_reduce,
            )
            self.model.train()
            validation = {f"val_{k}": measured(v) for k, v in values.items()}
        train_mode, eval_mode, train_eval_logs = self.truth.passes(self.model)
        self.logs = lens.end_epoch(
            validation,
            train_mode=train_mode,
            eval_mode=eval_mode,
            extra_logs=train_eval_logs,
            last=epoch == end - 1 or ran_out or run.stop_training,
        )
        if self.schedule is not None:  # step a per-epoch schedule, before the checkpoint
            self.schedule.end_epoch(self.logs, self.history.history)
        self.update.end_epoch(self.history.params, self.lens.progress.write)
        self.callbacks.epoch_end(epoch, self.logs)
        self.safety.on_epoch_end(epoch)  # history files, checkpoint
        if ran_out:
            warnings.warn(
                f"`train` ran out of data after {lens.step} of {source.steps} steps in epoch "
                f"{epoch + 1}; stopping training (the history so far is kept). A generator "
                f"must yield steps_per_epoch * epochs = {source.steps * end} batches: "
                "loop over your data inside it (`while True:`).",
                stacklevel=3,
            )
        self.stop = ran_out or run.stop_training

    def close(self) -> None:
        """Stop the read-ahead thread (early stop, Ctrl-C, errors) and close the display."""
        if self.feeder is not None:
            self.feeder.close()
        self.lens.end_run()
        if self.tensorboard is not None:
            self.tensorboard.detach()
        if self.dist is not None:
            self.step.model = self.model  # the DDP wrapper goes before the process group
            self.dist.close(self.lens)
        self.lens.after_refresh.clear()  # the History must not keep the model alive through it
        self.lens.after_epoch.clear()
        self.history.lens = self.lens  # a later fit(..., history=...) continues from here


def _lens(
    history: History | None, progress: Progress, now: str | Estimator, clock: Clock, prefetch: int
) -> Lens:
    """A new lens, or the one that recorded ``history`` (continued with this call's display)."""
    carried = getattr(history, "lens", None)
    if isinstance(carried, Lens):
        carried.progress, carried.clock, carried.prefetch = progress, clock, prefetch
        carried.after_refresh.clear()  # the earlier call's run safety is closed
        carried.after_epoch.clear()
        return carried
    return Lens(
        progress, now, clock=clock, history=history, to_host=tensors_to_host, prefetch=prefetch
    )


def _weighted_arrays(source: BatchSource) -> bool:
    data = source.iterable
    return isinstance(data, ArrayData) and data.w is not None


def _on_device(
    batches: Iterator[Any], device: torch.device, cast: Float64Cast
) -> Iterator[tuple[Any, Any, Any]]:
    cpu = device.type == "cpu"
    for batch in batches:
        if cpu and type(batch) is tuple and len(batch) == 2:  # per step: the common case first
            x, y = batch  # two CPU tensors, none float64: nothing to move or cast
            if (
                type(x) is torch.Tensor
                and type(y) is torch.Tensor
                and x.is_cpu
                and y.is_cpu
                and x.dtype is not torch.float64
                and y.dtype is not torch.float64
            ):
                yield x, y, None
                continue
        x, y, w = unpack_weighted(batch, "train")
        if w is not None:
            w = cast(to_device(w, device))
        yield cast(to_device(x, device)), cast(to_device(y, device)), w


__all__ = ["Training", "check_arguments"]
