"""What the report says about an epoch or a boundary: pure formatters, no printing.

Each epoch is reduced to an :class:`EpochSummary` (first and last displays, the last window,
the first batches) as soon as it is read; :mod:`fitlens.explain.writer` puts the pieces
together while the log streams.

The JSON schema (``"schema": "fitlens.explain/2"``) is documented field by field in the README;
any change to it bumps the schema version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from fitlens.explain.analysis import (
    FIRST_BATCHES,
    EpochResult,
    LastBatch,
    MetricKind,
    MetricResult,
)
from fitlens.explain.epochs import Shown
from fitlens.explain.jumps import LITTLE, MOSTLY, Boundary
from fitlens.explain.reconstruct import Window, exact_window

SCHEMA = "fitlens.explain/2"

WEIGHTING_TEXT = {
    "counter": "each display is weighted by the counter's increment (Keras 1/2 Progbar: steps "
    "in fit_generator, samples in fit)",
    "samples": "means are weighted by samples and the counter counts steps (Keras 3 Mean metrics)",
    "counter_or_samples": "means are weighted by steps (Keras 2.1-2.3) or samples (tf.keras "
    ">= 2.2); both agree under equal batch sizes",
}

_RESTART_CAUSE = {
    True: "the data generator restarting at the same first batches in every fit call (the log "
    "repeats 'Epoch 1/1': one fit call per epoch), batches the model has just trained on",
    False: "each epoch starting with the same first batches (a generator or dataset without "
    "shuffling), batches the model has seen most recently",
}
_OTHER_CAUSES = (
    "shuffling putting easier or harder batches first",
    "a train/eval-mode difference (dropout, batch-norm statistics) between the end of one "
    "epoch and the start of the next",
)

#: The causes sentence without its end, for one fit call per epoch or one fit for all.
_CAUSES = {
    separate: "Likely causes: " + "; ".join((_RESTART_CAUSE[separate], *_OTHER_CAUSES))
    for separate in (True, False)
}


class MetricSummary(NamedTuple):
    """What the report keeps of one metric in one epoch.

    Attributes:
        name: Metric name.
        kind: As in :class:`fitlens.explain.analysis.MetricResult`.
        displays: Number of displays read.
        first: The first display.
        last: The last display.
        last_window: The window that ends the epoch, if reconstructed.
        windows: Number of windows tiling the epoch (only counted with ``--windows``).
        first_batches: Single-batch windows over the epoch's first batches (steps 1, 2, ... while
            consecutive steps were displayed, at most :data:`FIRST_BATCHES`).
        full: With ``--windows``: every display and window, as JSON-ready lists.
    """

    name: str
    kind: MetricKind
    displays: int
    first: Shown
    last: Shown
    last_window: Window | None
    windows: int | None
    first_batches: tuple[Window, ...]
    full: dict[str, Any] | None = None


@dataclass(frozen=True)
class EpochSummary:
    """What the report keeps of one epoch (see :class:`fitlens.explain.epochs.Epoch`)."""

    index: int
    header: str | None
    training: bool
    target: int | None
    last_step: int
    complete: bool
    unit: str
    style: str
    weighting: str
    last_batch: LastBatch
    sizes_mismatch: bool
    metrics: dict[str, MetricSummary]


def _first_batches(m: MetricResult) -> tuple[Window, ...]:
    """:attr:`MetricSummary.first_batches` of a running mean, as
    :func:`fitlens.explain.jumps.prepare` computed them for a batch of epochs when it did."""
    if m.first_batches is not None:
        return m.first_batches
    steps, means, halves = m.arrays
    out: list[Window] = []
    # window_bounds(previous display, this one) on plain numbers; 0 weight before the first.
    m_j = h_j = 0.0
    rows = zip(
        steps[:FIRST_BATCHES].tolist(),
        means[:FIRST_BATCHES].tolist(),
        halves[:FIRST_BATCHES].tolist(),
        strict=True,
    )
    for i, (step, mean, half) in enumerate(rows):
        if step != i + 1:
            break
        out.append(exact_window(float(i), m_j, h_j, float(step), mean, half, step, m.clip))
        m_j, h_j = mean, half
    return tuple(out)


def summarize(result: EpochResult, training: bool, keep_windows: bool = False) -> EpochSummary:
    """Reduce an analysed epoch to what the report prints.

    Args:
        result: The epoch.
        training: Whether it is a training epoch of the same run (see
            :func:`fitlens.explain.jumps.is_training`).
        keep_windows: Keep every display and window (``--windows``).
    """
    metrics = {}
    for name, m in result.metrics.items():
        steps, means, halves = m.arrays
        ahead = m.ahead
        if ahead is not None:  # the same numbers, read once for the batch of epochs
            first, last = ahead.first, ahead.last
        else:
            first = Shown(int(steps[0]), float(means[0]), float(halves[0]))
            last = Shown(int(steps[-1]), float(means[-1]), float(halves[-1]))
        full = None
        if keep_windows:
            full = {
                "shown": [
                    {"step": s, "value": v, "rounding": h}
                    for s, v, h in zip(steps.tolist(), means.tolist(), halves.tolist(), strict=True)
                ],
                "windows": [_window_json(w) for w in m.windows],
            }
        metrics[name] = MetricSummary(
            name,
            m.kind,
            len(steps),
            first,
            last,
            m.last_window,
            len(m.columns.first) if keep_windows else None,
            _first_batches(m) if m.kind == "running_mean" else (),
            full,
        )
    ep = result.epoch
    return EpochSummary(
        ep.index,
        ep.header,
        training,
        ep.target,
        ep.last_step,
        ep.complete or ep.summary_only,
        ep.unit,
        ep.style,
        result.weighting,
        result.last_batch,
        result.sizes_mismatch,
        metrics,
    )


def fmt(x: float) -> str:
    """Format like Keras does: ``%.4f``, or ``%.4e`` for magnitudes at or below 1e-3."""
    if 1e-3 < abs(x) < math.inf or x == 0:
        return f"{x:.4f}"
    return str(x) if not math.isfinite(x) else f"{x:.4e}"


def _outward(y: float, up: bool) -> int:
    """``ceil`` (``up``) or ``floor`` of ``round(y, 6)``: the float noise below a millionth
    ignored, then rounded outwards. ``round(y, 6)`` is slow (it goes through decimal digits) and
    changes the result only within a millionth of an integer, so it runs only there."""
    f = math.floor(y)
    if y == f:  # an integer (a share of 0% or 100%) rounds to itself
        return f
    if y - f > 2e-6 and f + 1 - y > 2e-6:  # exact differences: y and f are close
        return f + 1 if up else f
    return (math.ceil if up else math.floor)(round(y, 6))


def fmt_bound(x: float, up: bool) -> str:
    """Format a bound rounded outwards (down for a low, up for a high), so it still holds.

    Four decimals, or four after the point of ``%.4e`` for magnitudes at or below 1e-3 (as
    :func:`fmt`). Float noise below a millionth of the last digit is ignored first (the bounds
    already carry a float-rounding slack of that size).

    Example:
        >>> fmt_bound(0.74996, up=False), fmt_bound(0.74996, up=True)
        ('0.7499', '0.7500')
    """
    if 1e-3 < abs(x) < math.inf:
        # _outward(x * 1e4, up), inline: two bounds per interval, several intervals per epoch.
        y = x * 1e4
        f = math.floor(y)
        if y != f:
            if y - f > 2e-6 and f + 1 - y > 2e-6:
                f = f + 1 if up else f
            else:
                f = (math.ceil if up else math.floor)(round(y, 6))
        return f"{f / 1e4:.4f}"
    if not math.isfinite(x) or x == 0:
        return fmt(x)
    # The decimal mantissa and exponent from the repr, not from powers of ten (which
    # underflow to 0 or overflow for subnormal x).
    mantissa, exponent_text = f"{x:.12e}".split("e")
    exponent = int(exponent_text)
    units = _outward(float(mantissa) * 1e4, up)
    if abs(units) >= 100_000:  # 9.99996e-05 rounded up is 1.0000e-04
        units, exponent = units // 10, exponent + 1
    return f"{units / 1e4:.4f}e{exponent:+03d}"


def signed(x: float) -> str:
    """A jump with its sign: four decimals, or ``%+.4e`` below half the last digit."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:+.4f}" if abs(x) >= 5e-5 or x == 0 else f"{x:+.4e}"


