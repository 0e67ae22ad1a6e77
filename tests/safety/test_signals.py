from __future__ import annotations

import os
import signal
import threading

import pytest

from fitlens.safety.signals import InterruptGuard


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
