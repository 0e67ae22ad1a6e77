"""Benchmark: `fitlens explain` as users run it, on big realistic logs: MB/s and peak RSS.

Generates logs of each style and size: ``keras2-lines`` (Keras 2 ``fit_generator`` output in a
file or pipe, one line per step, 200 steps per epoch, thousands of epochs) and ``keras3`` (a
Keras 3 terminal capture: ``\\b``/``\\r`` redraws and ANSI colours; Keras 3 writes the same bytes
into a pipe). Each log is explained by the real command in a subprocess, text and ``--json``,
from the file and from standard input, output thrown away; wall and CPU time and the peak RSS
of that process are printed.

Run:
    python benchmarks/explain_speed.py                       # 25, 50 and 100 MB, both styles
    python benchmarks/explain_speed.py --sizes 25 --styles keras3

Requirement (issues 4 and 13): at least 50 MB/s for the whole command, and a peak RSS under
100 MiB that does not grow with the log.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STEPS = 200  # steps per epoch, unless --steps says otherwise
STEP_SECONDS = 0.05  # mean time per step: a 200-step epoch takes 10 s, a 2,000-step one 100 s


def _duration(seconds: float) -> str:
    """A time as Keras's progress bars print an ETA (``9s``, ``1:02``, ``1:02:03``)."""
    whole = int(seconds)  # Keras's "%d" drops the fraction
    if seconds > 3600:
        return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
    if seconds > 60:
        return f"{whole // 60}:{whole % 60:02d}"
    return f"{whole}s"


def _epoch_bytes(
    rng: random.Random, epoch: int, epochs: int, style: str, steps: int = STEPS
) -> bytes:
    """One epoch of ``style`` as Keras prints it (checked against Keras 3's
    ``keras/src/utils/progbar.py`` and Keras 2's ``Progbar``): the counter padded to the
    target's width, an ETA that shrinks and changes width (``1:39``, ``59s``, ``9s``), the
    elapsed time on the last line; in a terminal, each redraw erases the previous one with a
    backspace per column it printed, and a redraw narrower than the previous one is padded with
    spaces."""
    parts = [f"Epoch {epoch}/{epochs}\n"]
    acc_total = loss_total = 0.0
    prev = 0
    level = min(0.99, 0.5 + 0.4 * epoch / max(epochs, 1))
    digits = len(str(steps))
    per_step = STEP_SECONDS * rng.uniform(0.8, 1.2)
    elapsed = 0.0
    for step in range(1, steps + 1):
        acc_total += min(1.0, max(0.0, rng.gauss(level, 0.05)))
        loss_total += abs(rng.gauss(1.0 - level, 0.05))
        acc, loss = acc_total / step, loss_total / step
        elapsed += per_step * rng.uniform(0.9, 1.1)
        per_ms = elapsed / step * 1000
        last = step == steps
        when = f"{elapsed:.0f}s" if last else _duration(elapsed / step * (steps - step))
        if style == "keras3":
            done = 20 * step // steps
            green = f"\x1b[32m{'━' * done}\x1b[0m" if done else ""
            line = (
                f"\x1b[1m{step:{digits}d}/{steps}\x1b[0m {green}"
                f"\x1b[37m{'━' * (20 - done)}\x1b[0m \x1b[1m{when}\x1b[0m {per_ms:.0f}ms/step"
                f" - accuracy: {acc:.4f} - loss: {loss:.4f}"
            )
            width = len(line) - (34 if done else 25)  # less the colour codes
        else:
            done = 30 * step // steps
            bar = "=" * max(done - 1, 0) + (">" if done < 30 else "=") + "." * (30 - done)
            timing = f"{when} {per_ms:.0f}ms/step" if last else f"ETA: {when}"
            line = (
                f"{step:{digits}d}/{steps} [{bar}] - {timing} - loss: {loss:.4f} - acc: {acc:.4f}"
            )
            width = len(line)
        if style == "keras2-lines":
            parts.append(line + "\n")
        else:
            parts.append("\b" * prev + "\r" + line + " " * max(prev - width, 0))
        prev = width
    if style != "keras2-lines":
        parts.append("\n")
    return "".join(parts).encode()


