"""The progress display: a state snapshot, pure formatters, and a writer built on tqdm.

Every verbosity goes through the same formatters (`format_metrics`, `format_step_line`,
`format_epoch_line`), which are pure functions tested against exact strings; `Progress` only
decides *when* and *where* to write.

Modes (``verbose``):
    0: silent.
    1: in a terminal, a bar and the metrics redrawn in place, laid out for the terminal's
       width (`format_terminal`); in a notebook, a tqdm widget (with ipywidgets; without it,
       the lines of a log); refreshed at most
       ``refresh_per_second`` times. When the output is a file or a pipe (a log), no carriage
       returns and no ANSI codes: a `format_step_line` at least every ``log_seconds`` (30 s)
       and at every ``log_fraction`` (10%) of the epoch, whichever comes first (or every
       ``log_every`` steps when that is set), and one line per epoch.
    2: one line per epoch.
"""

from __future__ import annotations

import io
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Literal

from fitlens.core.estimators import NowEstimate
from fitlens.core.numbers import format_interval, format_value
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
        headline: the metric shown first when the terminal is narrow (None: the first).
        resumed_at: steps of this epoch done before a resume; ``elapsed`` and ``data_share``
            then cover the steps after it only (0: not resumed).
        nows: ``{name: NowEstimate}``, the now values of ``metrics`` with their intervals
            (a metric missing here shows its now value alone).
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
    headline: str | None = None
    resumed_at: int = 0
    nows: Mapping[str, NowEstimate] = field(default_factory=dict)


def format_now(now: NowEstimate) -> str:
    """A now value with its interval, decimals following the interval's size, and words when
    the interval is wide: ``"0.941 ±0.012"``, ``"0.94 ±0.08, uncertain: few batches yet"``.

    Example:
        >>> format_now(NowEstimate(0.94123, 0.92923, 0.95323))
        '0.941 ±0.012'
    """
    value, band = format_interval(now.value, now.low, now.high)
    text = f"{value} {band}" if band else value
    return f"{text}, uncertain: {now.note}" if now.note else text


