"""`--html OUT.html`: the explanation of a Keras log as one self-contained page.

The page is built by `fitlens.report.page` (the shell ``fitlens report`` uses: no network, no
script, a Content-Security-Policy, the chart inlined as an SVG image) from the same sentences
as the text report. Every text that comes from the log or the command line (metric names, the
file path, epoch headers) goes through `esc`. Imports no torch and no matplotlib (the chart is
drawn by the caller, see `fitlens.explain.plot.explain_figure`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from fitlens.explain.jumps import Boundary
from fitlens.explain.report import (
    bottom_line,
    boundary_lines,
    epoch_lines,
    fmt,
    pct,
    rules_text,
    signed,
    signed_bound,
)
from fitlens.explain.writer import Explained, ReportWriter, by_epoch, replay, to_json
from fitlens.report.page import charts_html, esc, page

#: The caption under the chart.
CHART_CAPTION = (
    "Per running-mean metric: the means the log showed (black dots), each reconstructed "
    "window's mean (solid) and its provable bounds (band); dotted lines mark epoch boundaries. "
    "x: position in the log, epochs end to end."
)

#: The page's section headings, in order.
SECTIONS = (
    "Bottom line",
    "Verdicts per boundary",
    "Same batches across epochs",
    "Assumptions and rules",
    "Chart",
    "Epochs",
)


class HtmlPathError(ValueError):
    """``--html`` was given a path it cannot write."""


def check_html_path(path: str) -> None:
    """Refuse a path ``--html`` cannot write, before any work starts.

    Raises:
        HtmlPathError: For a directory, a missing parent folder, or a name not ending in
            ``.html`` or ``.htm``.
    """
    if os.path.isdir(path):
        raise HtmlPathError(f"--html {path} is a directory; expected a file name such as out.html")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise HtmlPathError(f"--html {path}: folder {parent} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".html", ".htm"):
        raise HtmlPathError(
            f"--html {path}: expected a file ending in .html or .htm; received {ext or 'none'}"
        )


def _lines(lines: Sequence[str]) -> str:
    return f"<div class=lines>{esc(chr(10).join(lines))}</div>"


def _verdict_rows(boundaries: Sequence[Boundary]) -> list[str]:
    rows = []
    for b in boundaries:
        cells = [
            f"{b.from_epoch} &rarr; {b.from_epoch + 1}",
            esc(b.metric),
            fmt(b.shown_end_mean),
            fmt(b.next_start),
            signed(b.jump),
            f"[{signed_bound(b.lag_low, False)}, {signed_bound(b.lag_high, True)}]",
            f"{pct(b.fraction_low, False)}-{pct(b.fraction_high, True)}",
            esc(b.verdict.replace("_", " ")),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return rows


def _verdicts(explained: Explained) -> str:
    if not explained.boundaries:
        return "<p class=note>No epoch boundary to explain.</p>"
    header = [
        "boundary",
        "metric",
        "shown end mean",
        "next start",
        "jump",
        "averaging lag explains",
        "share of the jump",
        "verdict",
    ]
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    table = (
        f"<table><thead><tr>{head}</tr></thead><tbody>"
        + "".join(_verdict_rows(explained.boundaries))
        + "</tbody></table>"
    )
    details = []
    epochs = explained.epochs
    for i, into in enumerate(by_epoch(explained)):
        for b in into:
            if b.reason == "within_rounding" or i == 0:
                continue
            details.append(_lines(boundary_lines(b, epochs[i - 1], epochs[i])))
    return table + "".join(details)


def _same_batches(writer: ReportWriter) -> str:
    lines = writer.same_first_batches_lines()
    if not lines:
        return (
            "<p class=note>Not a loop of fit calls (the log does not repeat 'Epoch 1/1'), so "
            "epochs need not start with the same batches.</p>"
        )
    return _lines(lines)


def render_html(explained: Explained, charts: Sequence[tuple[str, bytes]] = ()) -> str:
    """The whole page as text.

    Args:
        explained: the log, explained with its epochs and boundaries held in memory
            (`fitlens.explain.command.explain_stream` without a writer).
        charts: ``(caption, SVG bytes)`` pairs (see `explain_figure`); none leaves a note.
    """
    writer = replay(explained)
    try:
        bottom = [bottom_line(b) for b in explained.boundaries]
        assumptions = [
            writer.last_batch_text(),
            "Assumptions: " + "; ".join(writer.assumptions()) + ".",
            rules_text(),
        ]
        same = _same_batches(writer)
    finally:
        writer.close()
    stats = explained.stats
    note = (
        f"Read {len(explained.epochs)} epoch(s) from {stats.progress} progress line(s); "
        f"{stats.other} other line(s) ignored"
        + (f", {stats.rejected} garbled line(s) skipped" if stats.rejected else "")
        + ". Made by fitlens; opens without network."
    )
    sections = [
        (
            SECTIONS[0],
            "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in bottom) + "</ul>"
            if bottom
            else "<p class=note>No epoch boundary to explain (the log holds fewer than two "
            "training epochs).</p>",
        ),
        (SECTIONS[1], _verdicts(explained)),
        (SECTIONS[2], same),
        (SECTIONS[3], "".join(f"<p>{esc(line)}</p>" for line in assumptions)),
        (
            SECTIONS[4],
            charts_html(charts)
            or "<p class=note>No chart: it needs matplotlib (pip install 'fitlens[plot]') and "
            "a running-mean metric.</p>",
        ),
        (SECTIONS[5], "".join(_lines(epoch_lines(e)) for e in explained.epochs)),
    ]
    return page(
        f"fitlens explain: {explained.source}",
        f"fitlens explain: <code>{esc(explained.source)}</code>",
        note,
        sections,
        data=("fitlens-explain", to_json(explained)),
    )


__all__ = ["CHART_CAPTION", "SECTIONS", "HtmlPathError", "check_html_path", "render_html"]
