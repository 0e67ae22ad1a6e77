"""Assemble the report while the log streams: memory stays flat however long the log is.

The bottom line comes first in the report but is known only at the end, so every piece (bottom
lines, epoch lines, boundary paragraphs, JSON objects) is written to a temporary file as its
epoch arrives and the files are copied out in report order at the end. What stays in memory is
a few counters and, for a loop of ``fit`` calls, the first batches' values of each epoch.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, TextIO

from fitlens.explain.analysis import EpochResult, Options
from fitlens.explain.jumps import Boundary
from fitlens.explain.records import ParseStats
from fitlens.explain.report import (
    SCHEMA,
    WEIGHTING_TEXT,
    EpochSummary,
    JsonText,
    bottom_line,
    boundary_lines,
    epoch_json,
    epoch_lines,
    fmt,
    jump_share,
    rules_text,
)


@dataclass
class Explained:
    """A whole explained log held in memory (tests, ``--plot``, library use).

    Attributes:
        source: The input's name (a path, or ``stdin``).
        epochs: Per-epoch summaries, in log order.
        boundaries: Jump explanations, in log order.
        stats: Parser counts.
        options: The options the log was read with.
        results: The full per-epoch reconstructions, kept only when asked for (``--plot``).
    """

    source: str
    epochs: list[EpochSummary]
    boundaries: list[Boundary]
    stats: ParseStats
    options: Options = field(default_factory=Options)
    results: list[EpochResult] | None = None


class ReportWriter:
    """Builds the text or JSON report one epoch at a time.

    Args:
        source: The input's name.
        options: The options the log was read with.
        as_json: Write the JSON report instead of text.
    """

    def __init__(
        self,
        source: str,
        options: Options,
        *,
        as_json: bool = False,
        separators: tuple[str, str] = (",", ":"),
    ) -> None:
        self.source = source
        self.options = options
        self.as_json = as_json
        self.separators = separators
        self._encode: Callable[[Any], str] | None = None
        self._json: JsonText | None = None
        if as_json:  # the text report never loads the json package (start-up time)
            import json

            # One encoder for every item: json.dumps with options builds a new one per call.
            self._encode = json.JSONEncoder(separators=separators, allow_nan=False).encode
            self._json = JsonText(separators)  # the same text, without building the objects
        self.epochs = 0
        self.boundaries = 0
        self._bottom = spool()
        self._epochs = spool()
        self._details = spool()
        self._weightings: set[str] = set()
        self._mixes_epoch_mean = False
        self._last_batches: set[str] = set()
        self._mismatch = False
        self._fit_loop = True  # every training epoch so far printed 'Epoch 1/1'
        self._training = 0
        self._firsts: dict[str, list[list[tuple[float, float]]]] = {}
        self._previous: EpochSummary | None = None
        self._detail_from = 0
        self._started: set[int] = set()

    def add(self, epoch: EpochSummary, boundaries: Sequence[Boundary]) -> None:
        """Take the next epoch and the boundaries that end at it (from the previous epoch)."""
        self.epochs += 1
        self._weightings.add(epoch.weighting)
        self._mixes_epoch_mean |= epoch.weighting == "counter" and epoch.style == "bracket"
        self._last_batches.add(epoch.last_batch)
        self._mismatch |= epoch.sizes_mismatch
        if epoch.training:
            self._training += 1
            self._fit_loop &= epoch.header == "Epoch 1/1"
            if not self._fit_loop:
                # Only a loop of fit calls shows the first batches: none to keep (flat memory).
                self._firsts.clear()
            else:
                for name, m in epoch.metrics.items():
                    if m.kind == "running_mean":
                        rows = [(w.value, (w.high - w.low) / 2) for w in m.first_batches]
                        self._firsts.setdefault(name, []).append(rows)
        before = self._previous
        if self._json is not None and self._encode is not None:
            text = self._json.epoch(epoch)
            if text is None:  # --windows: every window, through the encoder
                text = self._encode(epoch_json(epoch))
            self._text_item(self._epochs, text)
            for b in boundaries:
                text, line = self._json.boundary(b)
                self._text_item(self._details, text)
                self._text_item(self._bottom, line)
        else:
            # One write per spool and epoch: each write to a spooled file has its own cost.
            self._epochs.write("\n" + "\n".join(epoch_lines(epoch)) + "\n")
            bottom, details = [], []
            for b in boundaries:
                share = None  # computed once: the bottom line and the paragraph both show it
                if b.reason not in ("within_rounding", "no_view_inside"):
                    share = jump_share(b)
                bottom.append("  " + bottom_line(b, share) + "\n")
                if b.reason == "within_rounding" or before is None:
                    continue
                if self._detail_from != b.from_epoch:
                    self._detail_from = b.from_epoch
                    details.append(f"Epoch {b.from_epoch} -> {b.from_epoch + 1}\n")
                details.append("\n".join(boundary_lines(b, before, epoch, share)) + "\n")
            if bottom:
                self._bottom.write("".join(bottom))
            if details:
                self._details.write("".join(details))
        self.boundaries += len(boundaries)
        self._previous = epoch

    def _text_item(self, spool: Spool, text: str) -> None:
        # Whether the list has items already, kept here: tell() on a text file on disk is slow.
        if id(spool) in self._started:
            text = self.separators[0] + text
        else:
            self._started.add(id(spool))
        spool.write(text)

    def assumptions(self) -> list[str]:
        """The assumptions behind every bound, in plain words."""
        out = [
            "each shown value is the running mean since the epoch start, rounded to the digits "
            "shown"
        ]
        out.extend(WEIGHTING_TEXT[w] for w in sorted(self._weightings))
        if self._mixes_epoch_mean:
            out.append(
                "Keras 2.0-2.3 mix the epoch mean into an epoch's last line; with equal batch "
                "sizes that changes nothing"
            )
        return out

    def last_batch_text(self) -> str:
        """One line naming the assumption about each epoch's last batch."""
        options = self.options
        if "any" in self._last_batches:
            text = (
                "Last batch: the log does not show batch sizes, so every window that ends an "
                "epoch holds for any last batch from 1 sample to a full batch"
            )
            if self._mismatch:
                return text + (
                    f" (--samples {options.samples} --batch-size {options.batch_size} do not "
                    "give the steps the log shows, so they were not used)."
                )
            return text + " (give --samples N --batch-size B to narrow them)."
        if options.samples is not None and options.batch_size is not None:
            size = (
                options.samples - (options.samples - 1) // options.batch_size * options.batch_size
            )
            return (
                f"Last batch: {size} of {options.batch_size} samples (from --samples "
                f"{options.samples} --batch-size {options.batch_size})."
            )
        return (
            "Last batch: no assumption needed (the counter is the weight, or no epoch finished "
            "its bar)."
        )

    def same_first_batches(self) -> dict[str, list[list[dict[str, float]]]] | None:
        """For a loop of ``fit`` calls: each metric's first batches, epoch by epoch.

        Returns:
            ``{metric: [[{"value", "half_width"} per first batch] per training epoch]}``, or
            ``None`` unless the log repeats ``Epoch 1/1`` (one ``fit`` call per epoch).
        """
        if not (self._fit_loop and self._training > 1):
            return None
        return {
            name: [[{"value": v, "half_width": h} for v, h in rows] for rows in per_epoch]
            for name, per_epoch in self._firsts.items()
        }

    def same_first_batches_lines(self) -> list[str]:
        """The text report's lines comparing the same first batches across epochs (or none)."""
        table = self.same_first_batches()
        if table is None:
            return []
        lines = [
            "Same data at every epoch start: the log repeats 'Epoch 1/1' (one fit call per "
            "epoch), so each epoch begins with the same first batches. The same batches across "
            "epochs:"
        ]
        for name, per_epoch in table.items():
            for i in range(min(len(rows) for rows in per_epoch)):
                moves = " -> ".join(fmt(rows[i]["value"]) for rows in per_epoch)
                width = max(rows[i]["half_width"] for rows in per_epoch)
                lines.append(f"  {name} batch {i + 1}: {moves} (each within ±{round(width, 8):g})")
        lines.append(
            "  A batch that changes between visits measures how much the model improved on the "
            "same data; comparing it with the previous epoch's end level shows whether the first "
            "batches are simply easier."
        )
        return lines

    def finish(self, stats: ParseStats, out: TextIO) -> None:
        """Write the whole report to ``out`` and release the temporary files."""
        try:
            if self.as_json:
                self._finish_json(stats, out)
            else:
                self._finish_text(stats, out)
        finally:
            self.close()

    def close(self) -> None:
        """Release the temporary files (`finish` does; call it when not finishing)."""
        for spool in (self._bottom, self._epochs, self._details):
            spool.close()

    def _finish_text(self, stats: ParseStats, out: TextIO) -> None:
        out.write(
            f"fitlens explain: {self.source}\nRead {self.epochs} epoch(s) from {stats.progress} "
            f"progress line(s); {stats.other} other line(s) ignored"
            + (f", {stats.rejected} garbled line(s) skipped" if stats.rejected else "")
            + ".\n\n"
        )
        if self.boundaries:
            out.write("Bottom line:\n")
            copy(self._bottom, out)
        else:
            out.write(
                "No epoch boundary to explain (the log holds fewer than two training epochs).\n"
            )
        same = self.same_first_batches_lines()
        if same:
            out.write("\n" + "\n".join(same) + "\n")
        out.write("\n" + self.last_batch_text() + "\n")
        out.write("Assumptions: " + "; ".join(self.assumptions()) + ".\n")
        out.write(rules_text() + "\n")
        copy(self._epochs, out)
        if not self._details.empty:
            out.write("\nJumps at epoch boundaries:\n")
            copy(self._details, out)

    def _finish_json(self, stats: ParseStats, out: TextIO) -> None:
        self.write_json(stats, out)
        out.write("\n")

    def write_json(self, stats: ParseStats, out: IO[str] | Any) -> None:
        """Write the JSON report (one object, no line break after it) to ``out`` (anything with
        a ``write``); the temporary files stay open (`close` releases them)."""
        import json

        options = self.options
        head = {
            "schema": SCHEMA,
            "source": self.source,
            "options": {
                "tolerance": options.tolerance,
                "samples": options.samples,
                "batch_size": options.batch_size,
            },
            "assumptions": self.assumptions(),
            "last_batch": self.last_batch_text(),
            "rules": rules_text(),
            "input": {
                "bytes": stats.bytes_read,
                "lines": stats.lines,
                "progress_lines": stats.progress,
                "other_lines": stats.other,
                "rejected_lines": stats.rejected,
            },
            "same_first_batches": self.same_first_batches(),
        }
        item, key = self.separators
        out.write(json.dumps(head, separators=self.separators, allow_nan=False)[:-1])
        for name, spool in (
            ("bottom_line", self._bottom),
            ("epochs", self._epochs),
            ("boundaries", self._details),
        ):
            out.write(f'{item}"{name}"{key}[')
            copy(spool, out)
            out.write("]")
        out.write("}")


class Spool:
    """A text buffer for one part of a report, on disk once it passes :data:`MEMORY` characters.

    Pieces gather in a list; past :data:`MEMORY` characters they go to a temporary file,
    :data:`BATCH` characters at a time (each write to a file has its own cost, and the report
    writes a few short pieces per epoch). The file, and the :mod:`tempfile` module, are only
    made for a report that big: a small one never touches the disk (start-up time).
    """

    #: Characters gathered before they are written to the file, once there is one.
    BATCH = 1 << 16
    #: Characters kept in memory before a temporary file is made (flat memory for any log).
    MEMORY = 4 << 20

    def __init__(self) -> None:
        self._file: IO[str] | None = None
        self._parts: list[str] = []
        self._pending = 0
        self.empty = True

    def write(self, text: str) -> None:
        """Append ``text``."""
        self._parts.append(text)
        self._pending += len(text)
        self.empty = self.empty and not text
        if self._pending >= (self.BATCH if self._file is not None else self.MEMORY):
            self._flush()

    def _flush(self) -> None:
        if self._file is None:
            import tempfile

            self._file = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 (closed by close())
        if self._parts:
            self._file.write("".join(self._parts))
            self._parts, self._pending = [], 0

    def copy_to(self, out: TextIO | Any) -> None:
        """Write everything so far to ``out`` (anything with a ``write``)."""
        if self._file is None:
            if len(self._parts) > 1:
                self._parts = ["".join(self._parts)]
            if self._parts:
                out.write(self._parts[0])
            return
        self._flush()
        self._file.seek(0)
        while chunk := self._file.read(1 << 20):
            out.write(chunk)
        self._file.seek(0, 2)

    def close(self) -> None:
        """Release the file."""
        self._parts = []
        if self._file is not None:
            self._file.close()


