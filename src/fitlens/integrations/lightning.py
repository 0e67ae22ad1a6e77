"""fitlens's display and history for Lightning's ``Trainer``, as a callback.

Usage::

    import fitlens.lightning

    lens = fitlens.lightning.FitlensCallback()
    trainer = L.Trainer(max_epochs=5, callbacks=[lens], enable_progress_bar=False)
    trainer.fit(model, train_loader, val_loader)
    lens.history.history["loss_now"]

The callback follows every value the ``LightningModule`` logs in ``training_step`` with
``self.log(name, value, on_step=True)``. For such a metric Lightning itself offers:

* ``name_step``: the last batch's value (noisy: one batch);
* ``name_epoch``: the epoch's mean, at epoch end (it lags: an average over a changing model).

fitlens adds, under the plain ``name``:

* ``name`` (the *mean*): the same epoch mean as ``name_epoch``, but during the epoch too. It
  mirrors Lightning's weighting: each batch weighs its ``batch_size`` (passed to ``self.log``,
  or inferred from the batch), read from Lightning's own accumulator, so at epoch end it equals
  ``name_epoch``;
* ``name_now`` (the *now* estimate): a lag-free estimate from the most recent batches.

Validation values (logged in ``validation_step`` with ``on_epoch=True``) appear as ``val_*``:
names that already start with ``val`` are kept, others get the ``val_`` prefix.

Under Lightning's DDP (``strategy="ddp"``, more than one process) the training values are
global, as in `fitlens.fit` under torchrun: at each display refresh and epoch end one
``all_gather`` combines every rank's per-batch values into sample-weighted global rows, the same
on every rank (log them with ``sync_dist=False``: each rank's own value); rank 0 shows them.
Validation values are what Lightning reports: global when logged with ``sync_dist=True``.

With ``enable_progress_bar=False`` the callback's display replaces Lightning's bar; with the bar
on, both show (pass ``verbose=0`` to only record the history). Reading the values costs one
device-to-host copy per batch, as Lightning's own progress bar does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO, Any

try:
    import lightning.pytorch as pl
except ImportError as _error:
    if getattr(_error, "name", None) not in (None, "lightning", "lightning.pytorch"):
        raise
    raise ImportError(
        "fitlens.lightning needs Lightning (lightning.pytorch), which is not installed. "
        "Install it with: pip install 'fitlens[lightning]'"
    ) from _error

import torch
from lightning.pytorch.utilities.data import extract_batch_size

from fitlens.core.estimators import DEFAULT_NOW, Estimator
from fitlens.core.history import History
from fitlens.view.lens import Lens
from fitlens.view.progress import Progress
from fitlens.view.tensorboard import TensorBoardWriter, param_group_rates
from fitlens.view.timing import Clock

_TRAIN_FX = "training_step"


def _batch_size(batch: Any) -> float:
    try:
        return float(extract_batch_size(batch))
    except (RecursionError, TypeError, ValueError):
        return 1.0


class FitlensCallback(pl.Callback):
    """Shows fitlens's progress during ``trainer.fit`` and records a `fitlens.History`.

    Args:
        verbose: 0 silent, 1 bar (lines when not a terminal), 2 one line per epoch; or a
            configured `fitlens.Progress` (``log_every=``, ``file=``, ...).
        now: the now estimator, as in `fitlens.fit` (default ``"adaptive_trend"``; ``"ema_trend"``, ``"trend"``,
            ``"ema"``, ``"window"``, ``"last"`` or a configured `fitlens.Estimator`).
        file: where to write (default ``sys.stdout``), when ``verbose`` is an int.
        clock: seconds as a float; ``time.perf_counter`` unless injected (tests).
        tensorboard: a directory for TensorBoard event files, written from the same lens as
            `fitlens.fit`'s (``fit(..., tensorboard=dir)``): the running means, now estimates
            and learning rate at every display refresh, the epoch-end values and times; see
            `fitlens.view.tensorboard` (``pip install 'fitlens[tensorboard]'``).
        log_now: also ``self.log`` each ``name_now`` every step (``prog_bar=True``), so that
            Lightning's bar and loggers show it next to ``name_step`` and ``name_epoch``.

    Attributes:
        history: the `fitlens.History` of the run (``history.history`` per epoch with ``m``,
            ``m_now``, ``val_m``; ``history.batches`` one row per batch). Reused across
            ``Trainer.fit`` calls, the callback continues the same run (epochs numbered on,
            estimators and the jump forecast carried). Make a new callback for a new run.
        lens: the `fitlens.view.lens.Lens` that records and shows the run.

    Example:
        >>> lens = FitlensCallback(verbose=2)
        >>> # L.Trainer(callbacks=[lens], enable_progress_bar=False).fit(module, loader)
    """

    def __init__(
        self,
        verbose: int | Progress = 1,
        *,
        now: str | Estimator = DEFAULT_NOW,
        file: IO[str] | None = None,
        clock: Clock | None = None,
        tensorboard: str | Path | None = None,
        log_now: bool = False,
    ) -> None:
        super().__init__()
        self.progress = verbose if isinstance(verbose, Progress) else Progress(verbose, file=file)
        self.lens = Lens(self.progress, now, clock=clock)  # validates `now` here
        self.tensorboard = TensorBoardWriter(tensorboard) if tensorboard is not None else None
        self.log_now = bool(log_now)
        self.history: History = self.lens.history
        self.history.params["framework"] = "lightning"
        self._validation: dict[str, float] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:  # Lightning's own DDP: global values, rank 0 shows them
            from fitlens.training.reduction import gather_rows

            self.lens.reduce = gather_rows
            if not trainer.is_global_zero:
                interval = self.progress.refresh_interval
                self.lens.progress = Progress(0, refresh_per_second=1.0 / interval)
        steps = trainer.num_training_batches
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        self.lens.begin_run(epochs, int(steps) if math.isfinite(steps) else None)
        if self.tensorboard is not None:
            self.tensorboard.attach(self.lens, lambda: param_group_rates(*trainer.optimizers))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._counts: dict[str, float] = {}  # result key -> Lightning's cumulated batch size
        self._validation = {}
        self.lens.begin_epoch(trainer.current_epoch)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.lens.begin_step()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        names, tensors, weights = [], [], {}
        size = _batch_size(batch)
        for key, result in (trainer._results or {}).items():
            meta = result.meta
            if meta.fx != _TRAIN_FX or not meta.on_step or result.has_reset:
                continue
            value = result._forward_cache
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                continue
            weight = size
            if result.is_tensor and meta.on_epoch and meta.is_mean_reduction:
                # Lightning's own weight for this batch: the growth of its cumulated batch size.
                total = float(result.cumulated_batch_size)
                weight = total - self._counts.get(key, 0.0)
                self._counts[key] = total
            names.append(meta.name)
            tensors.append(value.detach().reshape(()).to(torch.float64))
            weights[meta.name] = weight
        values: dict[str, float] = {}
        if tensors:
            host = torch.stack([t.to(tensors[0].device) for t in tensors]).cpu().tolist()
            values = dict(zip(names, host, strict=True))
        self.lens.step_done(batch_idx + 1, values, weights, size)
        if self.log_now:
            self.lens.flush()
            snapshot = self.lens.snapshot()
            for name in values:
                now = snapshot[name][1].value
                pl_module.log(f"{name}_now", now, on_step=True, on_epoch=False, prog_bar=True)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        logged = trainer.callback_metrics
        for result in (trainer._results or {}).values():  # the validation loop's values
            meta = result.meta
            value = logged.get(meta.name)
            if not meta.on_epoch or not meta.fx.startswith(("validation", "on_validation")):
                continue
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                name = meta.name if meta.name.startswith("val") else f"val_{meta.name}"
                self._validation[name] = float(value)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.lens.end_epoch(self._validation)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.lens.end_run()
        self.lens.reduce = None
        if self.tensorboard is not None:
            self.tensorboard.detach()
