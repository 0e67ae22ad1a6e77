"""`fitlens explain LOG`: parse -> reconstruct -> explain -> print.

User errors (missing file, empty or binary input, no progress lines, bad options) become one line
on stderr starting with ``fitlens explain: `` and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from fitlens.explain.analysis import EpochResult, Options, analyze
from fitlens.explain.epochs import split_epochs
from fitlens.explain.jumps import Boundary, explain_all, is_training
from fitlens.explain.parse import ParseStats, iter_records, read_chunks
from fitlens.explain.report import summarize
from fitlens.explain.writer import Explained, ReportWriter, replay

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130


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


def explain_stream(
    stream: BinaryIO,
    name: str,
    options: Options,
    *,
    writer: ReportWriter | None = None,
    keep_windows: bool = False,
    keep_results: bool = False,
) -> Explained:
    """Run the whole pipeline on a binary stream, one epoch at a time.

    Only the previous epoch's reconstruction is held (for its boundary with the next); every
    epoch is reduced to a summary as soon as its boundary is explained, and handed to
    ``writer`` if there is one (then the returned object holds no epochs: memory stays flat).

    Args:
        stream: The log's bytes.
        name: The input's name for messages.
        options: Tolerance and batch sizes.
        writer: Takes each epoch's summary and boundaries as they come.
        keep_windows: Keep every display and window in the summaries (``--windows``).
        keep_results: Keep every full reconstruction too (``--plot``, ``--html``).

    Raises:
        UserError: When the input holds no usable Keras progress output.
    """
    stats = ParseStats()
    records = iter_records(_checked_chunks(stream, name), stats)
    explained = Explained(name, [], [], stats, options, [] if keep_results else None)
    previous: EpochResult | None = None
    previous_training = False
    headers_seen = False
    any_metric = False
    epochs = 0
    for result in analyze(split_epochs(records), options):
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


def _write_html(explained: Explained, path: str) -> None:
    from fitlens.explain.html import CHART_CAPTION, render_html
    from fitlens.explain.plot import PlotError, explain_figure

    charts: list[tuple[str, bytes]] = []
    missing = ""
    try:
        fig = explain_figure(explained)
    except PlotError as err:
        missing = f" without its chart ({err})"
    else:
        from fitlens.report.plot import close, render

        try:
            charts.append((CHART_CAPTION, render(fig, "svg")))
        finally:
            close(fig)
    try:
        with open(path, "w", encoding="utf-8") as out:
            out.write(render_html(explained, charts))
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror}") from None
    print(f"fitlens explain: page written to {path}{missing}", file=sys.stderr)


def main(argv: Sequence[str]) -> int:
    """Run `fitlens explain`; returns the exit code (0 ok, 2 user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:  # argparse already printed usage and the error
        return int(exit_.code or 0) if exit_.code in (0, None) else EXIT_USAGE
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
        # The page needs every epoch and boundary at once, so --html holds them in memory and
        # the text or JSON report is replayed from them afterwards.
        writer = None if args.html else ReportWriter(name, options, as_json=args.json)
        stream = _open(args.log)
        try:
            explained = explain_stream(
                stream,
                name,
                options,
                writer=writer,
                keep_windows=args.windows,
                keep_results=bool(args.plot or args.html),
            )
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        if writer is None:
            writer = replay(explained, as_json=args.json)
        if args.plot:
            from fitlens.explain.plot import PlotError, save_plot

            try:
                save_plot(explained, args.plot)
            except PlotError as err:
                raise UserError(str(err)) from None
            except OSError as err:
                raise UserError(f"cannot write {args.plot}: {err.strerror}") from None
            print(f"fitlens explain: plot written to {args.plot}", file=sys.stderr)
        if args.html:
            _write_html(explained, args.html)
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