def spool() -> Spool:
    """A new, empty :class:`Spool`."""
    return Spool()


def copy(part: Spool, out: TextIO | Any) -> None:
    """Copy a whole `spool` to ``out`` (anything with a ``write``)."""
    part.copy_to(out)


def replay(explained: Explained, as_json: bool = False) -> ReportWriter:
    """A writer fed with every epoch and boundary ``explained`` holds, ready to `finish`."""
    writer = ReportWriter(explained.source, explained.options, as_json=as_json)
    for e, into in zip(explained.epochs, by_epoch(explained), strict=True):
        writer.add(e, into)
    return writer


def by_epoch(explained: Explained) -> list[list[Boundary]]:
    """Per epoch of ``explained.epochs``, the boundaries that end at it (from the previous)."""
    by_end: dict[int, list[Boundary]] = {}
    for b in explained.boundaries:
        by_end.setdefault(b.from_epoch + 1, []).append(b)
    return [by_end.get(e.index, []) for e in explained.epochs]


def _write(explained: Explained, as_json: bool) -> str:
    writer = replay(explained, as_json)
    out = io.StringIO()
    writer.finish(explained.stats, out)
    return out.getvalue()


def render_text(explained: Explained) -> str:
    """The human-readable report: the bottom line first, then the details."""
    return _write(explained, as_json=False)


def to_json(explained: Explained) -> dict[str, Any]:
    """The whole report as a JSON-ready dict with a stable schema."""
    import json

    report: dict[str, Any] = json.loads(_write(explained, as_json=True))
    return report