def signed_bound(x: float, up: bool) -> str:
    """A signed bound in four decimals, rounded outwards."""
    if not math.isfinite(x):
        return str(x)
    return f"{_outward(x * 1e4, up) / 1e4:+.4f}"


def pct(fraction: float, up: bool) -> str:
    """A fraction of the jump as a percentage with one decimal, rounded outwards.

    Rounding the low bound down and the high bound up keeps a shown range on the same side of
    the 25% and 75% rules as the numbers behind it.

    Example:
        >>> pct(0.7484, up=False), pct(0.7484, up=True)
        ('74.8%', '74.9%')
    """
    if fraction == 0.0 or fraction == 1.0:  # clipped shares, the most common ones
        return "0.0%" if fraction == 0.0 else "100.0%"
    tenths = _outward(fraction * 1000, up)
    return f"{tenths / 10:.1f}%"


def rules_text() -> str:
    """The verdict rules, as the report states them."""
    return (
        f"Rules: averaging lag when the lag provably explains at least {MOSTLY:.0%} of a jump; "
        f"not averaging lag when it explains at most {LITTLE:.0%}, or when the epoch's own "
        "level did not move towards the new value; mixed when it provably explains between "
        f"{LITTLE:.0%} and {MOSTLY:.0%}; unknown when the bounds allow more than one of these."
    )


def _num(x: float) -> float | None:
    """JSON has no infinities: an unbounded side becomes ``null``."""
    return x if math.isfinite(x) else None


def _window_json(w: Window) -> dict[str, Any]:
    return {
        "first_batch": w.first_batch,
        "last_batch": w.last_batch,
        "value": _num(w.value),
        "low": _num(w.low),
        "high": _num(w.high),
    }


def _shown_json(p: Shown) -> dict[str, Any]:
    return {"step": p.step, "value": p.mean, "rounding": p.half}


def _metric_json(m: MetricSummary) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": m.kind,
        "displays": m.displays,
        "first_shown": _shown_json(m.first),
        "last_shown": _shown_json(m.last),
        "windows_count": m.windows,
        "last_window": None if m.last_window is None else _window_json(m.last_window),
        "first_batches": [_window_json(w) for w in m.first_batches],
    }
    if m.full is not None:
        out.update(m.full)
    return out


def epoch_json(e: EpochSummary) -> dict[str, Any]:
    """One epoch as its JSON object (see the README for each field)."""
    return {
        "index": e.index,
        "header": e.header,
        "training": e.training,
        "target": e.target,
        "last_step": e.last_step,
        "complete": e.complete,
        "counter_unit": e.unit,
        "style": e.style,
        "weighting": e.weighting,
        "last_batch": e.last_batch,
        "metrics": {name: _metric_json(m) for name, m in e.metrics.items()},
    }


def boundary_json(b: Boundary) -> dict[str, Any]:
    """One boundary as its JSON object (see the README for each field)."""
    return {
        "metric": b.metric,
        "from_epoch": b.from_epoch,
        "shown_end_mean": b.shown_end_mean,
        "next_start": b.next_start,
        "jump": b.jump,
        "lag_explains": {
            "low": _num(b.lag_low),
            "high": _num(b.lag_high),
            "fraction_low": b.fraction_low,
            "fraction_high": b.fraction_high,
        },
        "verdict": b.verdict,
        "reason": b.reason,
        "bottom_line": bottom_line(b),
        "end_level": _window_json(b.end_level),
        "next_start_window": _window_json(b.next_window),
        "trend": b.trend,
    }


def _float_text(x: float) -> str:
    """A float as ``json`` writes it (``float.__repr__``); like ``allow_nan=False``, no
    infinity or NaN."""
    if x - x != 0.0:
        raise ValueError(f"Out of range float values are not JSON compliant: {x!r}")
    return float.__repr__(x)


def _num_text(x: float) -> str:
    """:func:`_num` as JSON text: ``null`` for an unbounded side."""
    return "null" if x - x != 0.0 else float.__repr__(x)


def _int_text(x: int | None) -> str:
    return "null" if x is None else int.__repr__(x)


class JsonText:
    """:func:`epoch_json` and :func:`boundary_json` written straight to JSON text: the same
    characters as ``json.JSONEncoder(separators=separators, allow_nan=False).encode`` of those
    objects, without building the dicts (the report writes one of each per epoch).

    Args:
        separators: ``(item, key)`` separators, as for :mod:`json`.
    """

    def __init__(self, separators: tuple[str, str]) -> None:
        # Imported here: the text report never loads the json package (start-up time).
        from json.encoder import encode_basestring_ascii

        #: How ``json.dumps`` writes a string (``ensure_ascii``).
        self.str_text = encode_basestring_ascii
        i, k = separators
        self.item = i

        def obj(*keys: str) -> str:
            return "{" + i.join(f'"{key}"{k}%s' for key in keys) + "}"

        self._window = obj("first_batch", "last_batch", "value", "low", "high")
        self._shown = obj("step", "value", "rounding")
        self._metric = obj(
            "kind",
            "displays",
            "first_shown",
            "last_shown",
            "windows_count",
            "last_window",
            "first_batches",
        )
        self._epoch = obj(
            "index",
            "header",
            "training",
            "target",
            "last_step",
            "complete",
            "counter_unit",
            "style",
            "weighting",
            "last_batch",
            "metrics",
        )
        self._lag = obj("low", "high", "fraction_low", "fraction_high")
        self._boundary = obj(
            "metric",
            "from_epoch",
            "shown_end_mean",
            "next_start",
            "jump",
            "lag_explains",
            "verdict",
            "reason",
            "bottom_line",
            "end_level",
            "next_start_window",
            "trend",
        )
        self._key = k

    def window(self, w: Window) -> str:
        """:func:`_window_json` as text."""
        first, last, value, low, high = w  # unpacked: a NamedTuple's attributes cost more
        # Every side finite (x - x is 0.0, not nan) is the rule: no call per number then (a
        # dozen windows per epoch, the JSON report's largest cost).
        if value - value == 0.0 and low - low == 0.0 and high - high == 0.0:
            return self._window % (
                int.__repr__(first),
                int.__repr__(last),
                float.__repr__(value),
                float.__repr__(low),
                float.__repr__(high),
            )
        return self._window % (
            int.__repr__(first),
            int.__repr__(last),
            _num_text(value),
            _num_text(low),
            _num_text(high),
        )

    def _shown_text(self, p: Shown) -> str:
        step, mean, half = p
        if mean - mean == 0.0 and half - half == 0.0:  # finite: no call per number
            return self._shown % (int.__repr__(step), float.__repr__(mean), float.__repr__(half))
        return self._shown % (int.__repr__(step), _float_text(mean), _float_text(half))

    def epoch(self, e: EpochSummary) -> str | None:
        """:func:`epoch_json` as text, or ``None`` with ``--windows`` (every window: the
        caller encodes the objects)."""
        str_text = self.str_text
        metrics = []
        for name, m in e.metrics.items():
            if m.full is not None:
                return None
            last = "null" if m.last_window is None else self.window(m.last_window)
            firsts = self.item.join([self.window(w) for w in m.first_batches])
            metrics.append(
                str_text(name)
                + self._key
                + self._metric
                % (
                    str_text(m.kind),
                    int.__repr__(m.displays),
                    self._shown_text(m.first),
                    self._shown_text(m.last),
                    _int_text(m.windows),
                    last,
                    "[" + firsts + "]",
                )
            )
        return self._epoch % (
            int.__repr__(e.index),
            "null" if e.header is None else str_text(e.header),
            "true" if e.training else "false",
            _int_text(e.target),
            int.__repr__(e.last_step),
            "true" if e.complete else "false",
            str_text(e.unit),
            str_text(e.style),
            str_text(e.weighting),
            str_text(e.last_batch),
            "{" + self.item.join(metrics) + "}",
        )

    def boundary(self, b: Boundary) -> tuple[str, str]:
        """:func:`boundary_json` as text, and its bottom line's text alone."""
        str_text = self.str_text
        bottom = str_text(bottom_line(b))
        lag = self._lag % (
            _num_text(b.lag_low),
            _num_text(b.lag_high),
            _float_text(b.fraction_low),
            _float_text(b.fraction_high),
        )
        text = self._boundary % (
            str_text(b.metric),
            int.__repr__(b.from_epoch),
            _float_text(b.shown_end_mean),
            _float_text(b.next_start),
            _float_text(b.jump),
            lag,
            str_text(b.verdict),
            str_text(b.reason),
            bottom,
            self.window(b.end_level),
            self.window(b.next_window),
            str_text(b.trend),
        )
        return text, bottom


