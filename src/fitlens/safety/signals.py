"""Graceful interruption: SIGINT (Ctrl-C) and SIGTERM finish the current step, then stop.

`InterruptGuard` replaces the two handlers while training runs. The first signal only sets
`InterruptGuard.received`; the loop notices it after the step in progress, writes a checkpoint
and the history, prints how to resume, and raises `TrainingInterrupted` (a KeyboardInterrupt, so
scripts exit non-zero as after a plain Ctrl-C). A second SIGINT while that happens raises
KeyboardInterrupt at once: a user pressing Ctrl-C twice wants out now.

Handlers can only be installed from the main thread; elsewhere (a notebook's worker thread, a
training thread) the guard does nothing and signals behave as usual.
"""

from __future__ import annotations

import signal
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
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
