"""``fitlens report RUN_DIR`` and ``fitlens show RUN_DIR``: read -> gather -> format -> write.

User errors (a missing or wrong directory, an unwritable output, matplotlib missing) become one
line on stderr starting with ``fitlens report: `` / ``fitlens show: `` and exit code 2, never a
traceback. ``report`` says what it is doing on stderr (reading a large history or drawing a
million batches takes seconds); ``--quiet`` silences that.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fitlens.core.files import write_atomic
from fitlens.report.reader import Run, RunDirError, read_run

EXIT_OK, EXIT_USAGE = 0, 2


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | int:
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exit_:  # argparse printed usage and the error (or the help)
        return EXIT_OK if exit_.code in (0, None) else EXIT_USAGE


def _stage_printer(quiet: bool) -> Callable[[str], None]:
    start = time.perf_counter()

    def say(message: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    return say


def _read(path: str, prog: str, say: Callable[[str], None]) -> Run | int:
    say(f"reading {path}")
    shown = [0]

    def read_progress(done: float) -> None:  # one line per tenth of the file
        if int(done * 10) > shown[0]:
            shown[0] = int(done * 10)
            say(f"read {done:.0%} of the history")

    try:
        run = read_run(path, read_progress)
    except RunDirError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_USAGE
    say(
        f"read {len(run.history.batches)} batches and {len(run.history.epoch)} epochs "
        f"({run.bytes_read / 1e6:.1f} MB)"
    )
    return run


def report_main(argv: Sequence[str]) -> int:
    """Run ``fitlens report``; returns the exit code (0 ok, 2 user error)."""
    parser = argparse.ArgumentParser(
        prog="fitlens report",
        description="Write one self-contained HTML page about a run directory: charts, the gap "
        "decomposition, where the time went, forecasts, settings, how the run ended. Works on a "
        "run that is still going (it reads what has been flushed).",
    )
    parser.add_argument("run_dir", help="the run_dir given to fit(run_dir=...)")
    parser.add_argument(
        "-o", "--output", metavar="OUT.html", help="where to write (default: RUN_DIR/report.html)"
    )
    parser.add_argument(
        "--chart",
        metavar="OUT.png",
        help="also write the chart alone to this file (.png or .svg)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    prog = "fitlens report"
    if args.chart and Path(args.chart).suffix.lower() not in (".png", ".svg"):
        print(
            f"{prog}: --chart {args.chart}: expected a file name ending in .png or .svg",
            file=sys.stderr,
        )
        return EXIT_USAGE
    say = _stage_printer(args.quiet)
    out = Path(args.output) if args.output else Path(args.run_dir) / "report.html"
    if out.is_dir():
        print(
            f"{prog}: {out} is a directory; expected a file name such as report.html",
            file=sys.stderr,
        )
        return EXIT_USAGE
    run = _read(args.run_dir, prog, say)
    if isinstance(run, int):
        return run
    from fitlens.report.html import CHART_CAPTION, chart_figure, render_page
    from fitlens.report.plot import PlotUnavailable, close, render, save

    try:
        fig = chart_figure(run, say)
    except PlotUnavailable as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_USAGE
    charts = []
    try:
        if fig is not None:
            charts.append((CHART_CAPTION, render(fig, "svg")))
            if args.chart:
                save(fig, args.chart)
                say(f"wrote {args.chart}")
        say("writing the page")
        page = render_page(run, charts)
        write_atomic(out, page.encode("utf-8"))
    except OSError as e:
        print(f"{prog}: cannot write {e.filename or out}: {e.strerror}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if fig is not None:
            close(fig)
    say(f"wrote {out} ({len(page.encode()) / 1e3:.0f} kB)")
    if not args.quiet:
        print(out)
    return EXIT_OK


def show_main(argv: Sequence[str]) -> int:
    """Run ``fitlens show``; returns the exit code (0 ok, 2 user error)."""
    parser = argparse.ArgumentParser(
        prog="fitlens show",
        description="Show a run directory in the terminal: epochs (mean, now, validation, gap, "
        "timing), the last end-of-epoch lines, how the run ended and its warnings.",
    )
    parser.add_argument("run_dir", help="the run_dir given to fit(run_dir=...)")
    parser.add_argument("--json", action="store_true", help="print JSON (fitlens.show/1)")
    parser.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    from fitlens.report.show import render_text, show_data

    run = _read(args.run_dir, "fitlens show", _stage_printer(args.quiet))
    if isinstance(run, int):
        return run
    data = show_data(run)
    text = json.dumps(data, indent=1, allow_nan=False) + "\n" if args.json else render_text(data)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `fitlens show run | head`: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


__all__ = ["report_main", "show_main"]
