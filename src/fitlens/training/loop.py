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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fitlens.adapters.losses import LossFn
from fitlens.core.estimators import DEFAULT_NOW, Estimator
from fitlens.core.history import History
from fitlens.safety.checkpoint import Checkpointing
from fitlens.safety.guard import NonFinitePolicy, Resume
from fitlens.training.callbacks import Callback
from fitlens.training.distributed import Strategy
from fitlens.training.schedules import SchedulerInterval
from fitlens.training.setup import Training, check_arguments
from fitlens.training.update import Precision
from fitlens.view.progress import Progress
from fitlens.view.timing import Clock


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
    shuffle: bool = True,
    class_weight: Mapping[int, float] | None = None,
    sample_weight: Any = None,
    validation_data: Any = None,
    validation_steps: int | None = None,
    callbacks: Sequence[Callback] = (),
    verbose: int | Progress = 1,
    tensorboard: str | Path | None = None,
    device: torch.device | str | None = None,
    now: str | Estimator = DEFAULT_NOW,
    train_eval: bool | float | int | None = None,
    prefetch: int = 0,
    run_dir: str | Path | None = None,
    resume: Resume = False,
    checkpointing: Checkpointing | None = None,
    on_nonfinite: NonFinitePolicy = "stop",
    max_skipped: float = 0.1,
    initial_epoch: int | None = None,
    history: History | None = None,
    precision: Precision = "32",
    accumulate: int = 1,
    clip_grad_norm: float | None = None,
    clip_grad_value: float | None = None,
    scheduler: Any = None,
    scheduler_interval: SchedulerInterval = "epoch",
    monitor: str = "val_loss",
    compile: bool | Mapping[str, Any] = False,
    clock: Clock | None = None,
    strategy: Strategy = "auto",
    ddp_timeout: float = 60.0,
) -> History:
    """Train ``model`` on ``train`` and return its `History`, showing mean *and* now per metric.

    Args:
        model: a ``torch.nn.Module``; called as ``model(x)``, ``model(*x)`` for a tuple or
            ``model(**x)`` for a dict.
        train: a generator/iterator of ``(x, y)`` batches (needs ``steps_per_epoch``; continues
            across epochs), a re-iterable such as a ``DataLoader`` or a list of batches, or a
            tuple ``(x, y)`` of tensors/arrays with ``batch_size`` (shuffled every epoch). A
            batch may carry sample weights: ``(x, y, w)``. A list ``[x, y]`` is refused (pass
            the tuple). float64 inputs of every form are cast to the model's parameter dtype,
            with one warning (see `fitlens.adapters.dtypes`).
        loss: a name or a callable ``(outputs, targets) -> scalar tensor``. Keras names take
            probabilities (``"binary_crossentropy"``, ``"categorical_crossentropy"``,
            ``"sparse_categorical_crossentropy"``; ``fitlens.losses.*(from_logits=True)`` for
            logits); PyTorch names follow ``torch.nn.functional`` (``"cross_entropy"`` and
            ``"binary_cross_entropy_with_logits"`` take logits, ``"binary_cross_entropy"``
            probabilities); ``"mse"``, ``"mae"``. See `fitlens.adapters.losses`.
        optimizer: a ``torch.optim.Optimizer`` or a name (``"adam"``, ``"sgd"``, ...) with
            Keras's default learning rate.
        metrics: a list (``["accuracy", my_fn]``) or a dict ``{name: metric}``: ``"accuracy"``,
            callables ``(outputs, targets) -> tensor`` (a batch mean, or one value per sample
            ``(N,)``: their mean), torchmetrics metrics.
            ``"grad_norm"`` in a list adds the pre-clip global gradient 2-norm at each optimizer
            step as a column (display, ``history.batches``; NaN with weight 0 on the batches
            inside an accumulation group).
        epochs: number of epochs (>= 1).
        steps_per_epoch: batches per epoch; required for a generator.
        batch_size: batch size for array data (default 32); an error with data that makes
            its own batches (a ``DataLoader``, a generator, a list of batches).
        shuffle: shuffle array data every epoch (default True, as Keras); ignored by the
            other forms, which order their own batches.
        class_weight: ``{class index: weight}``: each sample's loss (and weighted metrics)
            counts with its class's weight, as in Keras; missing classes weigh 1. Training and
            ``train_eval`` only, not validation (Keras).
        sample_weight: one weight per sample ``(N,)`` for array ``train``; other forms yield
            ``(x, y, w)`` batches instead. The loss is ``sum(w * loss) / N`` per batch and
            accuracy the weighted mean, as in Keras (see `fitlens.adapters.weights`).
        validation_data: same forms as ``train``; evaluated at every epoch end. ``(x, y, w)``
            arrays or batches weigh it as training is weighted.
        validation_steps: batches per validation pass; required for a generator.
        callbacks: `Callback` instances.
        verbose: 0, 1 or 2, or a configured `Progress`.
        tensorboard: a directory for TensorBoard event files: the running means, now
            estimates and learning rate at every display refresh, the epoch-end values and
            times (`fitlens.view.tensorboard`; needs ``pip install 'fitlens[tensorboard]'``).
        device: where to train; default: where the model's parameters are.
        now: the now estimator: ``"adaptive_trend"`` (default: `AdaptiveTrend`, straight-line
            fits over 300 to 4800 samples read from the one with the smallest estimated error,
            chosen on held-out seeds of ``benchmarks/now_estimate.py``), ``"ema_trend"``,
            ``"trend"``, ``"ema"``, ``"window"``, ``"last"`` or a configured `Estimator`.
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
            included (starts afresh when there is no checkpoint yet). When checkpoint files
            exist but none loads, resume stops with an error listing each file and why;
            ``"allow_fresh"`` starts over instead (the unreadable files are kept, renamed).
        checkpointing: a `Checkpointing` (when to write checkpoints; an LR scheduler to keep);
            default: every 10 minutes and at every epoch end.
        on_nonfinite: ``"stop"`` (raise `NonFiniteError`; the model in memory is put back to
            the latest good checkpoint when there is one) or ``"skip"`` a batch whose loss or
            gradients are not finite, as if it had never been seen, batch-norm statistics
            included (one host sync per step); see `fitlens.safety.guard`.
        max_skipped: with ``"skip"``: the largest fraction of an epoch's steps that may be
            skipped (default 0.1); more, or a whole epoch, raises `NonFiniteError`.
        initial_epoch: as in Keras: run epochs ``initial_epoch`` to ``epochs - 1`` (0-based).
        history: the `History` an earlier call returned: this call continues that run (epochs
            numbered on, rows appended, the now estimates and the pending forecast carried
            across); without ``initial_epoch`` it runs ``epochs`` more epochs.
        precision: ``"32"`` (default), ``"bf16-mixed"`` (forward and loss under
            ``torch.autocast`` in bfloat16 on the model's device type) or ``"16-mixed"``
            (float16 autocast and a ``GradScaler``: an overflowing step is skipped by the scaler,
            counted in ``history.params["overflow_skipped_steps"]`` and said after the epoch
            line, never taken for a non-finite loss). Loss and metrics stay float32;
            validation and ``train_eval`` run in float32.
        accumulate: step the optimizer every this many batches (and after an epoch's last);
            each batch's loss is divided by its group's batch count. Steps, ``steps_per_epoch``,
            the display and the ETA count batches. Not with ``on_nonfinite="skip"``.
        clip_grad_norm: clip the global gradient 2-norm to this value at each optimizer step
            (after unscaling under ``"16-mixed"``). None (default): no clipping.
        clip_grad_value: clip each gradient element to ``[-x, x]`` (after the norm clip).
        scheduler: a torch LR scheduler on ``optimizer``, or a factory ``optimizer ->
            scheduler``; stepped per ``scheduler_interval``, checkpointed and resumed. The
            rate shows as ``lr`` in the display, ``history.history["lr"]`` (at epoch end) and
            ``history.batches["lr"]`` (the rate each batch's update used).
        scheduler_interval: ``"epoch"`` (default, as Keras) or ``"step"`` (after every
            optimizer step, so every ``accumulate`` batches).
        monitor: the epoch log that drives a ``ReduceLROnPlateau`` (default ``"val_loss"``);
            for known metrics a scheduler ``mode`` of the wrong direction is refused.
        compile: ``True`` trains through ``torch.compile(model)`` (or a dict of its
            arguments); checkpoints, validation and ``train_eval`` use the model itself.
        clock: seconds as a float; ``time.perf_counter`` unless injected (tests).
        strategy: ``"auto"`` (default: data-parallel under ``torchrun`` with more than one
            process, else one process), ``"ddp"`` (DistributedDataParallel; fails outside
            torchrun with the command to run) or ``"single"``. Under DDP ``batch_size`` (and a
            default-sampler ``DataLoader``'s) is the global batch, split equally across the
            processes in the order one process would draw, and every reported number is global;
            see `fitlens.training.distributed` and the README's "Several GPUs or machines".
        ddp_timeout: seconds a rank waits for the others in a collective before failing, when
            `fit` initialises the process group (default 60); also the longest a rank may take,
            after a SIGINT/SIGTERM, to reach the step where every rank stops (then it prints
            its stacks and exits).

    Returns:
        A `History`: ``history.history`` per epoch, ``history.batches`` per batch.

    Example:
        >>> import torch, fitlens
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(4, 3)
        >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
        >>> h = fitlens.fit(model, (x, y), loss="cross_entropy", optimizer="sgd",
        ...                 metrics=["accuracy"], epochs=2, batch_size=16, verbose=0)
        >>> [k for k in h.history if k.startswith("accuracy")], len(h.batches)
        (['accuracy', 'accuracy_now', 'accuracy_now_low', 'accuracy_now_high'], 8)

    Raises:
        ValueError / TypeError: before the first step, for invalid arguments; on the first
            batch, for outputs and targets that the loss cannot pair (both shapes are named).
        TrainingInterrupted: (a KeyboardInterrupt) on SIGINT/SIGTERM, after the current step
            and a checkpoint (under DDP: on every rank, after the same step).
        NonFiniteError: with ``on_nonfinite="stop"``, when a metric or the weights become
            NaN or infinite.
    """
    arguments = dict(locals())
    first, end = check_arguments(model, epochs, initial_epoch, history)
    t = Training(**arguments, end=end)  # resolves and checks the rest before the first step
    lens, safety, hooks, run = t.lens, t.safety, t.callbacks, t.run
    first = safety.begin(first)  # the checkpoint's epoch when resuming
    first = t.first_epoch = t.share_resume(first)  # under DDP: every rank restores rank 0's one
    failed: BaseException | None = None
    try:
        hooks.train_begin({})
        for epoch in range(first, end):
            for x, y, w in t.begin_epoch(epoch):
                lens.begin_step()  # the wait for data ends
                hooks.batch_begin(lens.step)
                t.step.run(x, y, w)  # forward, backward, optimizer step; values to the lens
                hooks.batch_end(lens.step, lens.logs)
                lens.refresh_if_due()  # one host transfer per refresh; display; forecast check
                safety.after_step(lens.step)  # checkpoint when due; stop on SIGINT/SIGTERM
                if run.stop_training:
                    break
                lens.end_step()  # the wait for data starts
            t.end_epoch(epoch, end)  # validation, train_eval, epoch lines, checkpoint
            if t.stop:
                break
    except BaseException as e:
        failed = e
        if t.dist is not None:
            t.dist.failed(e)  # names this rank in the error
        safety.close(e)  # the summary records why the run ended
        raise
    finally:
        t.close()
        if failed is not None:  # no on_train_end: callbacks release what they hold here
            hooks.exception(failed)
    safety.close(None)
    hooks.train_end(t.logs)
    return t.history
