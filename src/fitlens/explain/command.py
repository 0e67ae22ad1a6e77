"""`fitlens explain LOG`: parse -> reconstruct -> explain -> print.

User errors (missing file, empty or binary input, no progress lines, bad options) become one line
on stderr starting with ``fitlens explain: `` and exit code 2, never a traceback.

A big log (from :data:`PROGRESS_BYTES` up) gets a line on stderr per tenth read (per
:data:`PROGRESS_BYTES` from a pipe, whose size is unknown); ``--quiet`` silences those and the
notes about written files, leaving errors only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO, Protocol

from fitlens.explain.analysis import EpochResult, Options, analyze
from fitlens.explain.epochs import split_epochs
from fitlens.explain.jumps import Boundary, explain_all, is_training, prepare
from fitlens.explain.parse import ParseStats, iter_records, read_chunks
from fitlens.explain.report import EpochSummary, summarize
from fitlens.explain.writer import Explained, ReportWriter

if TYPE_CHECKING:
    from fitlens.explain.html import PageWriter
    from fitlens.explain.plot import ChartData

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130
#: Inputs from this size up get progress lines on stderr (bytes; also the step on a pipe).
PROGRESS_BYTES = 50_000_000
#: Epochs analysed together (:func:`fitlens.explain.jumps.prepare`): at most this many, and
#: no more once they hold :data:`BATCH_DISPLAYS` displays (memory stays flat).
BATCH_EPOCHS = 128
#: Displays (all metrics) that close a batch of epochs.
BATCH_DISPLAYS = 65_536


class UserError(Exception):
    """An input or usage problem, reported as one line without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(
        prog="fitlens explain",
        description="Read a Keras training log and explain every jump between epochs, with "
        "bounds that provably contain the true values.",
    )
    parser.add_argument("log", help="the log file, or - for standard input")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON (schema fitlens.explain/2; per-epoch summaries)",
    )
    parser.add_argument(
        "--plot",
        metavar="OUT.png",
        help="also draw a plot (.png, .pdf, .svg; needs fitlens[plot])",
    )
    parser.add_argument(
        "--html",
        metavar="OUT.html",
        help="also write the explanation as one self-contained page (no network, no script; "
        "the chart needs fitlens[plot])",
    )
    parser.add_argument(
        "--windows",
        action="store_true",
        help="put every display and reconstructed window in the JSON (default: per-epoch "
        "summaries)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="target half-width of each reconstructed window, in the metric's units "
        "(default: 100 x the display's rounding, i.e. 0.005 for 4 decimals)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="N",
        help="training samples per epoch; with --batch-size gives the last batch's size, which "
        "Keras 3 and tf.keras logs do not show (default: allow any size)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, metavar="B", help="samples per full batch"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress lines on stderr (a big log gets one per tenth read) and no notes "
        "about files written; errors only",
    )
    return parser


