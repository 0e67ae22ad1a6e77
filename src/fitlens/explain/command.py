"""`fitlens explain LOG`: parse -> reconstruct -> explain -> print.

User errors (missing file, empty or binary input, no progress lines, bad options) become one line
on stderr starting with ``fitlens explain: `` and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from fitlens.explain.analysis import Options, analyze
from fitlens.explain.epochs import split_epochs
from fitlens.explain.jumps import boundaries
from fitlens.explain.parse import ParseStats, iter_records, read_chunks
from fitlens.explain.report import Explained, render_text, to_json

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
    parser.add_argument("--json", action="store_true", help="print JSON (fitlens.explain/1)")
    parser.add_argument("--plot", metavar="OUT.png", help="also draw a plot (needs fitlens[plot])")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="target half-width of each reconstructed window, in the metric's units "
        "(default: 100 x the display's rounding, i.e. 0.005 for 4 decimals)",
    )
    parser.add_argument(
        "--min-last-batch",
        type=float,
        default=1.0,
        metavar="FRACTION",
        help="smallest possible last batch of an epoch, as a fraction of a full batch, for logs "
        "weighted by samples (Keras 3, tf.keras); default 1 (all batches full)",
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


def explain_stream(stream: BinaryIO, name: str, options: Options) -> Explained:
    """Run the whole pipeline on a binary stream.

    Raises:
        UserError: When the input holds no usable Keras progress output.
    """
    stats = ParseStats()
    records = iter_records(_checked_chunks(stream, name), stats)
    results = list(analyze(split_epochs(records), options))
    if not results:
        if stats.rejected:
            raise UserError(
                f"{name}: every progress line was garbled or had absurd numbers "
                f"(first at line {stats.first_rejected_line})"
            )
        raise UserError(
            f"{name}: no Keras progress lines found (expected lines like "
            "'12/406 [====>...] - ETA: 5s - loss: 0.3539')"
        )
    if not any(r.metrics for r in results):
        raise UserError(f"{name}: progress lines found but none shows a metric value")
    return Explained(name, results, boundaries(results), stats, options.min_last_batch)


def main(argv: Sequence[str]) -> int:
    """Run `fitlens explain`; returns the exit code (0 ok, 2 user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:  # argparse already printed usage and the error
        return int(exit_.code or 0) if exit_.code in (0, None) else EXIT_USAGE
    try:
        try:
            options = Options(tolerance=args.tolerance, min_last_batch=args.min_last_batch)
        except ValueError as err:
            raise UserError(str(err)) from None
        stream = _open(args.log)
        try:
            explained = explain_stream(stream, "stdin" if args.log == "-" else args.log, options)
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
        if args.plot:
            from fitlens.explain.plot import PlotUnavailable, save_plot

            try:
                save_plot(explained, args.plot)
            except PlotUnavailable as err:
                raise UserError(str(err)) from None
            except OSError as err:
                raise UserError(f"cannot write {args.plot}: {err.strerror}") from None
    except UserError as err:
        print(f"fitlens explain: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fitlens explain: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.json:
        text = json.dumps(to_json(explained), indent=1, allow_nan=False) + "\n"
    else:
        text = render_text(explained)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left early (`fitlens explain log | head`): not an error. Point stdout at
        # devnull so the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK
