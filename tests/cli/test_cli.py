"""The `fitlens` command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "fitlens", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_the_commands():
    out = run("--help")
    assert out.returncode == 0
    assert "demo" in out.stdout and "explain" in out.stdout


def test_an_unknown_command_is_a_one_line_error_not_a_traceback():
    out = run("trian")
    assert out.returncode == 2
    assert "unknown command 'trian'" in out.stderr and "Traceback" not in out.stderr


def test_demo_rejects_a_single_epoch_with_a_usage_error():
    out = run("demo", "--epochs", "1")
    assert out.returncode == 2
    assert "--epochs must be at least 2" in out.stderr and "Traceback" not in out.stderr


def test_demo_shows_the_jump_in_the_mean_column_and_not_in_the_now_column():
    out = run("demo", "--epochs", "3")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "\r" not in text  # not a terminal: plain lines
    epoch_lines = [line for line in text.splitlines() if re.match(r"Epoch \d/3 - \d+ steps", line)]
    assert len(epoch_lines) == 3 and all("val_accuracy" in line for line in epoch_lines)
    row = re.search(r"^\s+1 -> 2\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    assert row, text
    mean_end, mean_next, mean_jump, _, _, now_jump = map(float, row.groups())
    assert mean_jump == pytest.approx(mean_next - mean_end, abs=2e-4)
    assert mean_jump > 0.15  # plainly visible in the mean column
    assert abs(now_jump) < mean_jump / 4  # and not in the now column
    assert "averaging lag" in text


def test_import_fitlens_does_not_import_torch():
    code = "import sys, fitlens; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


_SEED_LOG = Path(__file__).resolve().parents[1] / "explain" / "data" / "seed-keras2.log"
# Runs a command in-process, then prints OpenBLAS's thread setting and, where threadpoolctl is
# installed, the threads OpenBLAS actually started (the last line of stdout).
_BLAS_PROBE = """
import json, os, sys
from fitlens.cli.main import main
main(sys.argv[1:])
try:
    import threadpoolctl
    started = [p["num_threads"] for p in threadpoolctl.threadpool_info()
               if p["internal_api"] == "openblas"]
except ImportError:
    started = None
print(json.dumps([os.environ.get("OPENBLAS_NUM_THREADS"), started]))
"""


def _blas_after(*args, env_value=None):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if env_value is not None:
        env["OPENBLAS_NUM_THREADS"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", _BLAS_PROBE, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_explain_starts_one_openblas_thread():
    setting, started = _blas_after("explain", str(_SEED_LOG), "--quiet")
    assert setting == "1"
    if started is not None:  # threadpoolctl shows what OpenBLAS did with it
        assert started in ([1], [])


def test_explain_keeps_the_users_openblas_thread_count():
    setting, _ = _blas_after("explain", str(_SEED_LOG), "--quiet", env_value="2")
    assert setting == "2"


def test_other_commands_keep_openblas_default_threads():
    # `show` on a missing run directory: a usage error, after the command's imports.
    setting, _ = _blas_after("show", "/nonexistent-run-dir")
    assert setting is None
