"""Reading a run for a report: a run directory (also while it is written) or a `History`.

The history comes from ``history.jsonl`` as `fitlens.read_history` reads it (a torn last line
is ignored, so a run still writing, or killed mid-write, reads as far as it was flushed), but in
chunks: `read_history` keeps a dict per batch until the end (about 0.9 GB for a million
batches), `stream_history` only ``CHUNK`` rows at a time on top of the columns themselves, and
reports its progress. How the run ended comes from ``summary.json``, which `fit` rewrites
atomically at the start and the end.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fitlens.core.history import BASE_COLUMNS, History, flat_batch_record
from fitlens.report.facts import RunFacts, run_facts
from fitlens.safety.run_dir import JSONL, SUMMARY, record_epoch_json

#: Batch rows parsed before they are moved into the history's numpy columns.
CHUNK = 65536


class RunDirError(ValueError):
    """The path is not a readable run directory (the message says what was expected)."""


def stream_history(run_dir: str | Path, progress: Callable[[float], None] | None = None) -> History:
    """The same `History` as `fitlens.read_history`, read in chunks of `CHUNK` batch rows.

    Args:
        run_dir: the run directory.
        progress: called with the fraction of ``history.jsonl`` read, every `CHUNK` rows.

    Raises:
        FileNotFoundError: Without ``history.jsonl``.
        ValueError, KeyError: For lines that are not fitlens history records.
    """
    path = Path(run_dir) / JSONL
    total = max(path.stat().st_size, 1)
    history: History | None = None
    columns: list[str] = []
    rows: list[list[float]] = []
    epochs: list[dict[str, Any]] = []
    done = 0

    def move_rows() -> None:
        if history is not None and rows:
            table = np.array(rows, dtype=np.float64)
            history.batches.append({c: table[:, i] for i, c in enumerate(columns)})
            rows.clear()

    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # torn last line
            done += len(line)
            record = json.loads(line)
            if record.pop("type") != "batch":
                epochs.append(record)
                continue
            record = flat_batch_record(record)
            if history is None:
                columns = list(record)
                history = History([k for k in columns if k not in BASE_COLUMNS])
            rows.append([math.nan if record[c] is None else record[c] for c in columns])
            if len(rows) >= CHUNK:
                move_rows()
                if progress is not None:
                    progress(done / total)
    if history is None:
        history = History()
    move_rows()
    for e in sorted(epochs, key=lambda r: r["epoch"]):
        record_epoch_json(history, e)
    return history


@dataclass
class Run:
    """A run ready to report on.

    Attributes:
        history: the `History` read so far. facts: how it ended, settings, warnings.
        path: the run directory (None for a history in memory). bytes_read: size of
        ``history.jsonl``. last_write_age: seconds since ``history.jsonl`` was last written.
    """

    history: Any
    facts: RunFacts
    path: Path | None = None
    bytes_read: int = 0
    last_write_age: float | None = None


def read_run(path: str | Path, progress: Callable[[float], None] | None = None) -> Run:
    """Read the run directory ``path``; ``progress`` as in `stream_history`.

    Raises:
        RunDirError: If ``path`` is missing, not a directory, or holds no ``history.jsonl``,
            or ``history.jsonl`` is not JSON Lines.
    """
    root = Path(path)
    if not root.exists():
        raise RunDirError(f"no such directory: {root}")
    if not root.is_dir():
        raise RunDirError(
            f"{root} is a file; expected a run directory (the run_dir given to fit), "
            f"which holds {JSONL}"
        )
    jsonl = root / JSONL
    if not jsonl.exists():
        raise RunDirError(
            f"{root} holds no {JSONL}; expected the run_dir given to fit(run_dir=...)"
        )
    try:
        history = stream_history(root, progress)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RunDirError(f"{jsonl} is not a fitlens history ({type(e).__name__}: {e})") from None
    summary: dict[str, Any] | None = None
    summary_path = root / SUMMARY
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            summary = None
    if summary is not None and isinstance(summary.get("config"), dict):
        # history.jsonl keeps no settings; the summary's config holds fit's params (steps per
        # epoch, the now estimator, ...), which the curves and the forecasts need.
        history.params.update(summary["config"])
    stat = jsonl.stat()
    facts = run_facts(history, summary, str(root))
    if summary is not None and summary_path.exists() and summary.get("status") is None:
        facts.warnings.append(f"{SUMMARY} has no status.")
    return Run(history, facts, root, stat.st_size, max(0.0, time.time() - stat.st_mtime))


def history_run(history: Any, name: str = "History") -> Run:
    """A `History` in memory (from `fit` or a callback) as a `Run`."""
    return Run(history, run_facts(history, None, name, in_memory=True))


__all__ = ["Run", "RunDirError", "history_run", "read_run"]
