"""Render an explained log as text or as JSON; pure functions, no printing.

The JSON schema (``"schema": "fitlens.explain/1"``) is documented field by field in the README;
any change to it bumps the schema version.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fitlens.explain.analysis import EpochResult, MetricResult
from fitlens.explain.jumps import Boundary, is_training
from fitlens.explain.reconstruct import Window
from fitlens.explain.records import ParseStats

SCHEMA = "fitlens.explain/1"

_WEIGHTING_TEXT = {
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


@dataclass(frozen=True)
class Explained:
    """Everything the report needs.

    Attributes:
        source: The input's name (a path, or ``-`` for stdin).
        epochs: Per-epoch reconstructions, in log order.
        boundaries: Jump explanations, in log order.
        stats: Parser counts.
        min_last_batch: The assumed smallest last batch (fraction of a full batch).
    """

    source: str
    epochs: Sequence[EpochResult]
    boundaries: Sequence[Boundary]
    stats: ParseStats
    min_last_batch: float = 1.0


def fmt(x: float) -> str:
    """Format like Keras does: ``%.4f``, or ``%.4e`` for magnitudes at or below 1e-3."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4f}" if abs(x) > 1e-3 or x == 0 else f"{x:.4e}"


def _signed(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:+.4f}" if abs(x) >= 5e-5 or x == 0 else f"{x:+.4e}"


def assumptions(explained: Explained) -> list[str]:
    """The assumptions behind every bound, in plain words."""
    out = [
        "each shown value is the running mean since the epoch start, rounded to the digits shown"
    ]
    for weighting in sorted({e.weighting for e in explained.epochs}):
        out.append(_WEIGHTING_TEXT[weighting])
    if explained.min_last_batch < 1.0:
        out.append(
            f"the last batch of an epoch may be partial, down to {explained.min_last_batch:g} "
            "of a full batch"
        )
    else:
        out.append(
            "every batch in an epoch has the same size (a partial last batch would need "
            "--min-last-batch)"
        )
    if any(e.weighting == "counter" and e.epoch.style == "bracket" for e in explained.epochs):
        out.append(
            "Keras 2.0-2.3 mix the epoch mean into an epoch's last line; with equal batch "
            "sizes that changes nothing"
        )
    return out


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


def _metric_json(m: MetricResult) -> dict[str, Any]:
    return {
        "kind": m.kind,
        "shown": [{"step": p.step, "value": p.mean, "rounding": p.half} for p in m.shown],
        "windows": [_window_json(w) for w in m.windows],
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
        "end_level": _window_json(b.end_level),
        "next_start_window": _window_json(b.next_window),
        "trend": b.trend,
    }


def to_json(explained: Explained) -> dict[str, Any]:
    """The whole report as a JSON-ready dict with a stable schema."""
    epochs = []
    headers_seen = False
    for e in explained.epochs:
        ep = e.epoch
        training = is_training(e, headers_seen)
        headers_seen = headers_seen or ep.header is not None
        epochs.append(
            {
                "index": ep.index,
                "header": ep.header,
                "training": training,
                "target": ep.target,
                "last_step": ep.last_step,
                "complete": ep.complete,
                "counter_unit": ep.unit,
                "style": ep.style,
                "weighting": e.weighting,
                "metrics": {name: _metric_json(m) for name, m in e.metrics.items()},
            }
        )
    stats = explained.stats
    return {
        "schema": SCHEMA,
        "source": explained.source,
        "assumptions": assumptions(explained),
        "input": {
            "bytes": stats.bytes_read,
            "lines": stats.lines,
            "progress_lines": stats.progress,
            "other_lines": stats.other,
            "rejected_lines": stats.rejected,
        },
        "epochs": epochs,
        "boundaries": [boundary_json(b) for b in explained.boundaries],
    }


def _batches(w: Window) -> str:
    if w.first_batch == w.last_batch:
        return f"batch {w.last_batch}"
    return f"batches {w.first_batch}-{w.last_batch}"


def _interval(w: Window) -> str:
    return f"{fmt(w.value)} (between {fmt(w.low)} and {fmt(w.high)})"


def _boundary_text(b: Boundary, epochs: Sequence[EpochResult]) -> list[str]:
    k = b.from_epoch
    after = epochs[k] if k < len(epochs) else None
    firsts = ""
    if after is not None and b.metric in after.metrics:
        shown = after.metrics[b.metric].shown[:3]
        firsts = ", ".join(f"{fmt(p.mean)} at {p.step}" for p in shown)
    pct = f"{b.fraction_low:.0%} to {b.fraction_high:.0%}"
    lines = [
        f"  {b.metric}: epoch {k} ended at a shown mean of {fmt(b.shown_end_mean)}; "
        f"epoch {k + 1} starts at {fmt(b.next_start)} (first values: {firsts}): "
        f"a jump of {_signed(b.jump)}.",
        f"    Near the end of epoch {k}, {_batches(b.end_level)} averaged "
        f"{_interval(b.end_level)}.",
        f"    Averaging lag explains {_signed(b.lag_low)} to {_signed(b.lag_high)} of it ({pct}).",
    ]
    if b.early is not None and b.late is not None:
        lines.append(
            f"    Within epoch {k}: {_batches(b.early)} averaged {fmt(b.early.value)}, "
            f"{_batches(b.late)} averaged {_interval(b.late)}."
        )
    separate_fits = all(e.epoch.header == "Epoch 1/1" for e in epochs)
    lines.append("    " + _verdict_text(b, separate_fits))
    return lines


