"""`fit`: a Keras-like training loop for PyTorch models with a truthful progress display.

What each figure is:

* ``loss`` / ``accuracy`` / ... (the *mean*): the sample-weighted running mean over the epoch so
  far, exactly what Keras shows. It lags the model, which improves during the epoch.
* ``loss_now`` / ... (the *now* estimate): computed from the most recent batches across epoch
  boundaries by a lag-reducing estimator (``now=``); it tracks what the model does at this step.
* ``val_*``: the model as it is at epoch end, in eval mode, under ``torch.no_grad()``.

Host synchronisation: per step, metric values stay on the device. They reach the host when the
display refreshes (at most ``refresh_per_second`` times a second) and at epoch end. Step times
are host times: on CUDA they measure how long the host took to queue the step, and the true
cost shows up as data wait or at the next sync.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fitlens.adapters.data import BatchSource, batch_size_of, to_device, unpack
from fitlens.adapters.evaluation import forward, measure_batches, model_device
from fitlens.adapters.losses import LossFn, check_first_batch, resolve_loss
from fitlens.adapters.metrics import configure_from_outputs, resolve_metrics
from fitlens.adapters.optimizers import resolve_optimizer
from fitlens.adapters.prefetch import Prefetcher, validate_prefetch
from fitlens.core.estimators import DEFAULT_NOW, Estimator
from fitlens.core.history import History
from fitlens.safety.checkpoint import Checkpointing
from fitlens.safety.guard import NonFinitePolicy, RunKeeper
from fitlens.training.callbacks import Callback, CallbackList, LazyLogs, RunState
from fitlens.training.epoch_truth import EpochTruth
from fitlens.view.data_wait import DataWaitHint
from fitlens.view.progress import Progress, ProgressState
from fitlens.view.recorder import Recorder
from fitlens.view.timing import Clock, StepTimer, default_clock, run_remaining


def fit(
    model: torch.nn.Module,
    train: Any,
    *,
    loss: str | LossFn,
    optimizer: str | torch.optim.Optimizer,
    metrics: Sequence[Any] | Mapping[str, Any] = (),
    epochs: int = 1,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    validation_data: Any = None,
    validation_steps: int | None = None,
    callbacks: Sequence[Callback] = (),
    verbose: int | Progress = 1,
    device: torch.device | str | None = None,
    now: str | Estimator = DEFAULT_NOW,
    train_eval: bool | float | int | None = None,
    prefetch: int = 0,
    run_dir: str | Path | None = None,
    resume: bool = False,
    checkpointing: Checkpointing | None = None,
    on_nonfinite: NonFinitePolicy = "stop",
    clock: Clock | None = None,
) -> History:
    """Train ``model`` on ``train`` and return its `History`, showing mean *and* now per metric.

    Args:
        model: a ``torch.nn.Module``; called as ``model(x)``, ``model(*x)`` for a tuple or
            ``model(**x)`` for a dict.
        train: a generator/iterator of ``(x, y)`` batches (needs ``steps_per_epoch``; continues
            across epochs), a re-iterable such as a ``DataLoader`` or a list of batches, or a
            tuple ``(x, y)`` of tensors/arrays with ``batch_size`` (shuffled every epoch).
        loss: ``"cross_entropy"``, ``"binary_cross_entropy"`` (from logits), ``"mse"``,
            ``"mae"``, or a callable ``(outputs, targets) -> scalar tensor``.
        optimizer: a ``torch.optim.Optimizer`` or a name (``"adam"``, ``"sgd"``, ...) with
            Keras's default learning rate.
        metrics: a list (``["accuracy", my_fn]``) or a dict ``{name: metric}``: ``"accuracy"``,
            callables ``(outputs, targets) -> tensor`` (batch mean), torchmetrics metrics.
        epochs: number of epochs (>= 1).
        steps_per_epoch: batches per epoch; required for a generator.
        batch_size: batch size for array data (default 32).
        validation_data: same forms as ``train``; evaluated at every epoch end.
        validation_steps: batches per validation pass; required for a generator.
        callbacks: `Callback` instances.
        verbose: 0, 1 or 2, or a configured `Progress`.
        device: where to train; default: where the model's parameters are.
        now: the now estimator: ``"ema_trend"`` (default: `EMATrend` with 800 samples of memory,
            tuned on ``benchmarks/now_estimate.py``), ``"trend"``, ``"ema"``, ``"window"``,
            ``"last"`` or a configured `Estimator`.
        train_eval: at every epoch end, also evaluate the current model on training data, in
            train mode and in eval mode, without side effects (see `fitlens.adapters.train_eval`):
            ``True`` for all of it, a fraction in (0, 1] or a sample count for a fixed random
            subset drawn once per run. Adds ``train_eval_*`` keys to ``history.history`` and
            turns the gap line from estimated into measured (see `fitlens.core.gap`).
        prefetch: read this many batches ahead in a background thread (on CUDA: pinned
            memory and a side-stream copy) while the model computes; 0 (default) reads them
            in the loop. Helps when making a batch releases the GIL (I/O, numpy, decoding).
        run_dir: a directory for the history files, checkpoints and a summary (see
            `fitlens.safety.run_dir`); nothing is written without it.
        resume: continue the run in ``run_dir`` from its last good checkpoint, mid-epoch
            included (starts afresh when there is none yet).
        checkpointing: a `Checkpointing` (when to write checkpoints; an LR scheduler to keep);
            default: every 10 minutes and at every epoch end.
        on_nonfinite: ``"stop"`` (raise `NonFiniteError`) or ``"skip"`` the batch (one host
            sync per step); see `fitlens.safety.guard`.
        clock: seconds as a float; ``time.perf_counter`` unless injected (tests).

    Returns:
        A `History`: ``history.history`` per epoch, ``history.batches`` per batch.

    Example:
        >>> import torch, fitlens
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(4, 3)
        >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> h = fitlens.fit(model, (x, y), loss="cross_entropy", optimizer="sgd",
        ...                 metrics=["accuracy"], epochs=2, batch_size=16, verbose=0)
        >>> sorted(h.history), len(h.batches)
        (['accuracy', 'accuracy_now', 'loss', 'loss_now'], 8)

    Raises:
        ValueError / TypeError: before the first step, for invalid arguments; on the first
            batch, for outputs and targets that the loss cannot pair (both shapes are named).
        TrainingInterrupted: (a KeyboardInterrupt) on SIGINT/SIGTERM, after the current step
            and a checkpoint.
        NonFiniteError: with ``on_nonfinite="stop"``, when a metric or the weights become
            NaN or infinite.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Expected `epochs` to be an integer >= 1. Received: {epochs!r}.")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"Expected `model` to be a torch.nn.Module. Received: {type(model).__name__}."
        )
    progress = verbose if isinstance(verbose, Progress) else Progress(verbose)
    _, loss_fn = resolve_loss(loss)
    tracked = resolve_metrics(metrics, reserved=("loss",))
    dev = torch.device(device) if device is not None else model_device(model)
    model.to(dev)
    for m in tracked:
        m.to(dev)
    opt = resolve_optimizer(optimizer, model)
    source = BatchSource(train, name="train", steps=steps_per_epoch, batch_size=batch_size)
    val_source = None
    if validation_data is not None:
        val_source = BatchSource(
            validation_data, name="validation_data", steps=validation_steps, shuffle=False
        )
    val_metrics = [m.fresh().to(dev) for m in tracked]
    names = ["loss"] + [m.name for m in tracked]
    clock = clock or default_clock()
    truth = EpochTruth(train_eval, source, loss_fn, tracked, dev)  # gap lines, forecasts
    feeder = Prefetcher(prefetch, dev) if validate_prefetch(prefetch) else None
    data_hint = DataWaitHint()

    history = History(
        names,
        params={
            "epochs": epochs,
            "steps": source.steps,
            "batch_size": batch_size,
            "metrics": names,
            "now": repr(now),
            "device": str(dev),
            "data": source.kind,
            "prefetch": prefetch,
        },
    )
    recorder = Recorder(names, now, history.batches, [m for m in tracked if m.stateful])
    run = RunState(model=model, optimizer=opt, history=history, params=history.params)
    cbs = CallbackList(callbacks, run)
    timer = StepTimer()
    eval_seconds = math.nan
    logs: dict[str, float] = {}
    # Run directory, checkpoints, resume, SIGINT/SIGTERM and the non-finite policy: fitlens.safety.guard.
    keeper = RunKeeper(
        run_dir,
        resume=resume,
        checkpointing=checkpointing,
        on_nonfinite=on_nonfinite,
        model=model,
        optimizer=opt,
        history=history,
        recorder=recorder,
        source=source,
        callbacks=callbacks,
        clock=clock,
        parts={"train_eval": truth},
    )
    start_epoch = keeper.begin()
    first_batch = True
    skip_nonfinite = on_nonfinite == "skip"

    cbs.train_begin({})
    try:
        for epoch in range(start_epoch, epochs):
            run.epoch, run.step = epoch, 0
            model.train()
            recorder.begin_epoch(epoch + 1)
            cbs.epoch_begin(epoch, {})
            progress.begin_epoch(epoch + 1, epochs, source.steps)
            epoch_start = last_refresh = clock()
            next_refresh = epoch_start + progress.refresh_interval
            line_every = progress.line_every
            batches, step = keeper.epoch_batches(epoch)  # step > 0 when resuming mid-epoch
            refreshed_step = step

            if feeder is not None:  # read ahead in a background thread
                batches = feeder.epoch(batches)
            batches = truth.watch(batches, epoch, step)  # keeps a sample if data can't be indexed
            t0 = epoch_start
            for batch in batches:
                x, y = unpack(batch, "train")
                x, y = to_device(x, dev), to_device(y, dev)
                t1 = clock()
                for cb in cbs.batch_begin:
                    cb.on_batch_begin(step, {})
                outputs = _first_forward(model, x) if first_batch else forward(model, x)
                if first_batch:
                    loss_value = _first_loss(loss_fn, outputs, y)
                    configure_from_outputs(tracked, outputs)
                    first_batch = False
                else:
                    loss_value = loss_fn(outputs, y)
                opt.zero_grad(set_to_none=True)
                loss_value.backward()
                skipped = skip_nonfinite and keeper.skips(step + 1, loss_value)  # 1 sync/step
                if not skipped:
                    opt.step()
                detached = outputs.detach() if isinstance(outputs, torch.Tensor) else outputs
                values = [loss_value.detach()] + [m.batch(detached, y) for m in tracked]
                t2 = clock()
                if not skipped:
                    recorder.record(values, batch_size_of(y), t2 - t1, t1 - t0)
                step += 1
                run.step = step
                for cb in cbs.batch_end:
                    cb.on_batch_end(step, LazyLogs(recorder.logs))
                if t2 >= next_refresh or step == 1 or (line_every and step % line_every == 0):
                    recorder.flush()
                    timer.observe(step - refreshed_step, t2 - last_refresh)
                    progress.refresh(
                        _state(
                            epoch,
                            epochs,
                            step,
                            source.steps,
                            t2 - epoch_start,
                            timer,
                            eval_seconds,
                            val_source is not None,
                            recorder,
                        )
                    )
                    last_refresh, refreshed_step = t2, step
                    next_refresh = t2 + progress.refresh_interval
                    if truth.forecast is not None:  # did the epoch-start jump come as forecast?
                        _write(progress, truth.check(history.batches, recorder.steps_flushed))
                    keeper.on_refresh()  # append history; on_nonfinite="stop" check
                keeper.after_step(step)  # checkpoint when due; stop on SIGINT/SIGTERM
                if run.stop_training:
                    break
                t0 = clock()

            if step == 0:
                warnings.warn(
                    f"`train` yielded no batches in epoch {epoch + 1}; stopping training.",
                    stacklevel=2,
                )
                break
            recorder.flush()
            if truth.forecast is not None:
                _write(progress, truth.check(history.batches, recorder.steps_flushed))
            train_end = clock()
            timer.observe(step - refreshed_step, train_end - last_refresh)
            ran_out = source.steps is not None and step < source.steps and not run.stop_training
            if source.steps is None:
                source.steps = history.params["steps"] = step  # no len(): now we know

            logs = recorder.logs()
            val_logs: dict[str, float] = {}
            val_values = None
            if val_source is not None:
                model.eval()
                val_values = measure_batches(  # means as `evaluate`, plus spreads for intervals
                    model,
                    val_source.epoch(),
                    "loss",
                    loss_fn,
                    [m.fresh() for m in val_metrics],
                    dev,
                    name="validation_data",
                )
                model.train()
                val_logs = {f"val_{k}": v.mean for k, v in val_values.items()}
                logs.update(val_logs)
            last_epoch = epoch == epochs - 1 or ran_out or run.stop_training
            truth_end = truth.end_epoch(epoch, model, recorder, val_values, last_epoch)
            logs.update(truth_end.logs)
            history.gaps.append(truth_end.gaps)
            end = clock()
            eval_seconds = end - train_end
            epoch_timing = {
                "time": end - epoch_start,
                "data_wait": recorder.data_time,
                "compute": recorder.step_time,
                "eval": eval_seconds,
            }
            history.record_epoch(epoch, logs, epoch_timing)
            final = _state(
                epoch,
                epochs,
                step,
                source.steps,
                end - epoch_start,
                timer,
                eval_seconds,
                val_source is not None,
                recorder,
                val_logs,
            )
            progress.end_epoch(final)
            for line in truth_end.lines:
                progress.write(line)
            hint = data_hint.check(epoch, epoch_timing, prefetch)
            if hint:  # data wait > 30% of the epoch: said once per run
                progress.write(hint)
            cbs.epoch_end(epoch, logs)
            keeper.on_epoch_end(epoch)  # history files, checkpoint
            if ran_out:
                warnings.warn(
                    f"`train` ran out of data after {step} of {source.steps} steps in epoch "
                    f"{epoch + 1}; stopping training (the history so far is kept). A generator "
                    f"must yield steps_per_epoch * epochs = {source.steps * epochs} batches: "
                    "loop over your data inside it (`while True:`).",
                    stacklevel=2,
                )
                break
            if run.stop_training:
                break
    except BaseException as e:
        keeper.close(e)  # the summary records why the run ended
        raise
    finally:
        if feeder is not None:
            feeder.close()  # early stop, Ctrl-C, errors: stop the reading thread
        progress.close()
    keeper.close(None)
    cbs.train_end(logs)
    return history


