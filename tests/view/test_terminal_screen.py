"""End to end: `fitlens.fit` in a real pseudo-terminal 80 columns wide (tmux), read back with
``capture-pane``: what a user of a default-size terminal sees."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fitlens

# Skips only outside CI: under CI=true a missing tmux is a failure (.ci/run installs it).
pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None and os.environ.get("CI") != "true",
    reason="needs tmux (.ci/run installs it)",
)

# Pauses before batch 15 until the test has read the screen, so the bar is caught mid-epoch.
_SCRIPT = """
import sys, time
from pathlib import Path
import numpy as np, torch
import fitlens

go = Path(sys.argv[1])
torch.manual_seed(0)
rng = np.random.default_rng(0)
y = rng.integers(0, 3, size=500)
x = (rng.normal(size=(3, 8))[y] * 2 + rng.normal(size=(500, 8))).astype(np.float32)

def batches():
    for i in range(50):
        if i == 14:
            (go.parent / "paused").touch()
            while not go.exists():
                time.sleep(0.02)
        yield torch.from_numpy(x[10 * i : 10 * i + 10]), torch.from_numpy(y[10 * i : 10 * i + 10])

model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
fitlens.fit(model, batches(), loss="cross_entropy", optimizer="adam",
            metrics=["accuracy"], epochs=1, steps_per_epoch=50)
print("DONE")
"""


def _screen(session: str) -> list[str]:
    out = subprocess.run(
        ["tmux", "capture-pane", "-p", "-J", "-t", session],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.rstrip() for line in out.splitlines() if line.strip()]


def _wait_for(condition, what: str, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds  # a guard against a hang, not a speed assertion
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_an_80_column_terminal_shows_the_bar_and_every_mean_and_now_uncut(tmp_path: Path):
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    session = f"fitlens-{os.getpid()}-{tmp_path.name}"  # unique across concurrent test runs
    command = f"{sys.executable} {script} {tmp_path / 'go'}; sleep 60"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command],
        check=True,
        env={
            "PATH": "/usr/bin:/bin",
            "TERM": "xterm-256color",
            "HOME": str(tmp_path),
            "PYTHONPATH": str(Path(fitlens.__file__).parents[1]),  # the fitlens under test
        },
    )
    try:
        _wait_for((tmp_path / "paused").exists, "batch 15")
        _wait_for(lambda: any("accuracy" in line for line in _screen(session)), "the metrics")
        mid = _screen(session)
        (tmp_path / "go").touch()
        _wait_for(lambda: "DONE" in _screen(session), "the end of the run")
        end = _screen(session)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)

    # the bar line, then the metrics: spelled out on one line when they fit, else compact
    # (mean→now with the interval) and, when an interval is wide, a line saying why
    bar, *metrics = mid
    assert 1 <= len(metrics) <= 3 and all(len(line) <= 80 for line in mid), mid
    assert re.fullmatch(
        r"Epoch 1/1 \d+/50 \|[█▏▎▍▌▋▊▉ ]{20}\| \d\d:\d\d<\S+ \(run \S+\) - data \d+%", bar
    ), bar
    band = r"(±\S+|\[\S+, ?\S+\])"  # format_interval's forms, spelled or compact
    for name in ("loss", "accuracy"):
        spelled = rf"{name}: \S+ \(now \S+ {band}"
        compact = rf"{name} \S+→[^±\[\s]+{band}"
        assert re.search(spelled, metrics[0]) or re.search(compact, " ".join(metrics)), metrics
    notes = [line for line in metrics if line.startswith("now uncertain: ")]
    assert all(
        re.fullmatch(r"now uncertain: .*\((few batches yet|curve bending)\)", n) for n in notes
    )
    # The status lines are gone; the epoch's summary line stays (-J joins its wrapped rows).
    assert len(end) == 2 and end[0].startswith("Epoch 1/1 - 50 steps - ") and end[1] == "DONE"