def _batches(w: Window) -> str:
    if w.first_batch == w.last_batch:
        return f"batch {w.last_batch}"
    return f"batches {w.first_batch}-{w.last_batch}"


def _interval(w: Window) -> str:
    return f"{fmt(w.value)} (between {fmt_bound(w.low, False)} and {fmt_bound(w.high, True)})"


def jump_share(b: Boundary) -> str:
    """The share of the jump averaging lag explains, as ``low%-high%`` rounded outwards."""
    return f"{pct(b.fraction_low, False)}-{pct(b.fraction_high, True)}"


def bottom_line(b: Boundary, share: str | None = None) -> str:
    """One line: the boundary, the jump, and what the numbers allow (``share`` is
    ``jump_share(b)`` when the caller has it already)."""
    head = f"epoch {b.from_epoch} -> {b.from_epoch + 1}, {b.metric} {signed(b.jump)}: "
    if b.reason == "within_rounding":
        return head + "no jump beyond the display's rounding"
    if b.reason == "no_view_inside":
        return head + "one line per epoch (verbose=2): the log cannot tell whether it is lag"
    if share is None:
        share = jump_share(b)
    if b.verdict == "averaging_lag":
        return head + f"averaging lag: it explains {share} of the jump (at least {MOSTLY:.0%})"
    if b.verdict == "mixed":
        return head + f"mixed: averaging lag explains {share}, the rest happened at the boundary"
    if b.verdict == "not_averaging_lag":
        if b.reason == "flat_level":
            return head + (
                f"not averaging lag: epoch {b.from_epoch}'s own level did not move towards the "
                f"new value (lag bounds allow {share})"
            )
        return head + f"not averaging lag: it explains at most {pct(b.fraction_high, True)}"
    return head + f"averaging lag explains {share}; the log cannot tell more"


def _boundary_text(b: Boundary, firsts: str, separate_fits: bool, share: str) -> list[str]:
    k = b.from_epoch
    lines = [
        f"  {b.metric}: epoch {k} ended at a shown mean of {fmt(b.shown_end_mean)}; "
        f"epoch {k + 1} starts at {fmt(b.next_start)} (first values: {firsts}): "
        f"a jump of {signed(b.jump)}.",
        f"    Near the end of epoch {k}, {_batches(b.end_level)} averaged "
        f"{_interval(b.end_level)}.",
        f"    Averaging lag explains {signed_bound(b.lag_low, False)} to "
        f"{signed_bound(b.lag_high, True)} of it ({share} of the jump).",
    ]
    if b.early is not None and b.late is not None:
        lines.append(
            f"    Within epoch {k}: {_batches(b.early)} averaged {_interval(b.early)}, "
            f"{_batches(b.late)} averaged {_interval(b.late)}."
        )
    lines.append("    " + _verdict_text(b, separate_fits, share))
    return lines


def _needed(b: Boundary) -> str:
    """What the end of the epoch would have to show for lag to explain the whole jump."""
    w = b.end_level
    if b.jump > 0 and b.next_start > w.high:
        bound = f"at most {fmt_bound(w.high, True)}"
    elif b.jump < 0 and b.next_start < w.low:
        bound = f"at least {fmt_bound(w.low, False)}"
    else:
        return ""
    return (
        f" For lag to explain all of it, the end of epoch {b.from_epoch} would have to be at "
        f"{fmt(b.next_start)}; its {_batches(w)} averaged {bound}."
    )


