"""Cost of drawing a run and of `fitlens report` as the run grows, up to a million batches.

For each size: a synthetic History (two metrics, 32-sample batches, a rising accuracy with batch
noise) is turned into the chart (curves + now replay + matplotlib figure + SVG) and the whole
HTML page; with ``--rundir`` the history is also written as a run directory and read back the
way ``fitlens report RUN_DIR`` reads it. Prints seconds and peak traced memory (tracemalloc:
Python and numpy allocations, not matplotlib's C++ renderer) per stage, and the SVG's size.

    PYTHONPATH=src python benchmarks/report_scale.py [--sizes 1000 100000 1000000] [--rundir]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fitlens.core.history import History


def synthetic(batches: int, epochs: int) -> History:
    steps = batches // epochs
    n = steps * epochs
    rng = np.random.default_rng(0)
    t = np.arange(n) / n
    h = History(["loss", "accuracy"], params={"steps": steps, "now": "'ema_trend'"})
    h.batches.append(
        {
            "epoch": np.repeat(np.arange(1, epochs + 1), steps),
            "step": np.tile(np.arange(1, steps + 1), epochs),
            "size": np.full(n, 32),
            "step_time": np.full(n, 0.01),
            "data_time": np.full(n, 0.001),
            "loss": 2.0 * (1 - t) + rng.normal(0, 0.1, n),
            "accuracy": np.clip(t + rng.normal(0, 0.05, n), 0, 1),
        }
    )
    for e in range(epochs):
        end = (e + 1) * steps - 1
        h.record_epoch(
            e,
            {"loss": 2.0 * (1 - t[end]), "accuracy": t[end], "val_accuracy": t[end] - 0.05},
            {"time": 100.0, "data_wait": 5.0, "compute": 90.0, "eval": 4.0},
        )
    return h


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, seconds, peak MB)``: timed alone, then run again under tracemalloc (which
    slows Python down several times) for the memory."""
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return result, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--epochs", type=int, nargs="+", default=[3, 3000])
    parser.add_argument("--rundir", action="store_true", help="also write and read a run dir")
    args = parser.parse_args()

    from fitlens.report.html import CHART_CAPTION, chart_figure, render_page
    from fitlens.report.plot import close, pyplot, render
    from fitlens.report.reader import Run, history_run, read_run
    from fitlens.safety.run_dir import RunDir

    pyplot()  # import matplotlib before timing anything
    print(f"{'batches':>9} {'epochs':>6} {'stage':<22} {'seconds':>8} {'peak MB':>8}")
    for n in args.sizes:
        for epochs in args.epochs:
            if epochs > n:
                continue
            history = synthetic(n, epochs)
            run: Run = history_run(history)
            if args.rundir:
                with tempfile.TemporaryDirectory() as tmp:
                    d = RunDir(Path(tmp) / "run")
                    d.start(history)  # fit's writer (not measured: not the report's cost)
                    d.close()
                    run, s, m = measure(lambda t=tmp: read_run(Path(t) / "run"))
                    size = (Path(tmp) / "run" / "history.jsonl").stat().st_size / 1e6
                    print(
                        f"{n:>9} {epochs:>6} {'read run dir':<22} {s:>8.2f} {m:>8.1f}"
                        f"  ({size:.0f} MB history.jsonl)"
                    )

            def chart(r: Run = run) -> bytes:
                fig = chart_figure(r)
                try:
                    return render(fig, "svg")
                finally:
                    close(fig)

            svg, s, m = measure(chart)
            print(
                f"{n:>9} {epochs:>6} {'chart (curves+SVG)':<22} {s:>8.2f} {m:>8.1f}"
                f"  (SVG {len(svg) / 1e3:.0f} kB)"
            )
            page, s, m = measure(lambda r=run, svg=svg: render_page(r, [(CHART_CAPTION, svg)]))
            print(
                f"{n:>9} {epochs:>6} {'page (tables+HTML)':<22} {s:>8.2f} {m:>8.1f}"
                f"  (page {len(page) / 1e3:.0f} kB)"
            )


if __name__ == "__main__":
    main()