def format_metrics(
    metrics: Mapping[str, tuple[float, float]], nows: Mapping[str, NowEstimate] | None = None
) -> str:
    """``"loss: 0.4120 (now 0.305 ±0.012) - accuracy: 0.8740 (now 0.921 ±0.016)"``; a metric
    without an entry in ``nows`` shows its now value alone (``(now 0.3050)``); a value with
    no now estimate (``lr``, a framework's reported metric, an F1 over the epoch that is not a
    mean of batch values) shows alone: ``"lr: 0.0100"``."""
    nows = nows or {}

    def now_text(name: str, now: float) -> str:
        return format_now(nows[name]) if name in nows else format_value(now)

    return " - ".join(
        f"{name}: {format_value(mean)}"
        + ("" if math.isnan(now) and not math.isnan(mean) else f" (now {now_text(name, now)})")
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
        parts.append(format_metrics(s.metrics, s.nows))
    return " - ".join(parts)


def format_epoch_line(s: ProgressState) -> str:
    """The end-of-epoch summary line::

    Epoch 2/5 - 45 steps - 3.2s (71ms/step, data 12%) - loss: 0.4120 (now 0.3050) - val_loss: 0.2900

    A resumed epoch's time covers the steps after the resume, and says so:
    ``Epoch 2/5 - 45 steps - 1.6s for steps 21-45 (64ms/step, data 12%) - ...``.
    """
    ran = s.step - s.resumed_at
    span = f" for steps {s.resumed_at + 1}-{s.step}" if s.resumed_at else ""
    parts = [
        f"Epoch {s.epoch}/{s.epochs}",
        f"{s.step} steps",
        f"{format_duration(s.elapsed)}{span} ({format_duration(s.elapsed / max(ran, 1))}/step, "
        f"data {_share(s.data_share)})",
    ]
    if s.metrics:
        parts.append(format_metrics(s.metrics, s.nows))
    parts += [f"{k}: {format_value(v)}" for k, v in s.validation.items()]
    return " - ".join(parts)


def format_resume_line(
    checkpoint: str, epoch: int, step: int, written: str, skipped: int, seconds: float
) -> str:
    """The first line of a resumed run: which checkpoint, and the cost of getting back.

    Args:
        checkpoint: the checkpoint file. epoch: the 1-based epoch it resumes.
        step: steps of that epoch it had done (0: resumed at the epoch's start).
        written: when the checkpoint was written, as text.
        skipped: batches read and dropped to get back to position. seconds: their time.

    Example:
        >>> print(format_resume_line("ckpt-9.pt", 2, 20, "2026-11-30 19:31:02 UTC", 70, 1.25))
        Resumed from ckpt-9.pt (epoch 2, step 20, written 2026-11-30 19:31:02 UTC): skipped 70 \
batches in 1.2s to get back to position, left out of epoch 2's time and data share.
    """
    where = f"epoch {epoch}, step {step}" if step else f"start of epoch {epoch}"
    head = f"Resumed from {checkpoint} ({where}, written {written})"
    if not skipped:
        return f"{head}: no batches to skip."
    return (
        f"{head}: skipped {skipped} batches in {format_duration(seconds)} to get back to "
        f"position, left out of epoch {epoch}'s time and data share."
    )


def _times(s: ProgressState) -> str:
    return (
        f"{format_seconds(s.elapsed)}<{format_seconds(s.eta_epoch)} "
        f"(run {format_seconds(s.eta_run)}) - data {_share(s.data_share)}"
    )


def _postfix(s: ProgressState) -> str:
    """The text after a tqdm widget's bar (in a notebook)."""
    return f"{_times(s)} - {format_metrics(s.metrics, s.nows)}" if s.metrics else _times(s)


#: At this many columns and more, the bar and every metric share one line.
WIDE = 120
#: Below this many columns, the bar is dropped and the headline metric comes first.
NARROW = 60
_EIGHTHS = " ▏▎▍▌▋▊▉"


def format_bar(done: int, total: int, width: int = 20) -> str:
    """A bar of ``width`` cells filled to ``done / total`` in eighths of a cell: ``"|███▌  |"``."""
    eighths = int(8 * width * min(max(done / total, 0.0), 1.0)) if total > 0 else 0
    full, part = divmod(eighths, 8)
    cells = "█" * full + (_EIGHTHS[part] if part else "")
    return f"|{cells.ljust(width)}|"


def compact_value(x: float) -> str:
    """`format_value` without the leading zero of a magnitude below 1: ``".8918"``, ``"-.0125"``."""
    text = format_value(x)
    if text.startswith("0."):
        return text[1:]
    return "-" + text[2:] if text.startswith("-0.") else text


def _compact_text(text: str) -> str:
    """`compact_value`'s rule on a formatted number (``"0.941"`` -> ``".941"``)."""
    if text.startswith("0."):
        return text[1:]
    return "-" + text[2:] if text.startswith("-0.") else text


def compact_metric(name: str, mean: float, now: float, estimate: NowEstimate | None = None) -> str:
    """``"acc .8918→.9412"``, or with the now's interval ``"acc .8918→.941±.012"``: epoch
    mean, then now; a metric with no now shows its mean alone."""
    if math.isnan(now) and not math.isnan(mean):
        return f"{name} {compact_value(mean)}"
    if estimate is None:
        return f"{name} {compact_value(mean)}→{compact_value(now)}"
    value, band = format_interval(estimate.value, estimate.low, estimate.high)
    band = band.replace(", ", ",")
    for number in re.findall(r"-?\d+\.\d+", band):
        band = band.replace(number, _compact_text(number), 1)
    return f"{name} {compact_value(mean)}→{_compact_text(value)}{band}"


def uncertain_note(nows: Mapping[str, NowEstimate]) -> str | None:
    """``"now uncertain: acc (few batches yet)"`` for the metrics whose interval is wide."""
    noted = [f"{name} ({now.note})" for name, now in nows.items() if now.note]
    return f"now uncertain: {', '.join(noted)}" if noted else None


def _wrap(items: list[str], width: int) -> list[str]:
    """Items joined by two spaces, as many per line as ``width`` allows (one at least)."""
    lines = [items[0]]
    for item in items[1:]:
        if len(lines[-1]) + 2 + len(item) > width:
            lines.append(item)
        else:
            lines[-1] += f"  {item}"
    return lines


def format_terminal(s: ProgressState, columns: int) -> list[str]:
    """The terminal display for a window ``columns`` wide: every line fits, and every metric
    keeps both its mean and its now.

    * ``columns >= 120``: one line, bar then metrics (two when they do not fit on one);
    * 60 to 119: the bar on the first line; the metrics below, spelled out when they fit on
      one line, else compact (``mean→now: loss .4120→.3050  acc .8918→.9412``), wrapped;
    * below 60: no bar, the time figures wrapped; the headline metric first, compact.

    Below 120 columns the bar narrows (to 5 cells) before it is dropped.

    A line still longer than ``columns`` (a metric name longer than the window) is cut at the
    width: the terminal would otherwise wrap it and break the redraw.

    Example:
        >>> s = ProgressState(1, 3, 14, 50, 0.4, 1.0, 2.0, 0.36, {"loss": (0.5, 0.25)})
        >>> format_terminal(s, 80)
        ['Epoch 1/3 14/50 |█████▌              | 00:00<00:01 (run 00:02) - data 36%', 'loss: 0.5000 (now 0.2500)']
    """
    total = "?" if s.steps is None else str(s.steps)
    position = f"Epoch {s.epoch}/{s.epochs} {s.step}/{total}"
    cells = min(20, columns - len(position) - len(_times(s)) - 4)  # 4: two spaces, two bars
    if columns < NARROW or s.steps is None or cells < 5:
        words = [position, f"{format_seconds(s.elapsed)}<{format_seconds(s.eta_epoch)}"]
        words += [f"run {format_seconds(s.eta_run)}", f"data {_share(s.data_share)}"]
        heads = _wrap(words, columns)
    else:
        heads = [f"{position} {format_bar(s.step, s.steps, cells)} {_times(s)}"]
    metrics = dict(s.metrics)
    if columns < NARROW and s.headline in metrics:
        metrics = {s.headline: metrics[s.headline], **metrics}
    full = format_metrics(metrics, s.nows)
    if not metrics:
        lines = heads
    elif columns >= WIDE and len(heads[0]) + 3 + len(full) <= columns:
        lines = [f"{heads[0]} - {full}"]
    elif columns >= NARROW and len(full) <= columns:
        lines = [*heads, full]
    else:
        compact = [
            compact_metric(n, mean, now, s.nows.get(n)) for n, (mean, now) in metrics.items()
        ]
        note = uncertain_note({n: s.nows[n] for n in metrics if n in s.nows})
        lines = [*heads, *_wrap(["mean→now:", *compact, *([note] if note else [])], columns)]
    return [line[:columns] for line in lines]


def _in_notebook() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def columns(file: IO[str]) -> int:
    """The width of the terminal behind ``file``: its own size, else ``$COLUMNS``, else 80."""
    try:
        return os.get_terminal_size(file.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        env = os.environ.get("COLUMNS", "")
        return int(env) if env.isdigit() and int(env) > 0 else 80


class Screen:
    """Redraws a block of status lines in place on a terminal (carriage return, ANSI
    erase-line and cursor-up), and writes permanent lines above it.

    The cursor stays at the end of the block's last line, so a redraw goes back up
    ``len(block) - 1`` lines; every line fits the width (`format_terminal`), so none wraps.
    """

    def __init__(self, file: IO[str]) -> None:
        self.file = file
        self.shown = 0  # lines of the block on screen

    def _erase(self) -> str:
        return "\r\x1b[K" + "\x1b[A\x1b[K" * max(self.shown - 1, 0) if self.shown else ""

    def draw(self, lines: list[str]) -> None:
        self.file.write(self._erase() + "\n".join(lines))
        self.file.flush()
        self.shown = len(lines)

    def write(self, line: str, block: list[str]) -> None:
        """Write ``line`` for good, then the block again below it."""
        self.file.write(self._erase() + line + "\n")
        self.shown = 0
        if block:
            self.draw(block)
        else:
            self.file.flush()

    def clear(self) -> None:
        self.file.write(self._erase())
        self.file.flush()
        self.shown = 0


def _widgets() -> bool:
    """Whether ipywidgets is installed (``pip install 'fitlens[notebook]'``)."""
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None


def _is_interactive(file: IO[str]) -> bool:
    if file is sys.stdout and _in_notebook():
        # A tqdm widget; without ipywidgets, plain lines (a notebook has no cursor moves, and
        # tqdm's own fallback warns "IProgress not found").
        return _widgets()
    isatty = getattr(file, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """Writes progress for `fitlens.fit`; pass an instance as ``verbose=`` to configure it.

    Args:
        verbose: 0 silent, 1 bar (or lines when not a terminal), 2 one line per epoch.
        file: where to write; default ``sys.stdout``.
        refresh_per_second: most display refreshes per second (each costs one host sync).
        log_every: in line mode, write a line every this many steps instead of the timed
            lines (None: timed lines).
        log_seconds: in line mode, the longest time without a line, in seconds of the loop's
            clock; ``math.inf``: no timed lines.
        log_fraction: in line mode, also write a line at every this share of the epoch, in
            (0, 1] (every ``floor(log_fraction * steps)`` steps; ignored when the epoch's
            length is unknown); 1: only the epoch lines.
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
        log_seconds: float = 30.0,
        log_fraction: float = 0.1,
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
        if not log_seconds > 0:
            raise ValueError(f"Expected `log_seconds` > 0. Received: {log_seconds!r}.")
        if not 0 < log_fraction <= 1:
            raise ValueError(f"Expected `log_fraction` in (0, 1]. Received: {log_fraction!r}.")
        self.verbose = verbose
        self.file = file
        self.refresh_interval = 1.0 / refresh_per_second
        if mode not in ("auto", "bar", "lines"):
            raise ValueError(f"Expected `mode` 'auto', 'bar' or 'lines'. Received: {mode!r}.")
        self.log_every = log_every
        self.log_seconds = log_seconds
        self.log_fraction = log_fraction
        self.mode = mode
        self._bar: Any = None  # a tqdm widget, in a notebook
        self._screen: Screen | None = None  # status lines redrawn in place, in a terminal
        self._block: list[str] = []  # the status lines on screen
        self._bar_mode = False
        self._last_logged_step = 0
        self._last_logged_time = 0.0
        self._every: int | None = None  # in line mode, the step interval of the lines

    @property
    def out(self) -> IO[str]:
        return self.file if self.file is not None else sys.stdout

    def begin_epoch(self, epoch: int, epochs: int, steps: int | None) -> None:
        """Open the display for a new epoch."""
        self._last_logged_step = 0
        self._last_logged_time = 0.0
        self._bar_mode = self.verbose == 1 and (
            self.mode == "bar" or (self.mode == "auto" and _is_interactive(self.out))
        )
        self._every = self.log_every
        if self._every is None and steps is not None and self.log_fraction < 1:
            self._every = max(int(self.log_fraction * steps), 1)
        if self._bar_mode and self.out is sys.stdout and _in_notebook() and _widgets():
            from tqdm.auto import tqdm

            # Our text goes in {desc}, after the bar: tqdm would prefix a postfix with ", ".
            self._bar = tqdm(
                total=steps,
                bar_format=f"Epoch {epoch}/{epochs} {{n_fmt}}/{{total_fmt}} |{{bar:20}}| {{desc}}",
                file=self.out,
                leave=False,
                mininterval=0,
                miniters=0,
            )
        elif self._bar_mode:
            self._screen = Screen(self.out)

    @property
    def redraws(self) -> bool:
        """Whether the display is redrawn in place at every refresh (a bar or status lines)."""
        return self._bar is not None or self._screen is not None

    def will_draw(self, step: int, elapsed: float) -> bool:
        """Whether `refresh` at ``step`` (1-based), ``elapsed`` seconds into the epoch, would
        show anything: the caller builds the `ProgressState` (reading every now estimate, about
        a millisecond per metric) only then. A bar or status block always redraws; in line
        mode only a due line is written."""
        if self.redraws:
            return True
        return self.verbose == 1 and step > self._last_logged_step and self._line_due(step, elapsed)

    def refresh(self, state: ProgressState) -> None:
        """Show a mid-epoch snapshot (called at most ``refresh_per_second`` times a second)."""
        if self._bar is not None:
            self._bar.set_description_str(_postfix(state), refresh=False)
            self._bar.update(state.step - self._bar.n)
        elif self._screen is not None:
            self._block = format_terminal(state, columns(self.out))
            self._screen.draw(self._block)
        elif self.will_draw(state.step, state.elapsed):
            self._last_logged_step, self._last_logged_time = state.step, state.elapsed
            self.write(format_step_line(state))

    def _line_due(self, step: int, elapsed: float) -> bool:
        every = self._every
        if every is not None and step // every > self._last_logged_step // every:
            return True
        return self.log_every is None and elapsed - self._last_logged_time >= self.log_seconds

    @property
    def line_every(self) -> int | None:
        """In line mode, the step interval at which a line is due (the loop refreshes there)."""
        return self._every if not self._bar_mode and self.verbose == 1 else None

    def end_epoch(self, state: ProgressState) -> None:
        """Close the epoch's bar and write its summary line."""
        self.close()
        if self.verbose:
            self.write(format_epoch_line(state))

    def write(self, line: str) -> None:
        """Write one full line (used for summaries and notes such as the gap decomposition)."""
        if not self.verbose:
            return
        if self._bar is not None:
            from tqdm.auto import tqdm

            tqdm.write(line, file=self.out)
        elif self._screen is not None:
            self._screen.write(line, self._block)
        else:
            print(line, file=self.out, flush=True)

    def close(self) -> None:
        """Take the bar (or the terminal's status lines) off the screen."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._screen is not None:
            self._screen.clear()
            self._screen = None
            self._block = []