def _open(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # closed by the caller
    except FileNotFoundError:
        raise UserError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory; expected a log file") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None


class ReadProgress:
    """Says on stderr how far a big input has been read: a line per tenth of a file of
    :data:`PROGRESS_BYTES` or more, a line per :data:`PROGRESS_BYTES` of a pipe.

    Args:
        name: The input's name for the lines.
        size: The input's size in bytes, if known (a regular file).
        say: Where the lines go (one call per line).
    """

    def __init__(self, name: str, size: int | None, say: Callable[[str], None]) -> None:
        self.name = name
        self.size = size
        self.say = say
        self.start = time.perf_counter()
        self.shown = 0
        self.epochs = 0

    def __call__(self, done: int) -> None:
        """Note that ``done`` bytes have been read."""
        if self.size is not None:
            if self.size < PROGRESS_BYTES:
                return
            tenth = done * 10 // self.size
            if tenth > self.shown:
                self.shown = tenth
                self._line(
                    f"read {tenth * 10}% of {self.name} ({done / 1e6:.0f} MB), "
                    f"{self.epochs} epoch(s) so far"
                )
        elif done // PROGRESS_BYTES > self.shown:
            self.shown = done // PROGRESS_BYTES
            self._line(f"read {done / 1e6:.0f} MB of {self.name}, {self.epochs} epoch(s) so far")

    def finish(self) -> None:
        """A last line, when any came before it."""
        if self.shown:
            self._line(f"done: {self.epochs} epoch(s)")

    def _line(self, text: str) -> None:
        elapsed = time.perf_counter() - self.start
        self.say(f"fitlens explain: [{elapsed:6.1f}s] {text}")


def _size(stream: BinaryIO) -> int | None:
    """The size of a regular file behind ``stream``, else None (a pipe, a terminal)."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # BytesIO has no descriptor
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _counted(chunks: Iterator[bytes], progress: ReadProgress) -> Iterator[bytes]:
    done = 0
    for chunk in chunks:
        done += len(chunk)
        progress(done)
        yield chunk


def _checked_chunks(stream: BinaryIO, name: str) -> Iterator[bytes]:
    chunks = read_chunks(stream)
    try:
        first = next(chunks)
    except StopIteration:
        raise UserError(f"{name} is empty; expected Keras training output") from None
    except OSError as err:
        raise UserError(f"cannot read {name}: {err}") from None
    if b"\x00" in first[:65536]:
        raise UserError(f"{name} looks like a binary file, not a text log")
    return itertools.chain([first], chunks)


def _prepared(
    results: Iterator[EpochResult], progress: ReadProgress | None
) -> Iterator[EpochResult]:
    """``results`` in order, each batch of them put through :func:`prepare` before its first
    is handed on.

    ``progress`` counts epochs as they are read, as without batches.
    """
    batch: list[EpochResult] = []
    displays = 0
    for result in results:
        batch.append(result)
        if progress is not None:
            progress.epochs += 1
        # At most one display per step and metric.
        displays += result.epoch.last_step * len(result.metrics)
        if len(batch) >= BATCH_EPOCHS or displays >= BATCH_DISPLAYS:
            prepare(batch)
            yield from batch
            batch, displays = [], 0
    prepare(batch)
    yield from batch


def explain_stream(
    stream: BinaryIO,
    name: str,
    options: Options,
    *,
    writer: Sink | None = None,
    keep_windows: bool = False,
    keep_results: bool = False,
    progress: ReadProgress | None = None,
    chart: ChartData | None = None,
) -> Explained:
    """Run the whole pipeline on a binary stream, a batch of epochs at a time.

    Epochs are analysed in batches of at most :data:`BATCH_EPOCHS` (fewer when they hold
    :data:`BATCH_DISPLAYS` displays): :func:`fitlens.explain.jumps.prepare` computes their
    windows with a few array passes over the whole batch, bit for bit what one epoch at a time
    gives. Then each epoch is reduced to a summary as soon as its boundary is explained, and
    handed to ``writer`` if there is one (then the returned object holds no epochs: memory stays
    flat, one batch and the previous epoch).

    Args:
        stream: The log's bytes.
        name: The input's name for messages.
        options: Tolerance and batch sizes.
        writer: Takes each epoch's summary and boundaries as they come.
        keep_windows: Keep every display and window in the summaries (``--windows``).
        keep_results: Keep every full reconstruction too (library use; memory grows with the
            log).
        progress: Told how many bytes have been read and epochs explained, as they are.
        chart: Fed every epoch's reconstruction (``--plot``, ``--html``; bounded memory).

    Raises:
        UserError: When the input holds no usable Keras progress output.
    """
    stats = ParseStats()
    chunks = _checked_chunks(stream, name)
    if progress is not None:
        chunks = _counted(chunks, progress)
    records = iter_records(chunks, stats)
    explained = Explained(name, [], [], stats, options, [] if keep_results else None)
    previous: EpochResult | None = None
    previous_training = False
    headers_seen = False
    any_metric = False
    epochs = 0
    for result in _prepared(analyze(split_epochs(records), options), progress):
        epochs += 1
        training = is_training(result, headers_seen)
        headers_seen = headers_seen or result.epoch.header is not None
        any_metric = any_metric or bool(result.metrics)
        new: list[Boundary] = []
        if previous is not None and previous_training and training:
            new = explain_all(previous, result)
        summary = summarize(result, training, keep_windows)
        if writer is not None:
            writer.add(summary, new)
        else:
            explained.boundaries.extend(new)
            explained.epochs.append(summary)
        if explained.results is not None:
            explained.results.append(result)
        if chart is not None:
            chart.add(result)
        previous, previous_training = result, training
    if not epochs:
        if stats.rejected:
            raise UserError(
                f"{name}: every progress line was garbled or had absurd numbers "
                f"(first at line {stats.first_rejected_line})"
            )
        raise UserError(
            f"{name}: no Keras progress lines found (expected lines like "
            "'12/406 [====>...] - ETA: 5s - loss: 0.3539')"
        )
    if not any_metric:
        raise UserError(f"{name}: progress lines found but none shows a metric value")
    return explained


class Sink(Protocol):
    """What takes each epoch's summary and the boundaries that end at it."""

    def add(self, epoch: EpochSummary, boundaries: Sequence[Boundary]) -> None:
        """Take the next epoch."""


class _Tee:
    """Hands each epoch to several sinks (the report on stdout and the page)."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def add(self, epoch: EpochSummary, boundaries: Sequence[Boundary]) -> None:
        for sink in self.sinks:
            sink.add(epoch, boundaries)


def _write_html(
    page: PageWriter,
    chart: ChartData,
    explained: Explained,
    path: str,
    say: Callable[[str], None],
) -> None:
    from fitlens.explain.html import CHART_CAPTION, ENVELOPE_CAPTION
    from fitlens.explain.plot import PlotError, chart_figure

    charts: list[tuple[str, bytes]] = []
    missing = ""
    try:
        fig = chart_figure(chart, explained.source)
    except PlotError as err:
        missing = f" without its chart ({err})"
    else:
        from fitlens.report.plot import close, render

        caption = CHART_CAPTION + (ENVELOPE_CAPTION if chart.enveloped else "")
        try:
            charts.append((caption, render(fig, "svg")))
        finally:
            close(fig)
    try:
        with open(path, "w", encoding="utf-8") as out:
            page.finish(explained.stats, out, charts)
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None
    finally:
        page.close()
    say(f"fitlens explain: page written to {path}{missing}")


def main(argv: Sequence[str]) -> int:
    """Run `fitlens explain`; returns the exit code (0 ok, 2 user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:  # argparse already printed usage and the error
        return int(exit_.code or 0) if exit_.code in (0, None) else EXIT_USAGE

    def say(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        try:
            options = Options(args.tolerance, args.samples, args.batch_size)
        except ValueError as err:
            raise UserError(str(err)) from None
        if args.plot:
            from fitlens.explain.plot import PlotError, check_plot_path

            try:
                check_plot_path(args.plot)
            except PlotError as err:
                raise UserError(str(err)) from None
        if args.html:
            from fitlens.explain.html import HtmlPathError, check_html_path

            try:
                check_html_path(args.html)
            except HtmlPathError as err:
                raise UserError(str(err)) from None
        name = "stdin" if args.log == "-" else args.log
        # Everything streams: the report, the page and the chart each take one epoch at a time.
        writer = ReportWriter(name, options, as_json=args.json)
        page = None
        if args.html:
            from fitlens.explain.html import PageWriter

            page = PageWriter(name, options)
        chart = None
        if args.plot or args.html:
            from fitlens.explain.plot import ChartData

            chart = ChartData()
        stream = _open(args.log)
        progress = ReadProgress(name, _size(stream), say)
        try:
            explained = explain_stream(
                stream,
                name,
                options,
                writer=writer if page is None else _Tee(writer, page),
                keep_windows=args.windows,
                progress=progress,
                chart=chart,
            )
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        progress.finish()
        if args.plot and chart is not None:
            from fitlens.explain.plot import PlotError, save_chart

            try:
                save_chart(chart, name, args.plot)
            except PlotError as err:
                raise UserError(str(err)) from None
            except OSError as err:
                raise UserError(f"cannot write {args.plot}: {err.strerror}") from None
            say(f"fitlens explain: plot written to {args.plot}")
        if page is not None and chart is not None:
            _write_html(page, chart, explained, args.html, say)
    except UserError as err:
        print(f"fitlens explain: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fitlens explain: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        writer.finish(explained.stats, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left early (`fitlens explain log | head`): not an error. Point stdout at
        # devnull so the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK
