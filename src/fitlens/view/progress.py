"""The progress display: a state snapshot, pure formatters, and a writer built on tqdm.

Every verbosity goes through the same formatters (`format_metrics`, `format_step_line`,
`format_epoch_line`), which are pure functions tested against exact strings; `Progress` only
decides *when* and *where* to write.

Modes (``verbose``):
    0: silent.
    1: a tqdm bar per epoch when writing to a terminal or a notebook (``tqdm.auto`` picks the
       widget), refreshed at most ``refresh_per_second`` times; when the output is a file or a
       pipe, no carriage returns: one line per epoch, plus one line every ``log_every`` steps
       if set.
    2: one line per epoch.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from fitlens.core.numbers import format_value
from fitlens.view.timing import format_seconds


@dataclass(frozen=True)
class ProgressState:
    """A snapshot of what the display shows; built by the loop at each refresh.

    Attributes:
        epoch: 1-based epoch number. epochs: total epochs.
        step: steps done in this epoch. steps: steps per epoch, None when unknown.
        elapsed: seconds since the epoch began.
        eta_epoch, eta_run: seconds left in the epoch and in the whole run (NaN when unknown).
        data_share: fraction of the epoch's elapsed time spent waiting for data, in [0, 1].
        metrics: ``{name: (epoch mean, now estimate)}`` for the training metrics.
        validation: ``{"val_name": value}``, filled at epoch end when validation ran.
    """

    epoch: int
    epochs: int
    step: int
    steps: int | None
    elapsed: float
    eta_epoch: float = math.nan
    eta_run: float = math.nan
    data_share: float = math.nan
    metrics: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    validation: Mapping[str, float] = field(default_factory=dict)


def format_metrics(metrics: Mapping[str, tuple[float, float]]) -> str:
    """``"loss: 0.4120 (now 0.3050) - accuracy: 0.8740 (now 0.9210)"``."""
    return " - ".join(
        f"{name}: {format_value(mean)} (now {format_value(now)})"
        for name, (mean, now) in metrics.items()
    )


def format_duration(seconds: float) -> str:
    """``"850us"``, ``"71ms"``, ``"3.2s"``, ``"12:05"`` (minutes and seconds), ``"1:02:03"``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return format_seconds(seconds)


def _share(x: float) -> str:
    return "?" if math.isnan(x) else f"{100 * x:.0f}%"


def format_step_line(s: ProgressState) -> str:
    """One mid-epoch line (the non-terminal mode's periodic line and the bar's text)::

    Epoch 2/5 - 23/45 - 00:03<00:04 (run 00:20) - data 12% - loss: 0.4120 (now 0.3050)
    """
    total = "?" if s.steps is None else str(s.steps)
    parts = [
        f"Epoch {s.epoch}/{s.epochs}",
        f"{s.step}/{total}",
        f"{format_seconds(s.elapsed)}<{format_seconds(s.eta_epoch)} "
        f"(run {format_seconds(s.eta_run)})",
        f"data {_share(s.data_share)}",
    ]
    if s.metrics:
        parts.append(format_metrics(s.metrics))
    return " - ".join(parts)


def format_epoch_line(s: ProgressState) -> str:
    """The end-of-epoch summary line::

    Epoch 2/5 - 45 steps - 3.2s (71ms/step, data 12%) - loss: 0.4120 (now 0.3050) - val_loss: 0.2900
    """
    parts = [
        f"Epoch {s.epoch}/{s.epochs}",
        f"{s.step} steps",
        f"{format_duration(s.elapsed)} ({format_duration(s.elapsed / max(s.step, 1))}/step, "
        f"data {_share(s.data_share)})",
    ]
    if s.metrics:
        parts.append(format_metrics(s.metrics))
    parts += [f"{k}: {format_value(v)}" for k, v in s.validation.items()]
    return " - ".join(parts)