def _needed(b: Boundary) -> str:
    """What the end of the epoch would have to show for lag to explain the whole jump."""
    w = b.end_level
    if b.jump > 0 and b.next_start > w.high:
        bound = f"at most {fmt(w.high)}"
    elif b.jump < 0 and b.next_start < w.low:
        bound = f"at least {fmt(w.low)}"
    else:
        return ""
    return (
        f" For lag to explain all of it, the end of epoch {b.from_epoch} would have to be at "
        f"{fmt(b.next_start)}; its {_batches(w)} averaged {bound}."
    )


def _verdict_text(b: Boundary, separate_fits: bool) -> str:
    k = b.from_epoch
    noise = ""
    if b.next_window.batches <= 3:
        noise = (
            f"; and sampling noise: {b.next_start:.4f} covers only "
            f"{_batches(b.next_window)} of epoch {k + 1}"
        )
    causes = (
        "Likely causes: " + "; ".join((_RESTART_CAUSE[separate_fits], *_OTHER_CAUSES)) + noise + "."
    )
    if b.verdict == "averaging_lag":
        return (
            f"Verdict: averaging lag. The model was already near {fmt(b.end_level.value)} at the "
            f"end of epoch {k}; the shown mean trailed because it averages the whole epoch."
        )
    if b.verdict == "not_averaging_lag":
        if b.reason == "flat_level" and b.early is not None and b.late is not None:
            why = (
                f"epoch {k}'s own level did not move towards {fmt(b.next_start)} (its "
                f"{_batches(b.late)} at {fmt(b.late.value)} are no further along than its "
                f"{_batches(b.early)} at {fmt(b.early.value)}), so there was no lag to catch up"
            )
        else:
            why = f"even the most favourable bound leaves lag at most {b.fraction_high:.0%}"
        return f"Verdict: not averaging lag: {why}. The change happened at the boundary. {causes}"
    if b.verdict == "mixed":
        return (
            f"Verdict: mixed. Averaging lag explains part of the jump ({b.fraction_low:.0%} to "
            f"{b.fraction_high:.0%}); the rest happened at the boundary. {causes}"
        )
    if b.reason == "inconclusive":
        return (
            "Verdict: unknown. The log cannot tell: the bounds allow anything from no lag to most "
            f"of the jump.{_needed(b)} More progress lines near the end of epoch {k} (a terminal "
            "capture or a pipe keeps them) would narrow them."
        )
    if b.reason == "within_rounding":
        return "Verdict: unknown: the jump is within the display's rounding."
    if b.reason == "no_view_inside":
        return (
            "Verdict: unknown. The log shows one line per epoch (verbose=2), so nothing inside "
            "an epoch is visible. Train with verbose=1 and keep the output (a file or pipe keeps "
            "every redraw Keras prints)."
        )
    return (
        "Verdict: unknown. The log cannot tell: the bounds allow anything from no lag to most "
        f"of the jump. More progress lines near the end of epoch {k} (a terminal capture or a "
        "pipe keeps them) would narrow them."
    )


def render_text(explained: Explained) -> str:
    """The human-readable report."""
    epochs = explained.epochs
    stats = explained.stats
    out = [f"fitlens explain: {explained.source}"]
    out.append(
        f"Read {len(epochs)} epoch(s) from {stats.progress} progress line(s); "
        f"{stats.other} other line(s) ignored"
        + (f", {stats.rejected} garbled line(s) skipped" if stats.rejected else "")
        + "."
    )
    out.append("Assumptions: " + "; ".join(assumptions(explained)) + ".")
    headers_seen = False
    for e in epochs:
        ep = e.epoch
        head = f"Epoch {ep.index}" + (f" ({ep.header})" if ep.header else "")
        if not is_training(e, headers_seen):
            head += " (no 'Epoch' header: evaluate/predict or another fit call; not compared)"
        headers_seen = headers_seen or ep.header is not None
        span = f"{ep.last_step}/{ep.target}" if ep.target else f"{ep.last_step}"
        out.append("")
        out.append(f"{head}: reached {span}" + ("" if ep.complete else " (incomplete)"))
        for m in e.metrics.values():
            out.append("  " + _metric_line(m))
    out.append("")
    if explained.boundaries:
        out.append("Jumps at epoch boundaries:")
        last = None
        for b in explained.boundaries:
            if b.from_epoch != last:
                out.append(f"Epoch {b.from_epoch} -> {b.from_epoch + 1}")
                last = b.from_epoch
            out.extend(_boundary_text(b, epochs))
    else:
        out.append("No epoch boundary to explain (the log holds fewer than two epochs).")
    return "\n".join(out) + "\n"


def _metric_line(m: MetricResult) -> str:
    first, last = m.shown[0], m.shown[-1]
    if m.kind == "end_of_epoch":
        return f"{m.name}: {fmt(last.mean)} (evaluated at epoch end; not a running mean)"
    if m.kind == "cumulative":
        return (
            f"{m.name}: shown {fmt(first.mean)} at {first.step} -> {fmt(last.mean)} at "
            f"{last.step} (computed from counts over the epoch, not a mean of batches: "
            "no window can be isolated)"
        )
    text = f"{m.name}: shown {fmt(first.mean)} at {first.step} -> {fmt(last.mean)} at {last.step}"
    tight = [w for w in m.windows if w.first_batch > 1 or w.last_batch > 1]
    if m.windows:
        w = m.windows[-1]
        text += f"; last window {_batches(w)}: {_interval(w)}"
    if len(tight) > 1:
        text += f"; {len(m.windows)} windows"
    return text
