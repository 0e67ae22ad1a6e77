"""What a run recorded: per-epoch metrics (`History.history`) and per-batch rows (`History.batches`).

`History.history` follows Keras (``{"loss": [...], "val_loss": [...]}``, one entry per epoch) and
adds, for every training metric ``m``, ``m_now``: the lag-free now estimate at the epoch's end,
and ``m_now_low``/``m_now_high``: its 90% interval (`fitlens.core.estimators.NOW_LEVEL`), never
outside the metric's range. ``m`` itself is the epoch's running mean exactly as Keras would
report it (weighted by samples).

The interval is recorded at epoch ends only, not in `History.batches`: a value read at a
display refresh depends on when the display refreshed, and reading one at fixed steps would
cost an estimator fit per metric in the loop; the batch rows hold the values the estimate is
computed from, so the report replays it at any step (`fitlens.report.series`).

`History.batches` is a column store: numpy arrays grown geometrically, so a million steps cost
tens of megabytes, not a dict per batch. Both export to CSV that pandas reads back.

This module does not import torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fitlens.core.files import write_atomic

_BASE_COLUMNS: dict[str, Any] = {
    "epoch": np.int32,  # 1-based, as displayed
    "step": np.int32,  # 1-based step within the epoch
    "size": np.int32,  # samples in the batch
    "step_time": np.float32,  # seconds from batch ready to step done (host time; see loop docs)
    "data_time": np.float32,  # seconds waiting for the batch (loading and moving to device)
}


BASE_COLUMNS = tuple(_BASE_COLUMNS)  # the batch log's own columns, before the metrics'
# Keys of fitlens's own: the batch log's columns, the record keys of history.jsonl, the
# learning rate. With the forms below, a metric may not take these names.
RESERVED_NAMES = ("lr", "type", "values", "logs", "timing", *_BASE_COLUMNS)
RESERVED_FORMS = ("*_now", "*_now_low", "*_now_high", "val_*", "train_eval_*")


def check_metric_names(names: Iterable[str]) -> None:
    """Refuse metric names that clash with keys fitlens makes itself.

    Raises:
        ValueError: a name ends in ``_now``, ``_now_low`` or ``_now_high``, starts with ``val_`` or ``train_eval_``, or is one
            of `RESERVED_NAMES`; the message lists the reserved forms.
    """
    for name in names:
        if (
            name.endswith(("_now", "_now_low", "_now_high"))
            or name.startswith(("val_", "train_eval_"))
            or (name in RESERVED_NAMES)
        ):
            raise ValueError(
                f"Metric name {name!r} clashes with a key fitlens writes itself. Reserved: "
                f"{', '.join(RESERVED_FORMS)} and {', '.join(RESERVED_NAMES)}. Pass a dict "
                "{name: metric} to give it another name."
            )


def flat_batch_record(record: dict[str, Any]) -> dict[str, Any]:
    """A ``history.jsonl`` batch record (its ``"type"`` removed) as ``{column: value}``.

    Records nest the metric values under ``"values"``; records written before they did hold
    them at the top level, and are returned as they are.
    """
    values = record.pop("values", None)
    return {**record, **values} if isinstance(values, dict) else record


class BatchLog:
    """Per-batch records as growable numpy columns.

    Columns: ``epoch``, ``step``, ``size``, ``step_time``, ``data_time`` and one float64 column per
    training metric holding that batch's value. ``log["loss"]`` is a read-only view of the rows
    recorded so far.
    """

    def __init__(self, metric_names: Sequence[str] = (), capacity: int = 1024) -> None:
        self._dtypes: dict[str, Any] = dict(_BASE_COLUMNS)
        for name in metric_names:
            if name in self._dtypes:
                raise ValueError(f"Metric name {name!r} clashes with a batch-log column.")
            self._dtypes[name] = np.float64
        self._columns = {k: np.empty(capacity, dtype=t) for k, t in self._dtypes.items()}
        self._size = 0

    @property
    def columns(self) -> list[str]:
        """Column names, in order."""
        return list(self._dtypes)

    @property
    def metric_names(self) -> list[str]:
        """The metric columns (all columns after the base ones)."""
        return [k for k in self._dtypes if k not in _BASE_COLUMNS]

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, column: str) -> np.ndarray:
        view = self._columns[column][: self._size]
        view.flags.writeable = False
        return view

    def __contains__(self, column: object) -> bool:
        return column in self._columns

    def append(self, columns: Mapping[str, np.ndarray | Sequence[float] | float]) -> None:
        """Append rows; every column must be given, all with the same number of rows."""
        if set(columns) != set(self._dtypes):
            raise ValueError(
                f"Expected values for columns {self.columns}. Received {sorted(columns)}."
            )
        arrays = {k: np.atleast_1d(np.asarray(v)) for k, v in columns.items()}
        n = {a.shape[0] for a in arrays.values()}
        if len(n) != 1:
            raise ValueError(f"All columns need the same number of rows; got {n}.")
        rows = n.pop()
        self._reserve(self._size + rows)
        for k, a in arrays.items():
            self._columns[k][self._size : self._size + rows] = a
        self._size += rows

    def append_block(
        self,
        epoch: int,
        steps: np.ndarray,
        sizes: np.ndarray,
        step_times: np.ndarray,
        data_times: np.ndarray,
        values: np.ndarray,
    ) -> None:
        """Append ``n`` rows of one 1-based ``epoch`` from arrays already shaped: ``(n,)`` steps,
        sizes and seconds, ``(n, metrics)`` values in the order of `metric_names`. What
        `append` stores, without its checks and conversions (a flush appends every refresh).
        """
        rows = len(steps)
        start, end = self._size, self._size + rows
        self._reserve(end)
        columns = self._columns
        columns["epoch"][start:end] = epoch
        for name, column in (
            ("step", steps),
            ("size", sizes),
            ("step_time", step_times),
            ("data_time", data_times),
        ):
            columns[name][start:end] = column
        for i, name in enumerate(list(self._dtypes)[len(_BASE_COLUMNS) :]):
            columns[name][start:end] = values[:, i]
        self._size = end

    def _reserve(self, needed: int) -> None:
        capacity = len(next(iter(self._columns.values())))
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        for k, old in self._columns.items():
            new = np.empty(capacity, dtype=old.dtype)
            new[: self._size] = old[: self._size]
            self._columns[k] = new

    def truncate(self, rows: int) -> None:
        """Keep only the first ``rows`` rows (used when a run resumes from a checkpoint)."""
        self._size = max(0, min(rows, self._size))

    @property
    def nbytes(self) -> int:
        """Bytes held by the recorded rows (not counting spare capacity)."""
        return sum(a.itemsize * self._size for a in self._columns.values())

    def to_dict(self) -> dict[str, list[Any]]:
        """The rows as ``{column: list}``; ``pandas.DataFrame(log.to_dict())`` works."""
        return {k: self[k].tolist() for k in self._dtypes}

    def rows(self) -> Iterator[list[Any]]:
        cols = [self[k] for k in self._dtypes]
        for i in range(self._size):
            yield [c[i].item() for c in cols]

    def to_csv(self, path: str | Path) -> Path:
        """Write the rows to ``path`` as CSV with a header line; returns the path."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.columns)
        writer.writerows(self.rows())
        return write_atomic(path, buffer.getvalue().encode())