def _verdict_text(b: Boundary, separate_fits: bool, share: str) -> str:
    k = b.from_epoch
    noise = ""
    if b.next_window.batches <= 3:
        noise = (
            f"; and sampling noise: {fmt(b.next_start)} covers only "
            f"{_batches(b.next_window)} of epoch {k + 1}"
        )
    causes = _CAUSES[separate_fits] + noise + "."
    if b.verdict == "averaging_lag":
        return (
            f"Verdict: averaging lag ({share} is at least {MOSTLY:.0%}). The model was already "
            f"near {fmt(b.end_level.value)} at the end of epoch {k}; the shown mean trailed "
            "because it averages the whole epoch."
        )
    if b.verdict == "not_averaging_lag":
        if b.reason == "flat_level" and b.early is not None and b.late is not None:
            why = (
                f"epoch {k}'s own level did not move towards {fmt(b.next_start)} by more than a "
                f"tenth of the jump (its {_batches(b.late)} at {_interval(b.late)} against its "
                f"{_batches(b.early)} at {_interval(b.early)}), so there was no lag to catch up"
            )
        else:
            why = f"lag explains at most {pct(b.fraction_high, True)} (at most {LITTLE:.0%})"
        return f"Verdict: not averaging lag: {why}. The change happened at the boundary. {causes}"
    if b.verdict == "mixed":
        return (
            f"Verdict: mixed. Averaging lag explains {share} of the jump (between {LITTLE:.0%} "
            f"and {MOSTLY:.0%}); the rest happened at the boundary. {causes}"
        )
    if b.reason == "no_view_inside":
        return (
            "Verdict: unknown. The log shows one line per epoch (verbose=2), so nothing inside "
            "an epoch is visible. Train with verbose=1 and keep the output (a file or pipe keeps "
            "every redraw Keras prints)."
        )
    return (
        f"Verdict: unknown. Lag explains {share} of the jump: not provably at least "
        f"{MOSTLY:.0%} (averaging lag), nor at most {LITTLE:.0%} (not averaging lag), nor "
        f"within {LITTLE:.0%}-{MOSTLY:.0%} (mixed), so the log cannot tell.{_needed(b)} More "
        f"progress lines near the end of epoch {k} (a terminal capture or a pipe keeps them) "
        "would narrow the bounds."
    )


def epoch_lines(e: EpochSummary) -> list[str]:
    """The report's lines for one epoch: a heading, then one line per metric."""
    head = f"Epoch {e.index}" + (f" ({e.header})" if e.header else "")
    if not e.training:
        head += " (no 'Epoch' header: evaluate/predict or another fit call; not compared)"
    if e.style == "summary":
        out = [f"{head}: one line of epoch means (verbose=2, no step counter)"]
    else:
        span = f"{e.last_step}/{e.target}" if e.target else f"{e.last_step}"
        out = [f"{head}: reached {span}" + ("" if e.complete else " (incomplete)")]
    out.extend("  " + metric_line(m) for m in e.metrics.values())
    return out


def boundary_lines(
    b: Boundary, before: EpochSummary, after: EpochSummary, share: str | None = None
) -> list[str]:
    """The report's paragraph for one metric across one boundary (``share`` is
    ``jump_share(b)`` when the caller has it already)."""
    m = after.metrics.get(b.metric)
    firsts = ""
    if m is not None:
        firsts = ", ".join(f"{fmt(w.value)} at {w.last_batch}" for w in m.first_batches)
    firsts = firsts or f"{fmt(b.next_start)} at {b.next_window.last_batch}"
    separate_fits = before.header == after.header == "Epoch 1/1"
    return _boundary_text(b, firsts, separate_fits, jump_share(b) if share is None else share)


def metric_line(m: MetricSummary) -> str:
    """One metric of one epoch in a line: first and last display, and the last window."""
    first, last = m.first, m.last
    if m.kind == "end_of_epoch":
        return f"{m.name}: {fmt(last.mean)} (evaluated at epoch end; not a running mean)"
    if m.kind == "cumulative":
        return (
            f"{m.name}: shown {fmt(first.mean)} at {first.step} -> {fmt(last.mean)} at "
            f"{last.step} (computed from counts over the epoch, not a mean of batches: "
            "no window can be isolated)"
        )
    if m.last_window is None:
        return f"{m.name}: {fmt(last.mean)} (the epoch's mean)"
    text = f"{m.name}: shown {fmt(first.mean)} at {first.step} -> {fmt(last.mean)} at {last.step}"
    text += f"; last window {_batches(m.last_window)}: {_interval(m.last_window)}"
    return text