def _state(
    epoch: int,
    epochs: int,
    step: int,
    steps: int | None,
    elapsed: float,
    timer: StepTimer,
    eval_seconds: float,
    validates: bool,
    recorder: Recorder,
    validation: Mapping[str, float] | None = None,
) -> ProgressState:
    """The display's snapshot after ``step`` steps of 0-based ``epoch`` (recorder flushed)."""
    left = None if steps is None else steps - step
    return ProgressState(
        epoch=epoch + 1,
        epochs=epochs,
        step=step,
        steps=steps,
        elapsed=elapsed,
        eta_epoch=math.nan if left is None else timer.remaining(left),
        eta_run=run_remaining(
            timer,
            steps_left_in_epoch=left,
            epochs_left_after=epochs - epoch - 1,
            steps_per_epoch=steps,
            eval_seconds=eval_seconds,
            evals_left=(epochs - epoch) if validates else 0,
        ),
        data_share=recorder.data_time / elapsed if elapsed > 0 else math.nan,
        metrics=recorder.snapshot(),
        validation=validation or {},
    )


def _write(progress: Progress, line: str | None) -> None:
    if line is not None:
        progress.write(line)


def _describe(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return f"shape {tuple(obj.shape)}, dtype {obj.dtype}"
    if isinstance(obj, Mapping):
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, tuple | list):
        return "(" + ", ".join(_describe(v) for v in obj) + ")"
    return type(obj).__name__


def _first_forward(model: torch.nn.Module, x: Any) -> Any:
    try:
        return forward(model, x)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(
            f"The model failed on the first batch, with inputs of {_describe(x)}: {e}"
        ) from e


def _first_loss(loss_fn: LossFn, outputs: Any, y: Any) -> torch.Tensor:
    check_first_batch(loss_fn, outputs, y)
    try:
        value = loss_fn(outputs, y)
    except (RuntimeError, TypeError, ValueError, IndexError) as e:
        raise ValueError(
            f"The loss failed on the first batch. Model outputs: {_describe(outputs)}; "
            f"targets: {_describe(y)}. {e}"
        ) from e
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError(
            f"Expected the loss to return a scalar tensor (the batch mean). Received: "
            f"{_describe(value)}. Reduce it with .mean()."
        )
    if not value.requires_grad:
        raise ValueError(
            "The loss does not depend on any trainable parameter (it has no gradient). "
            "Check that the model's parameters require grad and the loss uses its outputs."
        )
    return value.reshape(())
