from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import fitlens
from fitlens.safety.signals import InterruptGuard, SharedInterrupt


def test_first_signal_is_recorded_and_the_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with InterruptGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.received == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_ctrl_c_stops_at_once() -> None:
    with InterruptGuard() as guard, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.received == "SIGINT"
        os.kill(os.getpid(), signal.SIGINT)


def test_guard_outside_the_main_thread_leaves_signals_alone() -> None:
    handlers: list[object] = []

    def body() -> None:
        with InterruptGuard():
            handlers.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert handlers == [before]


def test_a_shared_guard_records_the_signal_locally_until_the_processes_agree() -> None:
    with SharedInterrupt(grace=60.0, who="rank 1 of 2") as guard:
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.local == "SIGTERM" and guard.received is None  # not agreed yet: no stop
        guard.agree(None)
        assert guard.received is None
        guard.agree("SIGTERM")
        assert guard.received == "SIGTERM"
        timer = guard._timer
        assert timer is not None and timer.is_alive()
    timer.join(5)  # leaving the guard cancels the grace period
    assert not timer.is_alive()


STUCK = """
import os, signal, time
from fitlens.safety.signals import SharedInterrupt

def stuck_in_a_callback():
    time.sleep(120)

with SharedInterrupt(grace=0.5, who="rank 1 of 2"):
    os.kill(os.getpid(), signal.SIGTERM)
    stuck_in_a_callback()
"""


def test_a_process_that_does_not_stop_within_the_grace_period_names_itself_and_exits() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(fitlens.__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", STUCK], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 128 + signal.SIGTERM
    assert "fitlens: rank 1 of 2 received SIGTERM 0.5 s ago and has not reached" in done.stderr
    assert "in stuck_in_a_callback" in done.stderr  # its Python stack
