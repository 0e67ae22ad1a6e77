"""fitlens's display and history for Keras 3's ``model.fit``, on any backend, as a callback.

Usage::

    import fitlens.keras

    lens = fitlens.keras.FitlensCallback()
    model.fit(x, y, epochs=5, validation_data=(xv, yv), verbose=0, callbacks=[lens])
    lens.history.history["loss_now"]

``verbose=0`` hides Keras's own bar; the callback shows fitlens's (epoch mean *and* now estimate
per metric, ETA, validation, and `fitlens.fit`'s gap, forecast and forecast-check lines) and
records a `fitlens.History` in the same format as `fitlens.fit`.

How per-batch values are recovered. Keras hands ``on_train_batch_end`` each metric's *running*
mean ``m_k`` over the epoch so far, as a full-precision float. Every compiled mean metric (the
loss tracker, ``accuracy``, ``mae``, ...) is a ``keras.metrics.Mean`` whose ``count`` variable
holds the weight ``W_k`` behind it: for the loss and the ``metrics=`` of ``compile``, the number
of samples (the batch's first dimension; the loss tracker ignores ``sample_weight``); for
``weighted_metrics=``, the sum of the sample weights. The callback reads each metric's own
``count``, so the last, partial batch and sample weights are weighted exactly as Keras weights
them, and recovers batch ``k``'s value as ``(W_k m_k - W_{k-1} m_{k-1}) / (W_k - W_{k-1})``
(`fitlens.core.window.window_mean`, the algebra `fitlens explain` uses). Keras accumulates in ``floatx`` (float32 by default):
the recovered values then carry about ``1e-7 * k * |m|`` of rounding after ``k`` batches.

* ``steps_per_execution > 1`` (JAX and TensorFlow backends): the hook fires once per group with
  the batch index of the group's last batch; the recovered value is the group's weighted mean,
  logged as one row whose ``step`` is the group's last batch and ``size`` its samples.
* Metrics that are not means (``AUC``, ``Precision``, ...) have no per-batch value: the display
  shows Keras's running value with no now estimate, and the batch log holds NaN.
* A log key that matches no compiled metric (a custom ``train_step``) is weighted by the loss
  tracker's sample count, or one per step when there is none (with a warning).

On the JAX backend the model state reaches the metric variables only when a callback asks for
``self.model`` (Keras then syncs it): the callback does so once per batch.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import IO, Any

try:
    import keras
except ImportError as _error:
    if getattr(_error, "name", None) not in (None, "keras"):
        raise ImportError(
            f"Keras is installed but failed to import ({_error}). Keras 3 picks its backend "
            "from KERAS_BACKEND: install that backend or set KERAS_BACKEND=torch (or jax, "
            "tensorflow) before importing keras."
        ) from _error
    raise ImportError(
        "fitlens.keras needs Keras 3, which is not installed. Install it with: "
        "pip install 'fitlens[keras]'"
    ) from _error

from fitlens.core.estimators import DEFAULT_NOW, Estimator
from fitlens.core.history import History
from fitlens.core.window import window_mean
from fitlens.view.lens import Lens
from fitlens.view.progress import Progress
from fitlens.view.tensorboard import TensorBoardWriter
from fitlens.view.timing import Clock

if int(keras.__version__.split(".")[0]) < 3:
    raise ImportError(
        f"fitlens.keras needs Keras 3; found Keras {keras.__version__}. Upgrade with: "
        "pip install 'fitlens[keras]'"
    )


def _metric_sources(model: Any) -> dict[str, Any]:
    """Log key -> the Keras metric object whose result Keras logs under that key."""
    found: dict[str, Any] = {}
    for metric in model.metrics:
        flat = getattr(metric, "_flat_metrics", None)
        if flat is None:  # the loss tracker, CompileLoss's per-output trackers, user metrics
            for leaf in getattr(metric, "metrics", None) or [metric]:
                found.setdefault(leaf.name, leaf)
            continue
        # CompileMetrics: mirror the names its result() gives (output prefix; "weighted_"
        # for a weighted metric whose plain name is taken).
        taken: set[str] = set()
        weighted = getattr(metric, "_flat_weighted_metrics", None) or []
        for is_weighted, lists in ((False, flat), (True, weighted)):
            for mls in lists:
                for leaf in getattr(mls, "metrics", None) or []:
                    prefix = f"{mls.output_name}_" if getattr(mls, "output_name", None) else ""
                    key = prefix + leaf.name
                    if key in taken:
                        if not is_weighted:
                            continue  # numbered duplicates: weighted by sample counts instead
                        key = f"{prefix}weighted_{leaf.name}"
                    taken.add(key)
                    found.setdefault(key, leaf)
    return found


def _read(variable: Any) -> float:
    """A scalar Keras variable as a float (a torch, JAX or TensorFlow scalar underneath)."""
    return float(variable.value)


class FitlensCallback(keras.callbacks.Callback):
    """Shows fitlens's progress during ``model.fit`` and records a `fitlens.History`.

    Pass ``verbose=0`` to ``model.fit`` so that Keras's own bar stays off.

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

    Attributes:
        history: the `fitlens.History` of the run (``history.history`` per epoch with ``m``,
            ``m_now``, ``val_m``; ``history.batches`` one row per batch). Reused across
            ``model.fit`` calls (``for i in range(n): model.fit(..., epochs=1)``), the callback
            continues the same run: epochs numbered on, rows accumulated, the now estimates
            and the jump forecast carried across. Make a new callback for a new run.
        lens: the `fitlens.view.lens.Lens` that records and shows the run.

    Example:
        >>> lens = FitlensCallback(verbose=2)
        >>> # model.fit(x, y, epochs=3, verbose=0, callbacks=[lens]); lens.history.history
    """

    def __init__(
        self,
        verbose: int | Progress = 1,
        *,
        now: str | Estimator = DEFAULT_NOW,
        file: IO[str] | None = None,
        clock: Clock | None = None,
        tensorboard: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.progress = verbose if isinstance(verbose, Progress) else Progress(verbose, file=file)
        self.lens = Lens(self.progress, now, clock=clock)  # validates `now` here
        self.tensorboard = TensorBoardWriter(tensorboard) if tensorboard is not None else None
        self.history: History = self.lens.history
        self.history.params["framework"] = "keras"

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        params = self.params or {}
        if self.progress.verbose and params.get("verbose", 0) not in (0, None):
            warnings.warn(
                "Keras's own progress bar is on as well as fitlens's: pass verbose=0 to "
                "model.fit to show only fitlens's.",
                stacklevel=2,
            )
        self.lens.begin_run(int(params.get("epochs") or 1), params.get("steps"))
        self._sources: dict[str, Any] | None = None
        self._warned_equal_weights = False
        if self.tensorboard is not None:
            self.tensorboard.attach(self.lens, self._learning_rates)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._previous: dict[str, tuple[float, float]] = {}  # key -> (count, mean)
        self._samples_before = 0.0
        self._epoch = epoch
        self.lens.begin_epoch(epoch)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.lens.begin_step()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        model = self.model  # on JAX, this syncs the metric variables
        if self._sources is None:
            self._sources = _metric_sources(model)
        steps = self.lens.steps
        step = batch + 1 if steps is None else min(batch + 1, steps)
        tracker = self._sources.get("loss")
        samples = (
            _read(tracker.count) if tracker is not None and hasattr(tracker, "count") else math.nan
        )
        values: dict[str, float] = {}
        weights: dict[str, float] = {}
        reported: dict[str, float] = {}
        for key, mean in (logs or {}).items():
            if not isinstance(mean, int | float):
                continue
            source = self._sources.get(key)
            if source is not None and not hasattr(source, "count"):
                reported[key] = float(mean)  # not a mean: no per-batch value exists
                continue
            count = _read(source.count) if source is not None else samples
            if math.isnan(count):
                count = float(step)
                if not self._warned_equal_weights:
                    self._warned_equal_weights = True
                    warnings.warn(
                        f"fitlens found no sample count for {key!r} (no compiled loss or mean "
                        "metric): weighting every step equally.",
                        stacklevel=2,
                    )
            prev_count, prev_mean = self._previous.get(key, (0.0, 0.0))
            added = count - prev_count
            values[key] = (
                window_mean(prev_count, prev_mean, count, float(mean)) if added > 0 else math.nan
            )
            weights[key] = max(added, 0.0)
            self._previous[key] = (count, float(mean))
        size = samples - self._samples_before
        self._samples_before = samples
        self.lens.step_done(step, values, weights, 0.0 if math.isnan(size) else size, reported)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        validation = {
            k: float(v)
            for k, v in (logs or {}).items()
            if k.startswith("val_") and isinstance(v, int | float)
        }
        self.lens.end_epoch(validation)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.lens.end_run()
        if self.tensorboard is not None:
            self.tensorboard.detach()

    def _learning_rates(self) -> dict[str, float]:
        """The optimizer's current learning rate (a schedule's value at this step), read at
        display refreshes and epoch ends only."""
        rate = getattr(getattr(self.model, "optimizer", None), "learning_rate", None)
        if rate is None:
            return {}
        return {"lr": float(keras.ops.convert_to_numpy(rate))}
