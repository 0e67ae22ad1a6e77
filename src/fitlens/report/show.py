"""``fitlens show``'s text and JSON: a run's epochs, gaps, timing and last lines, in a terminal.

`show_data` gathers the facts as plain data (the ``--json`` output, schema ``fitlens.show/1``);
`render_text` formats that data; neither prints.
"""

from __future__ import annotations

import math
from typing import Any

from fitlens.core.forecast import format_check_line, format_forecast_line
from fitlens.core.gap import format_gap_line
from fitlens.core.numbers import format_interval
from fitlens.report.facts import (
    forecasts,
    gap_table,
    headline,
    in_progress,
    json_ready,
    overflow_words,
    time_table,
)
from fitlens.report.reader import Run

SCHEMA = "fitlens.show/1"


def last_lines(run: Run) -> list[str]:
    """The end-of-epoch lines `fit` printed last (gap, forecast, check) and the epoch running."""
    h = run.history
    name = headline(h)
    lines: list[str] = []
    gaps = gap_table(h)
    if gaps and name in gaps[-1]:
        d = gaps[-1][name]
        if not d.estimated or d.validation is not None:
            lines.append(format_gap_line(d))
    rows = forecasts(h, name)
    if rows:
        last = rows[-1]
        if last.forecast.epoch - 2 == h.epoch[-1]:  # made at the last epoch end
            lines.append(format_forecast_line(last.forecast))
        if last.check is not None:
            lines.append(format_check_line(last.check))
    progress = in_progress(h)
    if progress is not None:
        of = f"/{progress.steps}" if progress.steps else ""
        means = " - ".join(f"{k}: {v:.4f}" for k, v in progress.means.items())
        lines.append(f"Epoch {progress.epoch} running: step {progress.steps_done}{of} - {means}")
    return lines


def show_data(run: Run) -> dict[str, Any]:
    """Everything ``fitlens show`` says, as JSON-ready data (NaN written as None)."""
    h = run.history
    f = run.facts
    gaps = gap_table(h)
    times = time_table(h)
    epochs = []
    for i, e in enumerate(h.epoch):
        t = times[i]
        epochs.append(
            {
                "epoch": e + 1,
                "logs": {k: v[i] for k, v in h.history.items()},
                "gaps": {k: d.to_dict() for k, d in gaps[i].items()},
                "timing": {
                    "time": t.time,
                    "data_wait": t.data_wait,
                    "compute": t.compute,
                    "eval": t.eval,
                    "other": t.other,
                },
            }
        )
    progress = in_progress(h)
    return json_ready(
        {
            "schema": SCHEMA,
            "source": f.source,
            "status": f.status,
            "outcome": f.outcome,
            "resumed_from": f.resumed_from,
            "error": f.error,
            "latest_checkpoint": f.latest_checkpoint,
            "overflow_skipped_steps": f.overflow_skipped_steps,
            "batches": len(h.batches),
            "headline": headline(h),
            "epochs": epochs,
            "in_progress": None if progress is None else vars(progress),
            "forecasts": [
                {
                    "epoch": r.forecast.epoch,
                    "metric": r.forecast.metric,
                    "reported": r.forecast.reported,
                    "expected": r.forecast.expected,
                    "tolerance": r.forecast.tolerance,
                    "observed": None if r.check is None else r.check.observed,
                    "as_forecast": None if r.check is None else r.check.as_forecast,
                }
                for r in forecasts(h)
            ],
            "warnings": list(f.warnings),
            "last_lines": last_lines(run),
        }
    )


def _cell(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def _now_cell(logs: dict[str, Any], name: str) -> str:
    """The now value with its interval (``0.941 ±0.012``) as the display showed it; the value
    alone for a run recorded before intervals were."""
    now = logs.get(f"{name}_now")
    low, high = logs.get(f"{name}_now_low"), logs.get(f"{name}_now_high")
    if now is None or not math.isfinite(now) or low is None or high is None:
        return _cell(now)
    return " ".join(format_interval(now, low, high))


def render_text(data: dict[str, Any]) -> str:
    """The terminal view of `show_data`'s output."""
    out = [f"run: {data['source']}", f"status: {data['outcome']}"]
    if data["resumed_from"]:
        out.append(f"resumed from: {data['resumed_from']}")
    if data["error"]:
        out.append(f"error: {data['error']}")
    if data.get("overflow_skipped_steps") is not None:
        out.append(f"fp16: {overflow_words(data['overflow_skipped_steps'])}")
    head = data["headline"]
    names = ["loss", head] if head != "loss" else ["loss"]
    columns = ["epoch"]
    for n in names:
        columns += [f"{n}", "now", f"val_{n}"]
    columns += [f"lag {head}", "-> val", "time s", "data %", "eval s"]
    rows = []
    for e in data["epochs"]:
        logs, gap, t = e["logs"], e["gaps"].get(head, {}), e["timing"]
        row = [str(e["epoch"])]
        for n in names:
            row += [_cell(logs.get(n)), _now_cell(logs, n), _cell(logs.get(f"val_{n}"))]
        rest = gap.get("rest") if gap.get("estimated", True) else gap.get("generalisation")
        share = None
        if t["time"] and t["data_wait"] is not None:
            share = 100 * t["data_wait"] / t["time"]
        row += [
            _signed(gap.get("averaging_lag")),
            _signed(rest),
            _cell(t["time"], 2),
            _cell(share, 1),
            _cell(t["eval"], 2),
        ]
        rows.append(row)
    out.append("")
    if rows:
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        out.append("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
        out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    else:
        out.append("no epoch has ended yet")
    if data["last_lines"]:
        out += ["", "last lines:"] + [f"  {line}" for line in data["last_lines"]]
    if data["warnings"]:
        out += ["", "warnings:"] + [f"  - {w}" for w in data["warnings"]]
    return "\n".join(out) + "\n"


def _signed(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:+.4f}"


__all__ = ["SCHEMA", "last_lines", "render_text", "show_data"]
