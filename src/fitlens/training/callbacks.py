"""Callbacks: hooks called by `fitlens.fit` at the start and end of training, epochs and batches.

Logs carry, for every training metric ``m``, ``m`` (the epoch's running mean, as Keras reports
it) and ``m_now`` (the lag-free now estimate); at epoch end also ``val_m``. Batch logs are lazy:
reading them costs one host synchronisation (the loop keeps values on the device otherwise), and
batch hooks that no callback overrides are never called.

A callback stops training by setting ``self.run.stop_training = True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from fitlens.core.history import History


@dataclass
class RunState:
    """What a callback can see of the run (``callback.run``).

    Attributes:
        model: the model being trained (a ``torch.nn.Module`` in `fitlens.fit`).
        optimizer: its optimizer.
        history: the `History` being recorded.
        params: the run's settings (``epochs``, ``steps``, ``metrics``, ...).
        epoch: the current 0-based epoch. step: the current 1-based step within it (read from
            the loop's one step counter, the lens's).
        stop_training: set to True to end training after the current batch.
    """

    model: Any
    optimizer: Any
    history: History
    params: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    stop_training: bool = False
    lens: Any = field(default=None, repr=False)

    @property
    def step(self) -> int:
        return int(self.lens.step) if self.lens is not None else 0


class LazyLogs(Mapping[str, float]):
    """A read-only mapping whose values are computed on first access (one host sync)."""

    def __init__(self, compute: Callable[[], Mapping[str, float]]) -> None:
        self._compute: Callable[[], Mapping[str, float]] | None = compute
        self._values: Mapping[str, float] = {}

    def _get(self) -> Mapping[str, float]:
        if self._compute is not None:
            self._values, self._compute = self._compute(), None
        return self._values

    def __getitem__(self, key: str) -> float:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return f"LazyLogs({dict(self._get())!r})"


class Callback:
    """Base class for fit callbacks; override the hooks you need.

    ``self.run`` is set to a `RunState` before ``on_train_begin``. ``on_train_end`` runs only
    when training ends normally (completed or stopped by a callback or early stopping); when it
    ends with an exception (an error, Ctrl-C, `NonFiniteError`), ``on_exception(error)`` runs
    instead (Lightning's name), after `fit` has closed its own display and files and before
    the exception propagates: release what the callback holds there.
    """

    run: RunState

    def set_run(self, run: RunState) -> None:
        self.run = run

    def on_train_begin(self, logs: Mapping[str, float]) -> None: ...
    def on_train_end(self, logs: Mapping[str, float]) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Mapping[str, float]) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None: ...
    def on_batch_begin(self, step: int, logs: Mapping[str, float]) -> None: ...
    def on_batch_end(self, step: int, logs: Mapping[str, float]) -> None: ...
    def on_exception(self, error: BaseException) -> None: ...


def _overrides(cb: Callback, hook: str) -> bool:
    return getattr(type(cb), hook) is not getattr(Callback, hook)


class CallbackList:
    """Calls a hook on every callback in order; batch hooks only on those that override them."""

    def __init__(self, callbacks: Sequence[Callback], run: RunState) -> None:
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"Expected every callback to be a fitlens.Callback. Received: {cb!r}. "
                    "Subclass fitlens.Callback and override the hooks you need."
                )
            cb.set_run(run)
        self.callbacks = list(callbacks)
        self._batch_begin = [cb for cb in self.callbacks if _overrides(cb, "on_batch_begin")]
        self._batch_end = [cb for cb in self.callbacks if _overrides(cb, "on_batch_end")]

    def batch_begin(self, step: int) -> None:
        """Before a step runs: ``step`` steps of the epoch are done (its 0-based index)."""
        for cb in self._batch_begin:
            cb.on_batch_begin(step, {})

    def batch_end(self, step: int, compute_logs: Callable[[], Mapping[str, float]]) -> None:
        """After 1-based ``step``; the logs are computed only if a callback reads them."""
        if self._batch_end:
            logs = LazyLogs(compute_logs)
            for cb in self._batch_end:
                cb.on_batch_end(step, logs)

    def train_begin(self, logs: Mapping[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def train_end(self, logs: Mapping[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def exception(self, error: BaseException) -> None:
        """Training ended with ``error``: every callback's ``on_exception``, in order, even when
        one of them raises (the first such error is raised afterwards, chained to ``error``)."""
        failed: Exception | None = None
        for cb in self.callbacks:
            try:
                cb.on_exception(error)
            except Exception as e:  # the others still release what they hold
                failed = failed or e
        if failed is not None:
            raise failed from error

    def epoch_begin(self, epoch: int, logs: Mapping[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)


class EarlyStopping(Callback):
    """Stop training when a monitored value has stopped improving (as Keras's EarlyStopping).

    Args:
        monitor: a key of the epoch logs, e.g. ``"val_loss"`` or ``"loss_now"``.
        patience: epochs without improvement after which training stops (Keras's rule:
            with patience 1, the first epoch that does not improve stops training).
        mode: ``"min"`` or ``"max"``; ``"auto"`` uses max for names containing "acc" or "auc".
        min_delta: smallest change that counts as improvement.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        mode: Literal["auto", "min", "max"] = "auto",
        min_delta: float = 0.0,
    ) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"Expected `mode` 'auto', 'min' or 'max'. Received: {mode!r}.")
        if patience < 0:
            raise ValueError(f"Expected `patience` >= 0. Received: {patience!r}.")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = abs(min_delta)
        if mode == "auto":
            mode = "max" if ("acc" in monitor or "auc" in monitor) else "min"
        self.sign = 1.0 if mode == "min" else -1.0
        self.best = math.inf
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_train_begin(self, logs: Mapping[str, float]) -> None:
        self.best, self.wait, self.stopped_epoch = math.inf, 0, None

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None:
        if self.monitor not in logs:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, which is not in the epoch logs. "
                f"Available: {sorted(logs)}."
            )
        score = self.sign * logs[self.monitor]
        if score < self.best - self.min_delta:
            self.best, self.wait = score, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.run.stop_training = True
