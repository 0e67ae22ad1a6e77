"""Reading a run for a report: a run directory (also while it is written) or a `History`.

The history comes from `fitlens.read_history` (``history.jsonl``; a torn last line is ignored,
so a run still writing, or killed mid-write, reads as far as it was flushed); how the run ended
comes from ``summary.json``, which `fit` rewrites atomically at the start and the end.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fitlens.report.facts import RunFacts, run_facts
from fitlens.rundir import JSONL, SUMMARY, read_history


class RunDirError(ValueError):
    """The path is not a readable run directory (the message says what was expected)."""


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


def read_run(path: str | Path) -> Run:
    """Read the run directory ``path``.

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
        history = read_history(root)
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
