"""Graceful interruption: SIGINT (Ctrl-C) and SIGTERM finish the current step, then stop.

`InterruptGuard` replaces the two handlers while training runs. The first signal only sets
`InterruptGuard.received`; the loop notices it after the step in progress, writes a checkpoint
and the history, prints how to resume, and raises `TrainingInterrupted` (a KeyboardInterrupt, so
scripts exit non-zero as after a plain Ctrl-C). A second SIGINT while that happens raises
KeyboardInterrupt at once: a user pressing Ctrl-C twice wants out now.

Handlers can only be installed from the main thread; elsewhere (a notebook's worker thread, a
training thread) the guard does nothing and signals behave as usual.

`SharedInterrupt` is the guard of one process among several that must stop together (`fit`
under DDP): a signal on this process only sets `SharedInterrupt.local`; the processes exchange
it at their next collective and `SharedInterrupt.agree` sets ``received`` on all of them at the
same step. A process that does not reach that point within its grace period (``ddp_timeout``:
stuck in a callback, the data or a step) prints its Python stacks and exits, as the signal's
default action would have ended it.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint.

    Attributes:
        signal_name: ``"SIGINT"`` or ``"SIGTERM"``.
        checkpoint: the path of the checkpoint written, or None without a run directory.
        resume_hint: the call that resumes the run.
    """

    def __init__(self, message: str, signal_name: str, checkpoint: Any, resume_hint: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name
        self.checkpoint = checkpoint
        self.resume_hint = resume_hint


class InterruptGuard:
    """Context manager turning SIGINT/SIGTERM into a request to stop after the current step.

    Example:
        >>> with InterruptGuard() as guard:  # doctest: +SKIP
        ...     for step in steps:
        ...         train(step)
        ...         if guard.received:
        ...             save_and_stop()
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt  # second Ctrl-C: stop immediately
        self.received = self.received or name

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()

    def _release(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class SharedInterrupt(InterruptGuard):
    """`InterruptGuard` for one of several processes that stop together (see the module doc).

    Args:
        grace: seconds this process may take, after its first signal, to stop (``ddp_timeout``).
        who: how this process names itself in messages (``"rank 1 of 2"``).

    Attributes:
        local: the signal this process received (``"SIGINT"``/``"SIGTERM"``), not yet agreed.
        received: the signal all processes agreed to stop on (set by `agree`).
    """

    def __init__(self, grace: float, who: str) -> None:
        super().__init__()
        self.grace, self.who = grace, who
        self.local: str | None = None
        self._timer: threading.Timer | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.local == "SIGINT" and name == "SIGINT":
            raise KeyboardInterrupt  # second Ctrl-C: stop immediately
        if self.local is None:
            self.local = name
            self._timer = threading.Timer(self.grace, self._overdue, (signum,))
            self._timer.daemon = True
            self._timer.start()

    def agree(self, name: str | None) -> None:
        """The signal the processes agreed on at their latest collective (None: none yet)."""
        self.received = self.received or name

    def _overdue(self, signum: int) -> None:
        """The grace period passed and this process has not stopped: say where it is, exit."""
        name = signal.Signals(signum).name
        print(
            f"fitlens: {self.who} received {name} {self.grace:g} s ago and has not reached a "
            "point where the processes stop together (stuck in a callback, the data or a "
            "step?); exiting. Its Python stacks:",
            file=sys.stderr,
            flush=True,
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(128 + signum)  # as a shell reports death by the signal

    def _release(self) -> None:
        """Cancel the grace period (the process stopped in time), put the handlers back."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super()._release()
