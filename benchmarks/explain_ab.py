"""Benchmark: `fitlens explain` of two source trees on the same logs, alternated (an A/B test).

This machine's speed drifts by up to 2x within minutes, so MB/s measured at different hours do
not compare; running the code before and after a change in turn, on the same logs, and keeping
each one's minimum CPU time does. Logs are made by `explain_speed.generate` (Keras as it prints).

Run:
    git archive <commit> src | tar -x -C /tmp/base
    python benchmarks/explain_ab.py --base /tmp/base/src --new src --steps 200 --sizes 25
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explain_speed import generate


def run(src: Path, log: Path, extra: list[str], pycache: Path) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS (MiB) of `python -m fitlens explain LOG` with
    ``PYTHONPATH=src``, output thrown away; bytecode compiled once per tree, as installed."""
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONPYCACHEPREFIX": str(pycache)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cmd = [sys.executable, "-m", "fitlens", "explain", str(log), *extra]
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(cmd, stdout=devnull, stderr=devnull, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"PYTHONPATH={src} {' '.join(cmd)} failed; run it to see why")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the 'before' tree's src/")
    parser.add_argument("--new", type=Path, required=True, help="the 'after' tree's src/")
    parser.add_argument("--sizes", type=float, nargs="+", default=[25.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[200])
    parser.add_argument("--styles", nargs="+", default=["keras2-lines", "keras3"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    trees = {"base": args.base.resolve(), "new": args.new.resolve()}
    for tree in trees.values():
        if not (tree / "fitlens" / "__init__.py").is_file():
            parser.error(f"{tree} is not a source tree with fitlens/ in it (expected .../src)")
    print(
        f"load average {os.getloadavg()[0]:.1f}; CPU seconds, minimum of {args.repeats} alternated runs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        caches = {name: Path(tmp) / f"pycache-{name}" for name in trees}
        for style in args.styles:
            for steps in args.steps:
                for size in args.sizes:
                    log = Path(tmp) / f"{style}-{steps}-{size}.log"
                    written = generate(log, size, style, steps=steps)
                    for extra in ([], ["--json"]):
                        for name, tree in trees.items():  # warm-up: compiles the bytecode
                            run(tree, log, extra, caches[name])
                        best = {name: (float("inf"), 0.0) for name in trees}
                        for _ in range(args.repeats):
                            for name, tree in trees.items():
                                cpu, rss = run(tree, log, extra, caches[name])
                                best[name] = (min(best[name][0], cpu), max(best[name][1], rss))
                        (b, b_rss), (n, n_rss) = best["base"], best["new"]
                        mb = written / 1e6
                        print(
                            f"{style:12s} {steps:5d}/ep {mb:6.1f} MB {' '.join(extra) or 'text':6s}"
                            f"  base {b:6.3f} s ({mb / b:5.1f} MB/s, {b_rss:.0f} MiB)"
                            f"  new {n:6.3f} s ({mb / n:5.1f} MB/s, {n_rss:.0f} MiB)"
                            f"  new/base {n / b:.3f}",
                            flush=True,
                        )
                    log.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
