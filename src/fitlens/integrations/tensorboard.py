"""`fitlens.TensorBoard`: the figures fitlens shows, written as TensorBoard scalars.

Tags (``m``: the loss and every training metric; step: batches trained since the run started):

===========================  ================================================  ==============
tag                          value                                             when
===========================  ================================================  ==============
``train/m_mean``             the epoch's running mean (what Keras shows)       every refresh
``train/m_now``              the now estimate                                  every refresh
``train/m_now_low``, ``_high`` its 90% interval (``history["m_now_low"]``...)   epoch end
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

No host sync per step: the callback never reads the batch logs (reading them would move the
step's values to the host). It watches ``History.batches``, which `fit` fills when the display
refreshes, and writes one point per refresh from the new rows: the running mean from the rows,
the now estimate by feeding the rows to the run's estimator in the recorder's blocks
(`fitlens.report.series.NowReplay`, equal to ``history["m_now"]`` at epoch ends). At an epoch end
it writes the epoch's values from the epoch logs, so ``train/m_mean`` and ``train/m_now`` at that
step are exactly ``history["m"]`` and ``history["m_now"]`` (as float32: TensorBoard's scalar
type).

Needs the ``tensorboard`` package (``pip install 'fitlens[tensorboard]'``); the writer is
PyTorch's ``torch.utils.tensorboard.SummaryWriter``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fitlens.report.series import (
    MEASURED_KEYS,
    NowReplay,
    column_ranges,
    epoch_starts,
    metric_table,
)
from fitlens.training.callbacks import Callback


def _writer_class() -> Any:
    try:
        import tensorboard  # noqa: F401  (torch's writer needs it; a clear message if missing)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(
            "fitlens.TensorBoard needs the tensorboard package. Install it with: "
            "pip install 'fitlens[tensorboard]'"
        ) from None
    return SummaryWriter


class TensorBoard(Callback):
    """Write each metric's running mean, now estimate and epoch-end values for TensorBoard.

    Args:
        log_dir: the directory for the event files (``tensorboard --logdir LOG_DIR``).
        flush_secs: how often the writer flushes to disk, in seconds.

    Raises:
        ImportError: Without the tensorboard package (naming the extra to install).

    Example:
        >>> cb = fitlens.TensorBoard("runs/tb")  # doctest: +SKIP
        >>> fitlens.fit(model, data, ..., callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(self, log_dir: str | Path, flush_secs: int = 10) -> None:
        self._writer_cls = _writer_class()
        self.log_dir = Path(log_dir)
        self.flush_secs = flush_secs
        self.writer: Any = None
        self._rows = 0
        self._replay: NowReplay | None = None
        self._sums: dict[int, tuple[np.ndarray, float]] = {}

    def on_train_begin(self, logs: Mapping[str, float]) -> None:
        history = self.run.history
        self.writer = self._writer_cls(log_dir=str(self.log_dir), flush_secs=self.flush_secs)
        names = history.batches.metric_names
        self._replay = NowReplay(
            len(names), history.params.get("now"), column_ranges(history.params, names)
        )
        self._rows = 0
        self._sums = {}
        # A resumed run starts with the batches of its checkpoint: replay them, write nothing.
        self._consume(len(history.batches), write=False)

    def on_batch_end(self, step: int, logs: Mapping[str, float]) -> None:
        # ``logs`` is deliberately not read: reading it costs a host sync.
        if len(self.run.history.batches) > self._rows:
            self._consume(len(self.run.history.batches), write=True)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None:
        history = self.run.history
        self._consume(len(history.batches), write=False)
        step = self._rows
        names = history.batches.metric_names
        scalars: dict[str, float] = {}
        for name in names:
            keys = (name, f"{name}_now", f"{name}_now_low", f"{name}_now_high")
            tags = (f"train/{name}_mean", *(f"train/{k}" for k in keys[1:]))
            for tag, key in zip(tags, keys, strict=True):
                if key in logs:
                    scalars[tag] = logs[key]
            for role, pattern in MEASURED_KEYS.items():
                key = pattern.format(name)
                if key in logs:
                    tag = {
                        "validation": f"val/{name}",
                        "eval_mode": f"train_eval/{name}",
                        "train_mode": f"train_eval/{name}_train_mode",
                    }[role]
                    scalars[tag] = logs[key]
        timing = history.timing
        for key, tag in (
            ("data_wait", "time/data_wait"),
            ("compute", "time/compute"),
            ("eval", "time/eval"),
            ("time", "time/epoch"),
        ):
            if timing.get(key):
                scalars[tag] = timing[key][-1]
        scalars.update(self._learning_rates())
        for tag, value in scalars.items():
            if math.isfinite(value):
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def on_train_end(self, logs: Mapping[str, float]) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the event file (also done at the end of training)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _learning_rates(self) -> dict[str, float]:
        optimizer = getattr(self.run, "optimizer", None)
        groups = getattr(optimizer, "param_groups", None) or []
        rates = [float(g["lr"]) for g in groups if isinstance(g.get("lr"), int | float)]
        if len(rates) == 1:
            return {"lr": rates[0]}
        return {f"lr/group_{i}": r for i, r in enumerate(rates)}

    def _consume(self, rows: int, write: bool) -> None:
        """Feed batch rows ``self._rows:rows`` to the running means and now estimates."""
        if rows <= self._rows or self._replay is None:
            return
        batches = self.run.history.batches
        names = batches.metric_names
        start = self._rows
        epochs = batches["epoch"][start:rows]
        sizes = np.asarray(batches["size"][start:rows], dtype=np.float64)
        table = metric_table(batches, start, rows)
        starts = epoch_starts(epochs)
        ends = np.append(starts[1:], len(epochs))
        for a, b in zip(starts, ends, strict=True):
            epoch = int(epochs[a])
            self._replay.add(table[a:b], sizes[a:b], epoch)
            total, count = self._sums.get(epoch, (np.zeros(len(names)), 0.0))
            total = total + sizes[a:b] @ table[a:b]
            count += float(sizes[a:b].sum())
            self._sums = {epoch: (total, count)}
        self._rows = rows
        if not write:
            return
        epoch = int(epochs[-1])
        total, count = self._sums[epoch]
        for i, name in enumerate(names):
            self.writer.add_scalar(f"train/{name}_mean", float(total[i] / count), rows)
            self.writer.add_scalar(f"train/{name}_now", float(self._replay.values[i]), rows)
        for tag, value in self._learning_rates().items():
            self.writer.add_scalar(tag, value, rows)


__all__ = ["TensorBoard"]
