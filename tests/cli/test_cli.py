"""The `fitlens` command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys

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