class History:
    """The record of a `fit` run, Keras-style.

    Attributes:
        history: ``{name: [value per epoch]}`` with, for every training metric ``m``: ``m`` (the
            epoch's running mean, as Keras reports it), ``m_now`` (the now estimate at epoch
            end), ``m_now_low`` and ``m_now_high`` (its 90% interval) and, when validation
            ran, ``val_m``.
        epoch: the 0-based epoch indices recorded (Keras's ``History.epoch``).
        timing: ``{name: [seconds per epoch]}`` with ``time`` (wall time of the epoch),
            ``data_wait`` (waiting for batches), ``compute`` (training steps) and ``eval``
            (validation and other end-of-epoch passes).
        batches: a `BatchLog`, one row per training batch.
        params: the settings of the run (epochs, steps, metric names, ...).
        gaps: one dict per epoch end: ``{"epoch": 1-based, "estimated": bool, "metrics":
            {name: GapDecomposition.to_dict()}}`` (see `fitlens.core.gap`); empty for runs that
            recorded none.
        lens: the `fitlens.view.lens.Lens` that recorded it (estimators, pending forecast):
            ``fit(..., history=h)`` continues the run from there. Not saved to files.
    """

    def __init__(self, metric_names: Sequence[str] = (), params: Mapping[str, Any] | None = None):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.timing: dict[str, list[float]] = {}
        self.batches = BatchLog(metric_names)
        self.params: dict[str, Any] = dict(params or {})
        self.gaps: list[dict[str, Any]] = []
        self.lens: Any = None  # what recorded it, to continue the run (`fit(history=...)`)

    def record_epoch(
        self, epoch: int, logs: Mapping[str, float], timing: Mapping[str, float]
    ) -> None:
        """Store one epoch's end-of-epoch values; keys missing in earlier epochs are NaN-padded."""
        n = len(self.epoch)
        for store, values in ((self.history, logs), (self.timing, timing)):
            for key, value in values.items():
                column = store.setdefault(key, [math.nan] * n)
                column.append(float(value))
            for column in store.values():
                if len(column) < n + 1:
                    column.append(math.nan)
        self.epoch.append(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Everything recorded, as plain containers and numpy arrays (for a checkpoint)."""
        b = self.batches
        return {
            "history": self.history,
            "epoch": self.epoch,
            "timing": self.timing,
            "batches": {c: np.array(b[c]) for c in b.columns},
            "gaps": self.gaps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace what is recorded with a `state_dict` (``params`` are kept, and ``gaps`` when
        the state has none: checkpoints of earlier versions)."""
        self.history.clear()
        self.history.update({k: [float(x) for x in v] for k, v in state["history"].items()})
        self.timing.clear()
        self.timing.update({k: [float(x) for x in v] for k, v in state["timing"].items()})
        self.epoch[:] = [int(e) for e in state["epoch"]]
        if "gaps" in state:
            self.gaps[:] = [dict(g) for g in state["gaps"]]
        self.batches.truncate(0)
        columns = state["batches"]
        if len(next(iter(columns.values()))):
            self.batches.append(columns)

    def epochs_table(self) -> dict[str, list[Any]]:
        """Per-epoch columns: ``epoch`` (1-based), every history key, every timing key."""
        table: dict[str, list[Any]] = {"epoch": [e + 1 for e in self.epoch]}
        table.update(self.history)
        table.update({f"{k}_s": v for k, v in self.timing.items()})
        return table

    def to_csv(self, path: str | Path) -> Path:
        """Write one row per epoch (see `epochs_table`) to ``path``; returns the path."""
        table = self.epochs_table()
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(table)
        writer.writerows(zip(*table.values(), strict=True))
        return write_atomic(path, buffer.getvalue().encode())

    def to_json(self) -> str:
        """The per-epoch table, params and gap decompositions as JSON (NaN written as null)."""

        def clean(x: Any) -> Any:
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, list):
                return [clean(v) for v in x]
            return None if isinstance(x, float) and not math.isfinite(x) else x

        table = clean(self.epochs_table())
        return json.dumps(
            {"epochs": table, "params": self.params, "gaps": clean(self.gaps)}, default=str
        )

    def plot(
        self,
        path: str | Path | None = None,
        *,
        metrics: Sequence[str] | None = None,
        title: str | None = None,
    ) -> Any:
        """Draw every metric: batch values, running mean, now estimate, epoch-end values.

        One panel per training metric (loss first); the x axis is in epochs. See
        `fitlens.report.plot` for what each line is and how large runs are reduced.

        Args:
            path: also save the chart there (format from the suffix: ``.png``, ``.svg``...).
            metrics: the metrics to draw (default: all with per-batch values).
            title: the figure's title.

        Returns:
            The ``matplotlib.figure.Figure`` (close it with ``matplotlib.pyplot.close``).

        Raises:
            ImportError: Without matplotlib (``pip install 'fitlens[plot]'``).
            ValueError: If no batch was recorded yet.
        """
        from fitlens.report.charts import plot_history

        return plot_history(self, path, metrics=metrics, title=title)

    def __repr__(self) -> str:
        keys = ", ".join(self.history)
        return f"History(epochs={len(self.epoch)}, batches={len(self.batches)}, keys=[{keys}])"
