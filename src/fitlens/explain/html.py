"""`--html OUT.html`: the explanation of a Keras log as one self-contained page.

The page is built by `fitlens.report.page` (the shell ``fitlens report`` uses: no network, no
script, a Content-Security-Policy, the chart inlined as an SVG image) from the same sentences
as the text report. Every text that comes from the log or the command line (metric names, the
file path, epoch headers) goes through `esc`. Imports no torch and no matplotlib (the chart is
drawn by the caller, see `fitlens.explain.plot.explain_figure`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import TextIO

from fitlens.explain.analysis import Options
from fitlens.explain.jumps import Boundary
from fitlens.explain.records import ParseStats
from fitlens.explain.report import (
    EpochSummary,
    bottom_line,
    boundary_lines,
    epoch_lines,
    fmt,
    pct,
    rules_text,
    signed,
    signed_bound,
)
from fitlens.explain.writer import Explained, ReportWriter, by_epoch, copy, spool
from fitlens.report.page import (
    DATA_END,
    PAGE_END,
    SECTION_END,
    JsonSafeWriter,
    charts_html,
    data_start,
    esc,
    page_start,
    section_start,
)

#: The caption under the chart.
CHART_CAPTION = (
    "Per running-mean metric: the means the log showed (black dots), each reconstructed "
    "window's mean (solid) and its provable bounds (band); dotted lines mark epoch boundaries. "
    "x: position in the log, epochs end to end."
)
#: Added to the caption when the log has more windows than the chart has columns.
ENVELOPE_CAPTION = (
    " The log has more windows than the chart has columns: each column shows the lowest and "
    "highest shown mean and window mean over it (a min-max envelope), and the band the lowest "
    "low and highest high bound."
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


def _verdict_row(b: Boundary) -> str:
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
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


_VERDICT_HEADER = (
    "boundary",
    "metric",
    "shown end mean",
    "next start",
    "jump",
    "averaging lag explains",
    "share of the jump",
    "verdict",
)


class PageWriter:
    """Builds the page one epoch at a time: memory stays flat however long the log is.

    Every piece (bottom lines, verdict rows and paragraphs, epoch lines, the JSON report the
    page carries) goes to a temporary file as its epoch arrives, and `finish` copies them into
    the page in order, as `fitlens.explain.writer.ReportWriter` does for the text report.

    Args:
        source: The input's name.
        options: The options the log was read with.
    """

    def __init__(self, source: str, options: Options) -> None:
        self.source = source
        # The JSON block: the --json report, with json.dumps's default separators.
        self.report = ReportWriter(source, options, as_json=True, separators=(", ", ": "))
        self._bottom = spool()
        self._rows = spool()
        self._details = spool()
        self._epochs = spool()
        self._previous: EpochSummary | None = None

    def add(self, epoch: EpochSummary, boundaries: Sequence[Boundary]) -> None:
        """Take the next epoch and the boundaries that end at it (from the previous epoch)."""
        self.report.add(epoch, boundaries)
        for b in boundaries:
            self._bottom.write(f"<li>{esc(bottom_line(b))}</li>")
            self._rows.write(_verdict_row(b))
            if b.reason != "within_rounding" and self._previous is not None:
                self._details.write(_lines(boundary_lines(b, self._previous, epoch)))
        self._epochs.write(_lines(epoch_lines(epoch)))
        self._previous = epoch

    def finish(
        self, stats: ParseStats, out: TextIO, charts: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Write the whole page to ``out`` and release the temporary files.

        Args:
            stats: The parser's counts.
            out: Where the page goes.
            charts: ``(caption, SVG bytes)`` pairs; none leaves a note.
        """
        try:
            self._write(stats, out, charts)
        finally:
            self.close()

    def close(self) -> None:
        """Release the temporary files (`finish` does; call it when not finishing)."""
        self.report.close()
        for s in (self._bottom, self._rows, self._details, self._epochs):
            s.close()

    def _write(self, stats: ParseStats, out: TextIO, charts: Sequence[tuple[str, bytes]]) -> None:
        report = self.report
        note = (
            f"Read {report.epochs} epoch(s) from {stats.progress} progress line(s); "
            f"{stats.other} other line(s) ignored"
            + (f", {stats.rejected} garbled line(s) skipped" if stats.rejected else "")
            + ". Made by fitlens; opens without network."
        )
        out.write(
            page_start(
                f"fitlens explain: {self.source}",
                f"fitlens explain: <code>{esc(self.source)}</code>",
                note,
            )
        )
        out.write(section_start(SECTIONS[0]))
        if report.boundaries:
            out.write("<ul>")
            copy(self._bottom, out)
            out.write("</ul>")
        else:
            out.write(
                "<p class=note>No epoch boundary to explain (the log holds fewer than two "
                "training epochs).</p>"
            )
        out.write(SECTION_END + section_start(SECTIONS[1]))
        if report.boundaries:
            head = "".join(f"<th>{esc(h)}</th>" for h in _VERDICT_HEADER)
            out.write(f"<table><thead><tr>{head}</tr></thead><tbody>")
            copy(self._rows, out)
            out.write("</tbody></table>")
            copy(self._details, out)
        else:
            out.write("<p class=note>No epoch boundary to explain.</p>")
        assumptions = [
            report.last_batch_text(),
            "Assumptions: " + "; ".join(report.assumptions()) + ".",
            rules_text(),
        ]
        out.write(SECTION_END + section_start(SECTIONS[2]) + _same_batches(report))
        out.write(SECTION_END + section_start(SECTIONS[3]))
        out.write("".join(f"<p>{esc(line)}</p>" for line in assumptions))
        out.write(
            SECTION_END
            + section_start(SECTIONS[4])
            + (
                charts_html(charts)
                or "<p class=note>No chart: it needs matplotlib (pip install 'fitlens[plot]') "
                "and a running-mean metric.</p>"
            )
        )
        out.write(SECTION_END + section_start(SECTIONS[5]))
        copy(self._epochs, out)
        out.write(SECTION_END + data_start("fitlens-explain"))
        report.write_json(stats, JsonSafeWriter(out))
        out.write(DATA_END + PAGE_END)


def _same_batches(writer: ReportWriter) -> str:
    lines = writer.same_first_batches_lines()
    if not lines:
        return (
            "<p class=note>Not a loop of fit calls (the log does not repeat 'Epoch 1/1'), so "
            "epochs need not start with the same batches.</p>"
        )
    return _lines(lines)


def render_html(explained: Explained, charts: Sequence[tuple[str, bytes]] = ()) -> str:
    """The whole page as text (`PageWriter` fed with every epoch ``explained`` holds).

    Args:
        explained: the log, explained with its epochs and boundaries held in memory
            (`fitlens.explain.command.explain_stream` without a writer).
        charts: ``(caption, SVG bytes)`` pairs (see `explain_figure`); none leaves a note.
    """
    writer = PageWriter(explained.source, explained.options)
    for e, into in zip(explained.epochs, by_epoch(explained), strict=True):
        writer.add(e, into)
    out = io.StringIO()
    writer.finish(explained.stats, out, charts)
    return out.getvalue()


__all__ = [
    "CHART_CAPTION",
    "ENVELOPE_CAPTION",
    "SECTIONS",
    "HtmlPathError",
    "PageWriter",
    "check_html_path",
    "render_html",
]