def generate(
    path: Path, size_mb: float, style: str = "keras3", seed: int = 0, steps: int = STEPS
) -> int:
    """Write a log of about ``size_mb`` MB to ``path`` with ``steps`` steps per epoch;
    returns its size in bytes."""
    rng = random.Random(seed)
    target = int(size_mb * 1e6)
    per_epoch = len(_epoch_bytes(rng, 1, 1, style, steps))
    epochs = max(2, target // per_epoch)
    written = 0
    with path.open("wb") as f:
        for epoch in range(1, epochs + 1):
            data = _epoch_bytes(rng, epoch, epochs, style, steps)
            f.write(data)
            written += len(data)
    return written


def run_command(
    path: Path,
    as_json: bool,
    via_pipe: bool,
    html: Path | None = None,
    pycache: Path | None = None,
) -> dict[str, float]:
    """Run ``fitlens explain`` as a user does, output to /dev/null; time it and its peak RSS.

    ``via_pipe`` feeds the log on standard input (``cat log | fitlens explain -``) instead of
    naming the file; ``html`` also writes the page there (``--html``); ``pycache`` keeps the
    compiled modules there (as an installed package has them) instead of compiling at each start. CPU time (user + system, from ``wait4``) is reported beside wall time: on a
    shared machine the wall clock includes waiting for a core.
    """
    size = path.stat().st_size
    cmd = [sys.executable, "-m", "fitlens", "explain", "-" if via_pipe else str(path)]
    cmd += ["--json"] if as_json else []
    cmd += ["--html", str(html), "--quiet"] if html is not None else []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    if pycache is not None:
        # An installed package has its bytecode; a source tree run with
        # PYTHONDONTWRITEBYTECODE=1 compiles every module at each start (about 0.07 s here).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    start = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        cat = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) if via_pipe else None
        proc = subprocess.Popen(
            cmd,
            stdin=cat.stdout if cat else subprocess.DEVNULL,
            stdout=devnull,
            stderr=devnull,  # progress lines; a failure is reported below
            env=env,
        )
        if cat is not None and cat.stdout is not None:
            cat.stdout.close()  # the command holds the read end now
        _, status, usage = os.wait4(proc.pid, 0)
        if cat is not None:
            cat.wait()
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; run it to see why")
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "bytes": size,
        "seconds": seconds,
        "mb_per_s": size / 1e6 / seconds,
        "cpu_seconds": cpu,
        "cpu_mb_per_s": size / 1e6 / cpu,
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def _row(style: str, how: str, r: dict[str, float]) -> None:
    print(
        f"{style:18s} {r['bytes'] / 1e6:6.1f} MB {how}  "
        f"wall {r['seconds']:6.2f} s = {r['mb_per_s']:5.1f} MB/s  "
        f"cpu {r['cpu_seconds']:6.2f} s = {r['cpu_mb_per_s']:5.1f} MB/s  "
        f"peak RSS {r['peak_rss_mib']:6.1f} MiB",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[25.0, 50.0, 100.0])
    parser.add_argument(
        "--styles",
        nargs="+",
        choices=["keras3", "keras2", "keras2-lines"],
        default=["keras2-lines", "keras3"],
    )
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[STEPS, 2000],
        help="steps per epoch: each size and style is measured with each (Keras pads the "
        "counter to the target's width; long epochs change the ETA's width more often)",
    )
    parser.add_argument(
        "--html", action="store_true", help="also time `--html OUT.html` (file, text report)"
    )
    parser.add_argument(
        "--compile-each-run",
        action="store_true",
        help="compile fitlens's modules at every start, as a source tree does under "
        "PYTHONDONTWRITEBYTECODE=1 (default: compiled once, as an installed package is)",
    )
    args = parser.parse_args()
    print(
        f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} "
        "(MB/s of CPU time = user + system of the command: what a free core would give); "
        + ("modules compiled at every start" if args.compile_each_run else "bytecode compiled once")
    )
    with tempfile.TemporaryDirectory() as tmp:
        pycache = None if args.compile_each_run else Path(tmp) / "pycache"
        if pycache is not None:  # one run to compile the modules
            warm = Path(tmp) / "warm.log"
            generate(warm, 0.05, "keras2-lines")
            run_command(warm, False, False, pycache=pycache)
        for style in args.styles:
            for size, steps in itertools.product(sorted(args.sizes), args.steps):
                path = Path(tmp) / f"{style}-{size:g}-{steps}.log"
                generate(path, size, style, steps=steps)
                label = f"{style} {steps}/ep"
                for via_pipe in (False, True):
                    for as_json in (False, True):
                        how = ("stdin " if via_pipe else "file  ") + (
                            "--json" if as_json else "text  "
                        )
                        _row(label, how, run_command(path, as_json, via_pipe, pycache=pycache))
                if args.html:
                    page = Path(tmp) / "page.html"
                    _row(label, "file  --html", run_command(path, False, False, page, pycache))
                path.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
