"""``fitlens report``'s page: one self-contained HTML file about a run.

The page needs no network and runs no script: the charts are SVG images inlined as ``data:``
URIs (an SVG shown through ``<img>`` can never run code), the run's per-epoch table is inlined
as a JSON data block, the styles are inline, and a Content-Security-Policy forbids scripts and
any fetch. Every piece of text that comes from the run (metric names, paths, settings,
warnings, errors) goes through `html.escape`; the JSON block escapes ``<``, ``>`` and ``&``.

`render_page` is a pure function from a `Run` (and the chart bytes) to the page's text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fitlens.core.gap import GapDecomposition, Measured
from fitlens.report.facts import (
    ForecastRow,
    TimeRow,
    forecasts,
    gap_table,
    has_intervals,
    headline,
    in_progress,
    json_ready,
    overflow_words,
    time_table,
)
from fitlens.report.page import charts_html, esc, json_block, page
from fitlens.report.reader import Run


def num(x: float, digits: int = 4) -> str:
    """A number as shown in the tables; empty for NaN (not measured)."""
    return "" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def signed(x: float) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:+.4f}"


def seconds(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.2f}"


def _with_interval(m: Measured | None) -> str:
    if m is None:
        return ""
    if math.isfinite(m.low) and math.isfinite(m.high) and m.low != m.high:
        return f"{num(m.value)} <span class=note>[{num(m.low)}, {num(m.high)}]</span>"
    return num(m.value)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table; ``header`` is escaped, cells are HTML already (callers escape what they put in)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _status(run: Run) -> str:
    f = run.facts
    bad = f.status not in ("completed", "running")
    parts = [f"<b>{esc(f.status)}</b>: {esc(f.outcome)}"]
    if f.resumed_from:
        parts.append(f"resumed from checkpoint <code>{esc(f.resumed_from)}</code>")
    if f.latest_checkpoint:
        parts.append(f"latest checkpoint <code>{esc(f.latest_checkpoint)}</code>")
    if f.error:
        parts.append(f"error: <code>{esc(f.error)}</code>")
    if f.overflow_skipped_steps is not None:
        parts.append(esc(overflow_words(f.overflow_skipped_steps)))
    when = [
        f"started {esc(f.started)}" if f.started else "",
        f"finished {esc(f.finished)}" if f.finished else "",
    ]
    if run.last_write_age is not None:
        when.append(f"history last written {run.last_write_age:.0f} s before this report")
    progress = in_progress(run.history)
    if progress is not None:
        of = f" of {progress.steps}" if progress.steps else ""
        means = ", ".join(f"{esc(k)} {num(v)}" for k, v in progress.means.items())
        parts.append(
            f"epoch {progress.epoch} in progress: {progress.steps_done}{of} steps flushed "
            f"(running means {means})"
        )
    lines = "<br>".join(p for p in [*parts, ", ".join(w for w in when if w)] if p)
    return f'<p class="status{" bad" if bad else ""}">{lines}</p>'


def _epochs_section(run: Run) -> str:
    h = run.history
    names = [n for n in h.batches.metric_names if n in h.history]
    header = ["epoch"]
    for n in names:
        header += [f"{n} mean", f"{n} now", f"val_{n}"]
    header += ["time (s)"]
    rows = []
    for i, e in enumerate(h.epoch):
        row = [str(e + 1)]
        for n in names:
            for key in (n, f"{n}_now", f"val_{n}"):
                column = h.history.get(key)
                row.append(num(column[i]) if column is not None else "")
        row.append(seconds(h.timing.get("time", [math.nan] * (i + 1))[i]))
        rows.append(row)
    if not rows:
        return "<p class=note>No epoch has ended yet.</p>"
    return _table(header, rows)


def _gap_rows(gaps: list[dict[str, GapDecomposition]], name: str) -> list[list[str]]:
    rows = []
    for i, per_metric in enumerate(gaps):
        d = per_metric.get(name)
        if d is None:
            continue
        measured = not d.estimated
        rows.append(
            [
                str(i + 1),
                num(d.reported),
                num(d.now),
                _with_interval(d.train_mode) if measured else "",
                _with_interval(d.eval_mode) if measured else "",
                _with_interval(d.validation),
                signed(d.averaging_lag) + ("" if measured else " <span class=note>est.</span>"),
                signed(d.mode_effect) if measured else "",
                signed(d.generalisation) if measured else signed(d.rest),
                signed(d.total),
            ]
        )
    return rows


def _gaps_section(run: Run) -> str:
    h = run.history
    gaps = gap_table(h)
    if not gaps:
        return "<p class=note>No epoch has ended yet.</p>"
    header = [
        "epoch",
        "mean",
        "now",
        "train mode",
        "eval mode",
        "validation",
        "averaging lag",
        "dropout/BN",
        "generalisation",
        "total (val - mean)",
    ]
    out = [
        "<p>Why the reported mean differs from validation, per epoch end: averaging lag "
        "(the model improved while the mean accumulated), the train/eval-mode effect "
        "(dropout, batch-norm) and the generalisation gap add up to <i>val - mean</i>. "
        "Without <code>train_eval</code> the lag is estimated from the now estimate and the "
        "last column is mode effect and generalisation together.</p>"
    ]
    if not has_intervals(h):
        out.append(
            "<p class=note>95% intervals: not recorded in this run directory (its "
            "<code>history.jsonl</code> was written by a fitlens that kept values only); a "
            "report made from the <code>History</code> that <code>fit</code> returned shows "
            "them.</p>"
        )
    for name in h.batches.metric_names:
        rows = _gap_rows(gaps, name)
        if rows:
            out.append(f"<h3>{esc(name)}</h3>" + _table(header, rows))
    return "".join(out)


def _bar(row: TimeRow) -> str:
    if not math.isfinite(row.time) or row.time <= 0:
        return ""
    parts = [
        ("data", row.data_wait),
        ("compute", row.compute),
        ("eval", row.eval),
        ("other", row.other),
    ]
    spans = "".join(
        f'<span class="{cls}" style="width:{100 * max(v, 0.0) / row.time:.1f}%"></span>'
        for cls, v in parts
        if math.isfinite(v) and v > 0
    )
    return f'<div class="bar" title="data / compute / eval / other">{spans}</div>'


def _time_section(run: Run) -> str:
    rows = time_table(run.history)
    if not rows:
        return "<p class=note>No epoch has ended yet.</p>"
    body = [
        [
            str(r.epoch),
            seconds(r.time),
            seconds(r.data_wait),
            num(100 * r.data_share, 1),
            seconds(r.compute),
            seconds(r.eval),
            seconds(r.other),
            _bar(r),
        ]
        for r in rows
    ]
    key = (
        '<p class="key note">'
        '<span class="data"></span>waiting for data<span class="compute"></span>training '
        'steps<span class="eval"></span>validation and train_eval passes'
        '<span class="other"></span>other (display, checkpoints)</p>'
    )
    header = [
        "epoch",
        "wall (s)",
        "data wait (s)",
        "data %",
        "compute (s)",
        "eval (s)",
        "other (s)",
        "",
    ]
    return _table(header, body) + key


def _forecast_section(rows: list[ForecastRow], metric: str) -> str:
    if not rows:
        return "<p class=note>No forecast: fewer than two epochs have batches.</p>"
    body = []
    for r in rows:
        f, c = r.forecast, r.check
        tol = "" if not math.isfinite(f.tolerance) else f"± {num(f.tolerance)}"
        verdict = ""
        if c is not None:
            verdict = "as forecast" if c.as_forecast else f"not as forecast ({signed(c.error)})"
        body.append(
            [
                str(f.epoch),
                num(f.reported),
                f"{num(f.expected)} {tol}",
                signed(f.jump),
                "" if c is None else num(c.observed),
                "" if c is None else signed(c.observed - f.reported),
                esc(verdict) if c is not None else "<span class=note>not yet</span>",
            ]
        )
    intro = (
        f"<p>At each epoch end the now estimate forecasts what the next epoch's first batches "
        f"will show for <b>{esc(metric)}</b> (the mean restarts there); the check compares "
        "it with what they showed.</p>"
    )
    header = [
        "epoch",
        "mean before",
        "forecast",
        "forecast jump",
        "observed",
        "observed jump",
        "check",
    ]
    return intro + _table(header, body)


def _settings_section(settings: Mapping[str, Any]) -> str:
    out = []
    for group, values in settings.items():
        if not values:
            continue
        items = "".join(
            f"<dt>{esc(k)}</dt><dd>{esc(v if isinstance(v, str) else json.dumps(v, default=str))}</dd>"
            for k, v in values.items()
        )
        out.append(f"<h3>{esc(group)}</h3><dl>{items}</dl>")
    return "".join(out)


def render_page(run: Run, charts: Sequence[tuple[str, bytes]], title: str | None = None) -> str:
    """The whole page as text.

    Args:
        run: the run (`fitlens.report.reader`).
        charts: ``(caption, SVG bytes)`` pairs, shown in order.
        title: the page's title (default: the run's source).
    """
    f = run.facts
    name = title or f.source
    warnings = (
        "<ul class=warn>" + "".join(f"<li>{esc(w)}</li>" for w in f.warnings) + "</ul>"
        if f.warnings
        else "<p class=note>None.</p>"
    )
    metric = headline(run.history)
    data = json_ready({"epochs": run.history.epochs_table(), "params": run.history.params})
    sections = [
        ("How the run ended", _status(run)),
        ("Warnings", warnings),
        ("Charts", charts_html(charts) or "<p class=note>No batch recorded yet.</p>"),
        ("Epochs", _epochs_section(run)),
        ("Gap decomposition", _gaps_section(run)),
        ("Where the time went", _time_section(run)),
        ("Forecasts of the epoch-start jump", _forecast_section(forecasts(run.history), metric)),
        ("Settings", _settings_section(f.settings)),
    ]
    return page(
        f"fitlens report: {name}",
        f"fitlens report: <code>{esc(name)}</code>",
        f"{len(run.history.epoch)} epochs ended, {len(run.history.batches)} "
        "batches recorded. Made by fitlens; opens without network.",
        sections,
        data=("fitlens-run", data),
    )


#: The caption under the chart.
CHART_CAPTION = (
    "Per metric: each batch's value (grey), the epoch's running mean as Keras shows it "
    "(solid), the now estimate (dashed), validation (circles) and train_eval passes "
    "(triangles) at epoch ends, the forecast of the next epoch's first batches (diamond) "
    "and what they showed (cross). x: epochs."
)


def chart_figure(run: Run, progress: Callable[[str], None] | None = None, bins: int = 1000) -> Any:
    """The run's chart (a matplotlib figure, one panel per metric), or None without batches.

    Raises:
        fitlens.report.plot.PlotUnavailable: Without matplotlib.
    """
    from fitlens.report.charts import history_panels
    from fitlens.report.plot import figure

    if not len(run.history.batches):
        return None
    if progress:
        progress(f"computing curves over {len(run.history.batches)} batches")
    panels = history_panels(run.history, bins=bins)
    if progress:
        progress(f"drawing {len(panels)} panels")
    return figure(panels, bins=bins)


__all__ = ["CHART_CAPTION", "chart_figure", "esc", "json_block", "render_page"]
