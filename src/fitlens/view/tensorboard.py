"""TensorBoard event files from a `Lens`: the figures fitlens shows, for every loop.

`TensorBoardWriter` is a listener on the one `Lens` that `fitlens.fit`, the Keras 3 callback and
the Lightning callback all drive (``fit(..., tensorboard=dir)``,
``FitlensCallback(tensorboard=dir)``, or the ``fitlens.TensorBoard`` fit callback), so the three
write the same tags from the same numbers:

===========================  ================================================  ==============
tag                          value                                             when
===========================  ================================================  ==============
``train/m_mean``             the epoch's running mean (what Keras shows)       every refresh
``train/m_now``              the now estimate                                  every refresh
``train/m_now_low``, ``_high`` its interval (``history["m_now_low"]``...)      epoch end
``lr``                       learning rate of the first parameter group        every refresh
                             (``lr/group_i`` for each group when several)
``val/m``                    validation at the epoch end                       epoch end
``train_eval/m``             ``train_eval`` pass, eval mode                    epoch end
``train_eval/m_train_mode``  ``train_eval`` pass, train mode                   epoch end
``time/data_wait``           seconds waiting for data in the epoch             epoch end
``time/compute``             seconds in training steps in the epoch            epoch end
``time/eval``                seconds in end-of-epoch passes                    epoch end
``time/epoch``               the epoch's wall time                             epoch end
===========================  ================================================  ==============

``m``: the loss and every training metric. The step (TensorBoard's x axis) is the number of
batch rows recorded since the run started (``len(history.batches)``).

No host read per step: the writer runs only when the lens refreshes (its values are already on
the host then) and at epoch ends. A refresh point holds what the display holds at that moment
(`Lens.snapshot`: the mean over the rows flushed so far, the now estimate at the newest); an
epoch-end point holds the epoch's logs, so ``train/m_mean`` and ``train/m_now`` at that step are
exactly ``history["m"]`` and ``history["m_now"]`` as float32 (TensorBoard's scalar type).
Non-finite values are left out (TensorBoard draws no gap for them).

Needs the ``tensorboard`` package (``pip install 'fitlens[tensorboard]'``); writes through its
event-file writer, without torch or TensorFlow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fitlens.view.lens import Lens

#: Returns ``{tag: learning rate}`` when called (read at refreshes and epoch ends only).
LearningRates = Callable[[], Mapping[str, float]]

#: ``history.history`` key pattern -> tag pattern, for the epoch-end values of a metric.
_EPOCH_TAGS = (
    ("{}", "train/{}_mean"),
    ("{}_now", "train/{}_now"),
    ("{}_now_low", "train/{}_now_low"),
    ("{}_now_high", "train/{}_now_high"),
    ("val_{}", "val/{}"),
    ("train_eval_{}", "train_eval/{}"),
    ("train_eval_train_mode_{}", "train_eval/{}_train_mode"),
)
#: Batch columns that are not metrics: ``fit(scheduler=...)``'s ``lr`` column is written as the
#: ``lr`` tag, from the optimizer.
_NOT_METRICS = frozenset({"lr"})
_TIME_TAGS = (
    ("data_wait", "time/data_wait"),
    ("compute", "time/compute"),
    ("eval", "time/eval"),
    ("time", "time/epoch"),
)


def _event_writer_parts() -> tuple[Any, Any, Any]:
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise ImportError(
            "TensorBoard output needs the tensorboard package. Install it with: "
            "pip install 'fitlens[tensorboard]'"
        ) from None
    return EventFileWriter, event_pb2, summary_pb2


def param_group_rates(*optimizers: Any) -> dict[str, float]:
    """``{"lr": rate}`` for one parameter group, else ``{"lr/group_i": rate}`` for each group of
    each optimizer in turn (PyTorch optimizers, or anything with ``param_groups``)."""
    rates = [
        float(group["lr"])
        for optimizer in optimizers
        for group in getattr(optimizer, "param_groups", None) or []
        if isinstance(group.get("lr"), int | float)
    ]
    if len(rates) == 1:
        return {"lr": rates[0]}
    return {f"lr/group_{i}": rate for i, rate in enumerate(rates)}


def check_log_dir(log_dir: Any, name: str = "tensorboard") -> Path:
    """``log_dir`` as a path (``~`` expanded), or a clear error for anything else."""
    if isinstance(log_dir, bool) or not isinstance(log_dir, str | Path) or str(log_dir) == "":
        raise ValueError(
            f"Expected `{name}` to be a directory path for the event files (a non-empty str or "
            f"pathlib.Path). Received: {log_dir!r}."
        )
    path = Path(log_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"Expected `{name}` to be a directory for the event files; {str(path)!r} is a file. "
            "Pass a new or existing directory."
        )
    return path


class TensorBoardWriter:
    """Writes a `Lens`'s running means, now estimates and epoch-end values as TensorBoard scalars.

    Args:
        log_dir: the directory for the event files (``tensorboard --logdir LOG_DIR``); ``~`` is
            expanded; created when the run starts.
        flush_secs: the longest time between writes to disk, in seconds (also flushed at every
            epoch end and when the run ends).

    Raises:
        ImportError: Without the tensorboard package (naming the extra to install).
        ValueError: For a ``log_dir`` that is not a path, or is a file.

    Example:
        >>> writer = TensorBoardWriter("runs/tb")  # doctest: +SKIP
        >>> writer.attach(lens, lambda: {"lr": 1e-3})  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | Path, flush_secs: float = 10.0) -> None:
        self._parts = _event_writer_parts()
        self.log_dir = check_log_dir(log_dir)
        self.flush_secs = flush_secs
        self.lens: Lens | None = None
        self._rates: LearningRates = dict
        self._file: Any = None

    def attach(self, lens: Lens, learning_rates: LearningRates | None = None) -> None:
        """Start writing for ``lens``: opens an event file and listens to its refreshes and epoch
        ends until `detach`. ``learning_rates`` is read at each point (None: no ``lr`` tags)."""
        self.detach()
        writer_cls = self._parts[0]
        self._file = writer_cls(str(self.log_dir), flush_secs=self.flush_secs)
        self._rates = learning_rates or dict
        self.lens = lens
        lens.after_refresh.append(self.on_refresh)
        lens.after_epoch.append(self.on_epoch_end)

    def detach(self) -> None:
        """Stop listening; flush and close the event file (safe to call twice)."""
        lens, self.lens = self.lens, None
        if lens is not None:
            if self.on_refresh in lens.after_refresh:
                lens.after_refresh.remove(self.on_refresh)
            if self.on_epoch_end in lens.after_epoch:
                lens.after_epoch.remove(self.on_epoch_end)
        if self._file is not None:
            self._file.close()
            self._file = None

    def on_refresh(self) -> None:
        """A lens refresh: the display's means and now estimates, and the learning rates."""
        lens = self.lens
        if lens is None or self._file is None:
            return
        scalars: dict[str, float] = {}
        for name, (mean, now) in lens.snapshot().items():
            if name in _NOT_METRICS:
                continue
            scalars[f"train/{name}_mean"] = mean
            scalars[f"train/{name}_now"] = now.value
        scalars.update(self._rates())
        self._write(scalars, len(lens.history.batches))

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None:
        """An epoch end: its logs (equal to ``history.history``), times and learning rates."""
        lens = self.lens
        if lens is None or self._file is None:
            return
        scalars: dict[str, float] = {}
        for name in lens.names:
            if name in _NOT_METRICS:
                continue
            for key, tag in _EPOCH_TAGS:
                if key.format(name) in logs:
                    scalars[tag.format(name)] = logs[key.format(name)]
        timing = lens.history.timing
        for key, tag in _TIME_TAGS:
            if timing.get(key):
                scalars[tag] = timing[key][-1]
        scalars.update(self._rates())
        self._write(scalars, len(lens.history.batches))
        self._file.flush()

    def _write(self, scalars: Mapping[str, float], step: int) -> None:
        _, event_pb2, summary_pb2 = self._parts
        values = [
            summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in scalars.items()
            if math.isfinite(value)
        ]
        if values:
            event = event_pb2.Event(
                wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values)
            )
            self._file.add_event(event)


__all__ = ["LearningRates", "TensorBoardWriter", "check_log_dir", "param_group_rates"]