def _postfix(s: ProgressState) -> str:
    head = (
        f"{format_seconds(s.elapsed)}<{format_seconds(s.eta_epoch)} "
        f"(run {format_seconds(s.eta_run)}) - data {_share(s.data_share)}"
    )
    return f"{head} - {format_metrics(s.metrics)}" if s.metrics else head


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _is_interactive(file: IO[str]) -> bool:
    if file is sys.stdout and _in_notebook():
        return True  # tqdm.auto draws a widget
    isatty = getattr(file, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Writes progress for `fitlens.fit`; pass an instance as ``verbose=`` to configure it.

    Args:
        verbose: 0 silent, 1 bar (or lines when not a terminal), 2 one line per epoch.
        file: where to write; default ``sys.stdout``.
        refresh_per_second: most display refreshes per second (each costs one host sync).
        log_every: in line mode, also write a line every this many steps (None: never).
        mode: ``"auto"`` (a bar in a terminal or notebook, lines otherwise), ``"bar"`` or
            ``"lines"`` (e.g. for a terminal whose output is also captured with ``tee``).
    """

    def __init__(
        self,
        verbose: int = 1,
        *,
        file: IO[str] | None = None,
        refresh_per_second: float = 10.0,
        log_every: int | None = None,
        mode: Literal["auto", "bar", "lines"] = "auto",
    ) -> None:
        if verbose not in (0, 1, 2):
            raise ValueError(f"Expected `verbose` to be 0, 1 or 2. Received: {verbose!r}.")
        if refresh_per_second <= 0:
            raise ValueError(
                f"Expected `refresh_per_second` > 0. Received: {refresh_per_second!r}."
            )
        if log_every is not None and (int(log_every) != log_every or log_every < 1):
            raise ValueError(f"Expected `log_every` to be None or >= 1. Received: {log_every!r}.")
        self.verbose = verbose
        self.file = file
        self.refresh_interval = 1.0 / refresh_per_second
        if mode not in ("auto", "bar", "lines"):
            raise ValueError(f"Expected `mode` 'auto', 'bar' or 'lines'. Received: {mode!r}.")
        self.log_every = log_every
        self.mode = mode
        self._bar: Any = None
        self._bar_mode = False
        self._last_logged_step = 0

    @property
    def out(self) -> IO[str]:
        return self.file if self.file is not None else sys.stdout

    def begin_epoch(self, epoch: int, epochs: int, steps: int | None) -> None:
        """Open the display for a new epoch."""
        self._last_logged_step = 0
        self._bar_mode = self.verbose == 1 and (
            self.mode == "bar" or (self.mode == "auto" and _is_interactive(self.out))
        )
        if self._bar_mode:
            from tqdm.auto import tqdm

            # Our text goes in {desc}, after the bar: tqdm would prefix a postfix with ", ".
            self._bar = tqdm(
                total=steps,
                bar_format=f"Epoch {epoch}/{epochs} {{n_fmt}}/{{total_fmt}} |{{bar:20}}| {{desc}}",
                file=self.out,
                leave=False,
                mininterval=0,
                miniters=0,
                dynamic_ncols=True,
            )

    def refresh(self, state: ProgressState) -> None:
        """Show a mid-epoch snapshot (called at most ``refresh_per_second`` times a second)."""
        if self._bar is not None:
            self._bar.set_description_str(_postfix(state), refresh=False)
            self._bar.update(state.step - self._bar.n)
        elif (
            self.verbose == 1
            and self.log_every is not None
            and state.step - self._last_logged_step >= self.log_every
        ):
            self._last_logged_step = state.step
            self.write(format_step_line(state))

    @property
    def line_every(self) -> int | None:
        """In line mode, the step interval at which a line is due (the loop refreshes there)."""
        return self.log_every if self._bar is None and self.verbose == 1 else None

    def end_epoch(self, state: ProgressState) -> None:
        """Close the epoch's bar and write its summary line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.verbose:
            self.write(format_epoch_line(state))

    def write(self, line: str) -> None:
        """Write one full line (used for summaries and notes such as the gap decomposition)."""
        if not self.verbose:
            return
        if self._bar is not None:
            from tqdm.auto import tqdm

            tqdm.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
