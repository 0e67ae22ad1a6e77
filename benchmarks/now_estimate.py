"""How close is each now estimator to the truth, and does its interval know how close?

Trains small real models (`now_traces.FAMILIES`: an MLP, dropout, batch-norm, binary, tabular,
a CNN on 8x8 digit images, 20% label noise, and an MSE regression whose metric is its loss) at
batch sizes 16 to 256 for 10 epochs with ``fit(train_eval=True)``, which measures at every epoch
end the current model on *all* the training data in train mode (the truth). Each run's batch
values are replayed through every candidate estimator, which reports a value and a 90% interval
at every epoch end. Candidates are tuned on seeds 0-4 (``--seeds 0-4``) and reported on seeds
5-9, the default. ``--cache DIR`` keeps each run's trace, so a second table trains nothing.

Per estimator and family it prints the mean |estimate - truth| (points of accuracy; percent of
the truth for the regression loss), the coverage of the 90% interval, its median width, and the
share of epoch boundaries where the forecast check says "as forecast" (the forecast's tolerance
combining the now interval with the noise of the next epoch's first 3 batches).

Run:  PYTHONPATH=src nice python benchmarks/now_estimate.py [--seeds 5-9] [--cache DIR]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _machine import describe_machine
from now_traces import BATCH_SIZES, FAMILIES, Trace, all_traces

from fitlens.core.estimators import (
    BEND_WEIGHT,
    DEFAULT_NOW,
    EMA,
    AdaptiveTrend,
    EMATrend,
    Estimator,
    TrendWindow,
    WindowMean,
    fit_interval,
    make_estimator,
)
from fitlens.core.forecast import FORECAST_STEPS, Forecast, check_forecast, make_forecast
from fitlens.core.gap import Z95
from fitlens.core.metric_range import NONNEGATIVE, RATE, MetricRange

LEVEL = 0.9
EPOCHS = 10


@dataclass(frozen=True)
class Candidate:
    """An estimator and how its interval weighs the bend."""

    make: Callable[[MetricRange], Estimator]
    bend_weight: float = BEND_WEIGHT


CANDIDATES: dict[str, Candidate] = {
    "window(20)": Candidate(lambda r: WindowMean(20, bounds=r)),
    "ema(0.95)": Candidate(lambda r: EMA(0.95, bounds=r)),
    "trend(30)": Candidate(lambda r: TrendWindow(30, bounds=r)),
    **{
        f"ema_trend({m}) bend x{k:g}": Candidate(lambda r, m=m: EMATrend(m, bounds=r), k)
        for m in (400, 800, 1200)
        for k in (0.0, 1.0)
    },
    **{
        f"adaptive{m} bend x{k:g}": Candidate(lambda r, m=m: AdaptiveTrend(m, bounds=r), k)
        for m in ((300, 600, 1200, 2400, 4800), (400, 800, 1600, 3200, 6400, 12800))
        for k in (1.0, 2.0)
    },
}


@dataclass
class Scored:
    """One trace replayed through one candidate: per epoch value, interval, forecast hit."""

    trace: Trace
    value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    as_forecast: np.ndarray  # per boundary (epochs - 1)
    as_forecast_old: np.ndarray  # the same with the tolerance of batch noise alone

    @property
    def scale(self) -> np.ndarray:
        """Errors in points of accuracy, or percent of the truth for a loss."""
        return 100 / self.trace.full if self._loss else np.full(self.trace.full.size, 100.0)

    @property
    def _loss(self) -> bool:
        return self.trace.family == "regression"

    @property
    def error(self) -> np.ndarray:
        return np.abs(self.value - self.trace.full) * self.scale

    @property
    def mean_error(self) -> np.ndarray:
        return np.abs(self.trace.mean - self.trace.full) * self.scale

    @property
    def covered(self) -> np.ndarray:
        return (self.low <= self.trace.full) & (self.trace.full <= self.high)

    @property
    def width(self) -> np.ndarray:
        return (self.high - self.low) * self.scale


def replay(t: Trace, cand: Candidate) -> Scored:
    bounds = NONNEGATIVE if t.family == "regression" else RATE
    est = cand.make(bounds)
    n = t.full.size
    value, low, high = np.empty(n), np.empty(n), np.empty(n)
    hits = np.zeros((2, n - 1), dtype=bool)  # with the now interval; batch noise alone
    forecasts: list[Forecast] = []
    for e in range(n):
        rows = np.flatnonzero(t.epoch == e + 1)
        first = rows[:FORECAST_STEPS]  # the previous epoch end's forecasts, checked here
        for i, forecast in enumerate(forecasts):
            hits[i, e - 1] = check_forecast(forecast, t.metric[first], t.size[first]).as_forecast
        est.update(t.metric[rows], t.size[rows])
        fit = est.fit()
        value[e] = est.value
        low[e], high[e] = fit_interval(fit, bounds, LEVEL, cand.bend_weight)
        band = fit_interval(fit, bounds, 0.95, cand.bend_weight)
        recent = t.metric[rows]
        forecasts = [
            make_forecast("m", e + 2, t.mean[e], value[e], recent, now_interval=band),
            make_forecast("m", e + 2, t.mean[e], value[e], recent),
        ]
    return Scored(t, value, low, high, hits[0], hits[1])


def parse_seeds(text: str) -> range:
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def summary(scored: list[Scored]) -> tuple[float, float, float, float, float, int]:
    """Mean error, coverage, median width, as-forecast share, demo ratio, epochs worse."""
    err = np.concatenate([s.error for s in scored])
    cov = np.concatenate([s.covered for s in scored])
    width = np.concatenate([s.width for s in scored])
    hits = np.concatenate([s.as_forecast for s in scored])
    demo = [s for s in scored if s.trace.family == "demo mlp" and s.trace.batch_size == 32]
    ratio = sum(s.mean_error.sum() for s in demo) / max(sum(s.error.sum() for s in demo), 1e-12)
    worse = 0
    for fam in {s.trace.family for s in scored}:
        group = [s for s in scored if s.trace.family == fam]
        now = np.mean([s.error for s in group], axis=0)
        mean = np.mean([s.mean_error for s in group], axis=0)
        worse += int(np.sum(now > mean))
    return (
        float(err.mean()),
        float(cov.mean()),
        float(np.median(width)),
        float(hits.mean()),
        ratio,
        worse,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="5-9", help="seeds to report, e.g. 5-9 (held out)")
    parser.add_argument("--cache", type=Path, default=None, help="folder of cached traces")
    parser.add_argument("--families", default="", help="comma-separated subset (development)")
    parser.add_argument("--default", default=None, help="candidate of the per-family table")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    traces = all_traces(seeds, EPOCHS, args.cache)
    if args.families:
        keep = set(args.families.split(","))
        traces = [t for t in traces if t.family in keep]
    print(describe_machine())
    print(
        f"seeds {seeds.start}-{seeds.stop - 1}, {EPOCHS} epochs, batch sizes {BATCH_SIZES}, "
        f"{len(traces)} runs, interval level {LEVEL}, forecast over {FORECAST_STEPS} batches"
    )
    scored = {name: [replay(t, c) for t in traces] for name, c in CANDIDATES.items()}

    print(
        "\n1. Every candidate over all families (error: points of accuracy; regression: % of loss)"
    )
    print(
        f"{'estimator':<30}{'mean err':>9}{'acc err':>9}{'cover90':>9}{'width':>8}"
        f"{'as fcst':>9}{'demo ratio':>11}{'ep worse':>9}"
    )
    for name, runs in scored.items():
        m, cov, width, hits, ratio, worse = summary(runs)
        acc = np.concatenate([s.error for s in runs if s.trace.family != "regression"]).mean()
        print(
            f"{name:<30}{m:>9.2f}{acc:>9.2f}{100 * cov:>8.0f}%{width:>8.2f}{100 * hits:>8.0f}%"
            f"{ratio:>11.1f}{worse:>9}"
        )

    chosen = args.default or next(iter(CANDIDATES))
    print(f"\n2. {chosen} per family (running mean's error beside it)")
    print(
        f"{'family':<16}{'mean err':>9}{'|mean|':>8}{'cover90':>9}{'width':>8}{'as fcst':>9}"
        f"{'ep worse':>9}{'fcst old':>9}"
    )
    runs = scored[chosen]
    for fam in [f.name for f in FAMILIES]:
        group = [s for s in runs if s.trace.family == fam]
        if not group:
            continue
        m, cov, width, hits, _, worse = summary(group)
        base = float(np.concatenate([s.mean_error for s in group]).mean())
        old_hits = float(np.concatenate([s.as_forecast_old for s in group]).mean())
        print(
            f"{fam:<16}{m:>9.2f}{base:>8.2f}{100 * cov:>8.0f}%{width:>8.2f}{100 * hits:>8.0f}%"
            f"{worse:>9}{100 * old_hits:>8.0f}%"
        )
    print("\n3. Epochs where it is further from the full pass than the running mean (now, mean)")
    for fam in [f.name for f in FAMILIES]:
        group = [s for s in runs if s.trace.family == fam]
        if group:
            now = np.mean([s.error for s in group], axis=0)
            mean = np.mean([s.mean_error for s in group], axis=0)
            cells = [
                f"ep {e + 1}: {now[e]:.2f} vs {mean[e]:.2f}" for e in np.flatnonzero(now > mean)
            ]
            print(f"{fam:<16}{', '.join(cells) or '-'}")
    demo = [s for s in runs if s.trace.family == "demo mlp" and s.trace.batch_size == 32]
    if demo:
        print(
            "demo (batch 32) per epoch, now:  ", np.mean([s.error for s in demo], axis=0).round(2)
        )
        print(
            "demo (batch 32) per epoch, mean: ",
            np.mean([s.mean_error for s in demo], axis=0).round(2),
        )
    print(f"\nDEFAULT_NOW = {DEFAULT_NOW!r} ({make_estimator(DEFAULT_NOW)!r}); z95 = {Z95}")


if __name__ == "__main__":
    main()
