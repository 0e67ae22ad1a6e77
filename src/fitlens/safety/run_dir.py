"""A run directory: the history as it grows, the checkpoints, and a summary of the run.

Layout of ``run_dir``::

    batches.csv      one row per training batch (History.batches columns), appended at every
                     display refresh; ``pandas.read_csv`` reads it while training runs
    epochs.csv       one row per epoch (History.epochs_table), appended at every epoch end
    history.jsonl    the same rows as JSON Lines: {"type": "batch", "epoch": 1, "step": 1, ...,
                     "values": {"loss": ...}} (earlier versions did not nest the values; both
                     forms are read) and
                     {"type": "epoch", "epoch": 1, "logs": {...}, "timing": {...}, "gaps":
                     {"estimated": ..., "metrics": {...}}} (the gap decomposition with the 95%
                     intervals of the measured values, History.gaps; absent in files of
                     earlier versions); NaN is null
    summary.json     config, versions, timings, final metrics and status (replaced atomically)
    checkpoints/     ckpt-00000001.pt, ... (see fitlens.safety.checkpoint)

Appends are flushed to the operating system after every write (readable by other processes at
once) but not fsync'ed: they are cheap and, after a crash, a resumed run rewrites them from the
checkpoint. A process killed mid-append can leave a torn last line; `read_history` ignores it.
Write errors (a full disk) are reported once as a warning and do not stop training.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import platform
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fitlens.core.files import NOFOLLOW, open_append, write_atomic
from fitlens.core.history import BASE_COLUMNS, History, flat_batch_record

BATCHES_CSV = "batches.csv"
EPOCHS_CSV = "epochs.csv"
JSONL = "history.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"


LOCK = ".lock"
_WRITTEN = (BATCHES_CSV, EPOCHS_CSV, JSONL, SUMMARY)


def prepare_run_dir(run_dir: str | Path, need_bytes: int) -> Path:
    """Check and create ``run_dir`` before the first step; returns it with ``~`` expanded.

    Args:
        run_dir: the directory `fit` was given.
        need_bytes: the free space the run needs (two checkpoints, estimated by the caller).

    Raises:
        ValueError: an empty string; ``run_dir`` is a file; a file fitlens writes there
            (``batches.csv``, ...) or ``checkpoints`` is of the wrong kind.
        OSError: the directory cannot be created or written (read-only file system,
            permissions), or the disk has less than ``need_bytes`` free. Each message says what
            was expected, what was found and what to do.
    """
    if not str(run_dir).strip():
        raise ValueError(
            "Expected `run_dir` to name a directory. Received an empty string; pass e.g. "
            "run_dir='runs/exp1', or None to write nothing."
        )
    path = Path(run_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"`run_dir` {path} is a file, not a directory. Choose another run_dir.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = write_atomic(path / ".fitlens-write-test", b"")
        probe.unlink()
    except OSError as e:
        raise OSError(
            e.errno,
            f"Cannot write to run_dir {path}: {e.strerror or e}. Choose a directory you can "
            "write to (not on a read-only file system).",
        ) from None
    for name in (*_WRITTEN, CHECKPOINTS):
        p = path / name
        if p.is_dir() if name != CHECKPOINTS else p.exists() and not p.is_dir():
            kind, want = (
                ("a file", "a directory") if name == CHECKPOINTS else ("a directory", "a file")
            )
            raise ValueError(
                f"{p} is {kind}; fitlens writes {want} there. Move it away or choose another "
                "run_dir."
            )
    free = shutil.disk_usage(path).free
    if free < need_bytes:
        raise OSError(
            errno.ENOSPC,
            f"run_dir {path} has {free / 1e6:.1f} MB free; the run needs about "
            f"{need_bytes / 1e6:.1f} MB for two checkpoints (model and optimizer state). Free "
            "some space or choose a run_dir on another disk.",
        )
    return path


class RunLock:
    """A lock file in a run directory, holding the owner's pid and host.

    A second process on the same ``run_dir`` is refused; a lock left by a process that no
    longer runs (on this host) is taken over with a warning.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK
        self.held = False

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            RuntimeError: another live process (or one on another host) holds it.
        """
        host = socket.gethostname()
        me = {"pid": os.getpid(), "host": host}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
            except FileExistsError:
                owner = self._owner()
                if not self._stale(owner, host):
                    raise RuntimeError(
                        f"run_dir {self.path.parent} is in use by process {owner.get('pid')} on "
                        f"host {owner.get('host')!r} (lock file {self.path}). Two runs must not "
                        "write one run_dir: wait for it, choose another run_dir, or delete the "
                        "lock file if that process is gone."
                    ) from None
                warnings.warn(
                    f"Taking over the lock of run_dir {self.path.parent}: process "
                    f"{owner.get('pid')} on this host, which held it, no longer runs.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            return

    def _owner(self) -> dict[str, Any]:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # torn or unreadable: written by a process killed mid-write
        return owner if isinstance(owner, dict) else {}

    @staticmethod
    def _stale(owner: dict[str, Any], host: str) -> bool:
        pid = owner.get("pid")
        if owner.get("host", host) != host:
            return False  # cannot see processes on another host
        if not isinstance(pid, int) or pid == os.getpid():
            return True  # unreadable, or left by an earlier fit of this very process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()


class RunDir:
    """Writes a run's history files incrementally.

    Args:
        path: the run directory (created if missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / CHECKPOINTS
        self._files: dict[str, TextIO] = {}
        self._rows_written = 0
        self._epochs_written = 0
        self._epoch_header: list[str] | None = None
        self._warned = False

    def start(self, history: History) -> None:
        """(Re)write every history file from ``history`` and open them for appending.

        A resumed run calls this with the history restored from its checkpoint, which drops the
        rows written after that checkpoint (they are trained again).
        """
        self.path.mkdir(parents=True, exist_ok=True)
        self.close()
        batches = history.batches
        lines = [_csv_line(batches.columns)] + [_csv_line(r) for r in batches.rows()]
        json_lines = [_batch_json(batches.columns, r) for r in batches.rows()]
        table = history.epochs_table()
        self._epoch_header = list(table)
        epoch_lines = [_csv_line(self._epoch_header)] if history.epoch else []
        for i in range(len(history.epoch)):
            epoch_lines.append(_csv_line([table[k][i] for k in self._epoch_header]))
            json_lines.append(_epoch_json(history, i))
        # Batch and epoch JSON lines interleave in training order only loosely after a rewrite;
        # each line carries its epoch (and step), which is what readers sort on.
        write_atomic(self.path / BATCHES_CSV, "".join(lines).encode())
        write_atomic(self.path / EPOCHS_CSV, "".join(epoch_lines).encode())
        write_atomic(self.path / JSONL, "".join(json_lines).encode())
        self._rows_written = len(batches)
        self._epochs_written = len(history.epoch)
        for name in (BATCHES_CSV, EPOCHS_CSV, JSONL):
            # Kept open for the whole run (appended at every refresh); closed by `close`.
            self._files[name] = open_append(self.path / name)

    def append(self, history: History) -> None:
        """Append the batch and epoch rows recorded since the last call, and flush."""
        if not self._files:
            return
        try:
            self._append(history)
        except OSError as e:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"Cannot write the history to {self.path}: {e}. Training goes on; the "
                    "history is still returned by fit and saved in the next checkpoint.",
                    RuntimeWarning,
                    stacklevel=3,
                )

    def _append(self, history: History) -> None:
        batches = history.batches
        n = len(batches)
        if n > self._rows_written:
            cols = batches.columns
            arrays = [batches[c][self._rows_written : n] for c in cols]
            rows = [[a[i].item() for a in arrays] for i in range(n - self._rows_written)]
            self._files[BATCHES_CSV].write("".join(_csv_line(r) for r in rows))
            self._files[JSONL].write("".join(_batch_json(cols, r) for r in rows))
            self._rows_written = n
        if len(history.epoch) > self._epochs_written:
            table = history.epochs_table()
            if list(table) != self._epoch_header and self._epochs_written:
                self.start(history)  # a new key appeared: rewrite with the new header
                return
            if not self._epochs_written:
                self._epoch_header = list(table)
                self._files[EPOCHS_CSV].write(_csv_line(self._epoch_header))
            for i in range(self._epochs_written, len(history.epoch)):
                row = [table[k][i] for k in table]
                self._files[EPOCHS_CSV].write(_csv_line(row))
                self._files[JSONL].write(_epoch_json(history, i))
            self._epochs_written = len(history.epoch)
        for f in self._files.values():
            f.flush()

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Replace ``summary.json`` atomically (NaN written as null)."""
        self.path.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_deep_clean(summary), indent=2, default=str)
        try:
            write_atomic(self.path / SUMMARY, text.encode())
        except OSError as e:
            warnings.warn(f"Cannot write {self.path / SUMMARY}: {e}.", RuntimeWarning, stacklevel=2)

    def close(self) -> None:
        for f in self._files.values():
            with contextlib.suppress(OSError):
                f.close()
        self._files.clear()


def start_summary(
    history: History,
    model: Any,
    optimizer: Any,
    settings: dict[str, Any],
    resumed_from: str | None,
    versions: dict[str, str],
) -> dict[str, Any]:
    """The summary written when a run starts: config and versions, status ``"running"``.

    ``versions``: the framework's (``{"torch": torch.__version__}``), given by the caller so
    that this module, which `fitlens report` and `fitlens show` read runs through, imports no
    torch.
    """
    import fitlens

    groups = optimizer.param_groups
    hyper = {k: v for k, v in groups[0].items() if k != "params"} if groups else {}
    return {
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "resumed_from": resumed_from,
        "config": {
            **history.params,
            "model": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "optimizer": type(optimizer).__name__,
            "optimizer_hyperparameters": hyper,
            **settings,
        },
        "versions": {
            "fitlens": fitlens.__version__,
            **versions,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }


def finish_summary(
    summary: dict[str, Any],
    history: History,
    status: str,
    error: BaseException | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """``summary`` completed with the outcome: status, error, final metrics, timing totals."""
    summary.update(
        {
            "status": status,
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "epochs_completed": len(history.epoch),
            "batches_recorded": len(history.batches),
            "final_metrics": {k: v[-1] for k, v in history.history.items() if v},
            "timing_seconds": {k: float(np.nansum(v)) for k, v in history.timing.items()},
            **extra,
        }
    )
    return summary


def _deep_clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _deep_clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_deep_clean(v) for v in obj]
    return _clean(obj)


def _batch_json(columns: list[str], row: list[Any]) -> str:
    record: dict[str, Any] = {"type": "batch", "values": {}}
    for c, v in zip(columns, row, strict=True):  # the metrics nested: no clash with our keys
        (record if c in BASE_COLUMNS else record["values"])[c] = _clean(v)
    return json.dumps(record) + "\n"


def _epoch_json(history: History, i: int) -> str:
    epoch = history.epoch[i] + 1
    record: dict[str, Any] = {
        "type": "epoch",
        "epoch": epoch,
        "logs": {k: _clean(v[i]) for k, v in history.history.items()},
        "timing": {k: _clean(v[i]) for k, v in history.timing.items()},
    }
    gap = next((g for g in reversed(history.gaps) if g.get("epoch") == epoch), None)
    if gap is not None:  # the gap decomposition with the measured values' intervals
        record["gaps"] = _deep_clean({k: v for k, v in gap.items() if k != "epoch"})
    return json.dumps(record) + "\n"


def record_epoch_json(history: History, record: dict[str, Any]) -> None:
    """Add one ``history.jsonl`` epoch record to ``history``: its logs and timing (``null`` as
    NaN) and, when recorded (files written since the gap intervals were), its ``History.gaps``
    entry."""
    logs = {k: math.nan if v is None else v for k, v in record["logs"].items()}
    timing = {k: math.nan if v is None else v for k, v in record["timing"].items()}
    history.record_epoch(record["epoch"] - 1, logs, timing)
    gaps = record.get("gaps")
    if isinstance(gaps, dict):
        history.gaps.append({"epoch": record["epoch"], **gaps})


def read_history(run_dir: str | Path) -> History:
    """Rebuild a `History` from ``run_dir/history.jsonl``, also while the run is writing it.

    A torn last line (a process killed mid-write) is ignored. ``null`` becomes NaN.

    Example:
        >>> h = read_history("runs/exp1")  # doctest: +SKIP
        >>> h.history["loss"], len(h.batches)  # doctest: +SKIP
    """
    path = Path(run_dir) / JSONL
    if not path.exists():
        raise FileNotFoundError(
            f"No {JSONL} in {run_dir}: expected the run directory given to fit(run_dir=...)."
        )
    batch_rows: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn last line
            record = json.loads(line)
            if record.pop("type") == "batch":
                batch_rows.append(flat_batch_record(record))
            else:
                epochs.append(record)
    base = {"epoch", "step", "size", "step_time", "data_time"}
    names = [k for k in batch_rows[0] if k not in base] if batch_rows else []
    history = History(names)
    if batch_rows:
        history.batches.append(
            {
                k: np.array([math.nan if r[k] is None else r[k] for r in batch_rows])
                for k in batch_rows[0]
            }
        )
    for e in sorted(epochs, key=lambda r: r["epoch"]):
        record_epoch_json(history, e)
    return history
