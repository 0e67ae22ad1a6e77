"""Every now value stays in its metric's range and comes with an interval that knows its error."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fitlens.core.estimators import (
    BENDING,
    DEFAULT_NOW,
    EMA,
    FEW_BATCHES,
    FEW_STEPS,
    NOISY,
    WIDE_RATE,
    AdaptiveTrend,
    EMATrend,
    EpochMean,
    LastValue,
    NowEstimate,
    TrendWindow,
    WindowMean,
    fit_interval,
    make_estimator,
)
from fitlens.core.estimators.interval import _why_wide
from fitlens.core.metric_range import NONNEGATIVE, RATE, UNBOUNDED, MetricRange

MAKERS = {
    "mean": EpochMean,
    "ema": lambda **k: EMA(0.9, **k),
    "window": lambda **k: WindowMean(7, **k),
    "trend": lambda **k: TrendWindow(7, **k),
    "last": LastValue,
    "ema_trend": lambda **k: EMATrend(beta=0.8, **k),
    "ema_trend memory": EMATrend,
    "adaptive": lambda **k: AdaptiveTrend((100.0, 400.0), **k),
}
Z90 = NormalDist().inv_cdf(0.95)


@st.composite
def rate_batches(draw):
    """Batch accuracies as they occur: k correct out of n."""
    sizes = draw(st.lists(st.integers(1, 64), min_size=1, max_size=50))
    correct = [draw(st.integers(0, n)) for n in sizes]
    return np.array(correct) / np.array(sizes, dtype=float), np.array(sizes, dtype=float)


@pytest.mark.parametrize("name", MAKERS)
@given(data=rate_batches(), cut=st.integers(0, 50))
def test_a_rate_estimate_and_its_interval_stay_in_0_1_and_the_interval_holds_the_estimate(
    name, data, cut
):
    v, n = data
    est = MAKERS[name](bounds=RATE)
    est.update(v[:cut], n[:cut])
    est.update(v[cut:], n[cut:])
    low, high = est.interval(0.9)
    assert 0.0 <= low <= est.value <= high <= 1.0


@pytest.mark.parametrize("name", MAKERS)
@given(
    v=st.lists(st.floats(0, 1e3), min_size=1, max_size=50),
    level=st.floats(0.5, 0.99),
)
def test_a_loss_estimate_is_never_negative_and_its_interval_holds_it(name, v, level):
    est = MAKERS[name](bounds=NONNEGATIVE)
    est.update(v, 16)
    low, high = est.interval(level)
    assert 0.0 <= low <= est.value <= high


@pytest.mark.parametrize("name", MAKERS)
def test_a_wider_level_gives_a_wider_interval_around_the_same_value(name):
    rng = np.random.default_rng(1)
    est = MAKERS[name](bounds=RATE)
    est.update(rng.binomial(32, 0.7, size=60) / 32, 32)
    (l80, h80), (l95, h95) = est.interval(0.8), est.interval(0.95)
    assert l95 < l80 <= est.value <= h80 < h95


def test_the_rate_interval_is_exactly_z_times_the_binomial_noise_of_the_line():
    """Tightness: half-width = z * sqrt(p(1-p) * noise + bias2), p pulled in by one success
    and one failure over the effective samples; a straight line has no bend to add."""
    est = EMATrend(beta=0.9, bounds=RATE)
    est.update(0.5 + 0.002 * np.arange(40), 32)
    fit = est.fit()
    n = fit.effective_samples
    p = (fit.value * n + 1) / (n + 2)
    bias2 = max(fit.bend**2 - p * (1 - p) * fit.bend_noise, 0.0)
    assert bias2 == 0.0  # exactly linear data
    half = Z90 * math.sqrt(p * (1 - p) * fit.noise)
    low, high = est.interval(0.9)
    assert (low, high) == (pytest.approx(fit.value - half), pytest.approx(fit.value + half))


def test_a_bend_beyond_its_noise_widens_the_interval_by_exactly_its_square():
    est = EMATrend(beta=0.9, bounds=RATE)
    est.update(0.95 - 0.5 * np.exp(-np.arange(60) / 8.0), 32)  # a saturating curve
    fit = est.fit()
    n = fit.effective_samples
    p = (fit.value * n + 1) / (n + 2)
    bias2 = fit.bend**2 - p * (1 - p) * fit.bend_noise
    assert bias2 > 0
    for weight in (0.0, 1.0, 3.0):
        half = Z90 * math.sqrt(p * (1 - p) * fit.noise + weight * bias2)
        low, high = fit_interval(fit, RATE, 0.9, weight)
        assert high - low == pytest.approx(2 * half)


def test_now_1_0019_cannot_happen_an_accuracy_estimate_is_at_most_1_and_the_interval_shows_strain():
    """The issue's case: a line through a fast rise that saturates at 100% reads above 1 at the
    newest batch. With the rate range the value is 1, and the interval reaches down by the
    overshoot plus the noise, so the display can say the line does not fit there."""
    v = np.minimum(0.35 + 0.03 * np.arange(30), 1.0)
    raw = EMATrend(800)
    raw.update(v, 32)
    assert raw.value > 1.0  # what fitlens showed before metrics declared their range
    est = EMATrend(800, bounds=RATE)
    est.update(v, 32)
    fit = est.fit()
    overshoot = fit.value - 1.0
    low, high = est.interval(0.9)
    assert est.value == 1.0 and high == 1.0
    n = fit.effective_samples
    p = (1.0 * n + 1) / (n + 2)
    bias2 = max(fit.bend**2 - p * (1 - p) * fit.bend_noise, 0.0)
    assert 1.0 - low == pytest.approx(Z90 * math.sqrt(p * (1 - p) * fit.noise + bias2) + overshoot)


def test_without_a_measurable_spread_the_interval_is_the_whole_range():
    est = EMATrend(bounds=NONNEGATIVE)
    est.update([0.4, 0.3], 32)  # two batches: no residual to measure a loss's spread
    assert est.interval() == (0.0, math.inf)
    assert all(math.isnan(x) for x in LastValue(bounds=MetricRange(-1.0, 1.0)).interval())
    one = LastValue(bounds=MetricRange(-1.0, 1.0))
    one.update(0.5, 32)  # one batch of a non-rate metric: no spread, so anything in range
    assert one.interval() == (-1.0, 1.0)


def test_bad_levels_and_bounds_are_refused():
    with pytest.raises(ValueError, match=r"`level` in \(0, 1\).*Received: 90"):
        EMATrend().interval(90)
    with pytest.raises(TypeError, match=r"MetricRange.*Received: \(0, 1\)"):
        EMATrend(bounds=(0, 1))  # type: ignore[arg-type]


def _coverage(make, trials: int, bs: int = 32, steps: int = 300) -> float:
    hits = 0
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        t = np.arange(steps)
        tau = [math.inf, 30.0, 100.0, 300.0][seed % 4]  # flat, fast, medium, slow learning
        p = 0.95 - 0.5 * np.exp(-t / tau) if math.isfinite(tau) else np.full(steps, 0.8)
        est = make()
        est.update(rng.binomial(bs, p) / bs, bs)
        low, high = est.interval(0.9)
        hits += low <= p[-1] <= high
    return hits / trials


@pytest.mark.parametrize(
    "make",
    [lambda: EMATrend(bounds=RATE), lambda: make_estimator(DEFAULT_NOW, RATE)],
    ids=["ema_trend", "default"],
)
def test_the_90_percent_interval_covers_85_to_95_percent_of_known_curves(make):
    """Known curves (flat, and saturating at three speeds) plus binomial noise, fixed seeds.
    With 400 trials the share covered has a binomial sd of sqrt(0.9 * 0.1 / 400) = 1.5 points,
    so a calibrated interval lands in 85-95% (3.3 sd either side of 90%) with probability
    above 99.9%, while one whose true coverage is 80% (sd 2 points, 2.5 sd below 85%) or 99%
    (sd 0.5 points) passes with probability under 1%."""
    assert 0.85 <= _coverage(make, 400) <= 0.95


def test_unbounded_estimators_keep_their_old_repr_and_bounded_ones_show_the_range():
    assert repr(EMA(0.9)) == "EMA(beta=0.9)"
    assert repr(EMA(0.9, bounds=RATE)) == "EMA(beta=0.9, bounds=RATE)"
    assert repr(EMATrend(bounds=NONNEGATIVE)) == "EMATrend(memory=800.0, bounds=NONNEGATIVE)"
    assert repr(EMATrend(beta=0.5, bounds=RATE)) == "EMATrend(beta=0.5, bounds=RATE)"
    assert make_estimator("ema_trend").bounds == UNBOUNDED
    assert make_estimator(EMA(0.5, bounds=RATE)).bounds == RATE
    assert make_estimator(EMA(0.5, bounds=RATE), NONNEGATIVE).bounds == NONNEGATIVE


def _loss_batches(seed: int = 2, steps: int = 40):
    rng = np.random.default_rng(seed)
    n = rng.integers(4, 64, size=steps).astype(float)
    v = 2.0 - 0.01 * np.arange(steps) + rng.normal(0, 0.5, size=steps) / np.sqrt(n)
    return v, n


def test_a_mean_of_a_loss_has_the_interval_of_its_sample_variance_over_the_samples():
    """EpochMean: spread = sum n (y - mean)^2 / (batches - 1), variance of the mean spread / N."""
    v, n = _loss_batches()
    est = EpochMean(bounds=NONNEGATIVE)
    est.update(v[:25], n[:25])
    est.update(v[25:], n[25:])
    mean = np.sum(n * v) / n.sum()
    spread = np.sum(n * (v - mean) ** 2) / (len(v) - 1)
    half = Z90 * math.sqrt(spread / n.sum())
    assert est.interval(0.9) == (pytest.approx(mean - half), pytest.approx(mean + half))


def test_a_window_of_a_loss_uses_the_scatter_around_a_line_over_the_window():
    """WindowMean: value = the window's mean; spread from residuals of a line over the window."""
    v, n = _loss_batches()
    est = WindowMean(20, bounds=NONNEGATIVE)
    est.update(v, n)
    y, w = v[-20:], n[-20:]
    x = np.arange(20.0) - 19
    mean = np.sum(w * y) / w.sum()
    X = np.vander(x, 2, increasing=True)
    hat = X @ np.linalg.solve(X.T @ (w[:, None] * X), X.T * w)
    rss = np.sum(w * (y - hat @ y) ** 2)
    spread = rss / (20 - np.trace(hat))
    bend = mean - (hat @ y)[-1]
    c0, c1 = w / w.sum(), hat[-1]
    bias2 = max(bend**2 - spread * np.sum((c0 - c1) ** 2 / w), 0.0)
    half = Z90 * math.sqrt(spread / w.sum() + bias2)
    low, high = est.interval(0.9)
    assert (low, high) == (pytest.approx(mean - half), pytest.approx(mean + half))


def test_ignored_nans_leave_the_interval_of_the_finite_batches():
    v, n = _loss_batches()
    a, b = EMATrend(bounds=NONNEGATIVE, nan_policy="ignore"), EMATrend(bounds=NONNEGATIVE)
    a.update(np.insert(v, 5, math.nan), np.insert(n, 5, 32.0))
    b.update(v, n)
    assert a.interval() == b.interval() and a.value == b.value
    c = EMATrend(bounds=NONNEGATIVE)
    c.update(np.insert(v, 5, math.nan), np.insert(n, 5, 32.0))
    assert math.isnan(c.value) and all(math.isnan(x) for x in c.interval())


def test_levels_outside_0_1_are_refused_and_the_default_level_is_90_percent():
    est = EMATrend(bounds=RATE)
    est.update([0.5, 0.6, 0.7, 0.75], 32)
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="`level` in"):
            est.interval(level)
    assert fit_interval(est.fit(), RATE) == fit_interval(est.fit(), RATE, 0.9) == est.interval()


def test_adaptive_trend_counts_the_bend_twice_in_its_interval():
    est = AdaptiveTrend((3200.0,), bounds=RATE)  # one long memory through a sharp bend
    est.update(0.95 - 0.5 * np.exp(-np.arange(60) / 8.0), 32)
    fit = est.fit()
    assert est.interval() == fit_interval(fit, RATE, 0.9, 2.0) != fit_interval(fit, RATE, 0.9, 1.0)


def test_batches_without_weights_count_one_sample_each():
    est = EpochMean()
    est.update([0.5, 0.7])
    assert est.weight == 2.0


@pytest.mark.parametrize("name", MAKERS)
@given(data=rate_batches(), cut=st.integers(0, 50))
def test_an_estimate_read_with_its_interval_equals_value_and_interval_read_apart(name, data, cut):
    # the display reads value and interval in one fit; it must be the same numbers
    v, n = data
    est = MAKERS[name](bounds=RATE)
    est.update(v[:cut], n[:cut])
    e = est.estimate()
    same = (e.value, e.low, e.high)
    assert np.array_equal(same, (est.value, *est.interval(0.9)), equal_nan=True)
    if e.value == e.value:  # some weight seen
        assert 0.0 <= e.low <= e.value <= e.high <= 1.0
        assert e.interval(0.95) == est.interval(0.95)  # another level from the same fit
    rest = est.estimate_with(v[cut:], n[cut:])
    est.update(v[cut:], n[cut:])
    assert np.array_equal(
        (rest.value, rest.low, rest.high), (est.value, *est.interval(0.9)), equal_nan=True
    )


@given(
    values=st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=40),
    sizes=st.lists(st.integers(1, 64), min_size=40, max_size=40),
)
def test_a_loss_estimate_and_interval_stay_at_or_above_zero(values, sizes):
    est = AdaptiveTrend((100.0, 400.0), bounds=NONNEGATIVE)
    est.update(np.abs(values), sizes[: len(values)])
    e = est.estimate()
    assert 0.0 <= e.low <= e.value <= e.high


def test_the_estimate_is_fitted_once_for_value_interval_and_words():
    fits = []

    class Counted(EMATrend):
        def fit(self):
            fits.append(1)
            return super().fit()

    est = Counted(beta=0.9, bounds=RATE)
    est.update([0.5, 0.6, 0.7, 0.8], 32)
    est.estimate()
    assert len(fits) == 1
    est.estimate_with(np.array([0.9]), np.array([32.0]))
    assert len(fits) == 2


def test_a_now_read_back_from_a_file_knows_only_its_own_level():
    e = NowEstimate(0.9, 0.88, 0.92)
    assert e.interval(0.9) == (0.88, 0.92)
    with pytest.raises(ValueError, match=r"only level 0\.9 is known"):
        e.interval(0.95)


def test_words_say_few_batches_at_the_start_and_nothing_once_the_interval_is_narrow():
    est = AdaptiveTrend(bounds=RATE)
    est.update([0.5, 0.75], 8)  # 16 samples: ±0.2
    assert est.estimate().note == FEW_BATCHES
    loss = AdaptiveTrend(bounds=NONNEGATIVE)
    loss.update([1.0], 8)  # one batch: its scatter is unknown, the interval unbounded
    assert loss.estimate().note == FEW_BATCHES and loss.estimate().high == math.inf
    steady = AdaptiveTrend(bounds=RATE)
    steady.update(np.full(100, 0.9), 256)
    e = steady.estimate()
    assert e.note is None and e.half_width < WIDE_RATE


def test_words_say_the_curve_bends_where_a_line_overshoots_a_plateau():
    est = EMATrend(beta=0.9, bounds=RATE)
    est.update(np.r_[np.linspace(0.2, 0.9, 20), np.full(10, 0.9)], 1000)  # noise-free samples
    e = est.estimate()
    assert e.note == BENDING
    assert e.value > 0.95 and e.low < 0.9 <= e.high  # overshoots, and the interval says so


@pytest.mark.parametrize(
    ("value", "half", "rate", "wide"),
    [
        (0.9, 0.05, True, False),
        (0.9, 0.0501, True, True),
        (2.0, 0.2, False, False),
        (2.0, 0.2001, False, True),
    ],
)
def test_an_interval_is_wide_past_5_points_for_a_rate_and_10_percent_otherwise(
    value, half, rate, wide
):
    est = EpochMean(bounds=RATE if rate else NONNEGATIVE)
    est.update([value], 100)
    fit = est.fit()
    note = _why_wide(fit, est.bounds, value, half, 1.0)
    assert (note is not None) == wide


def test_words_say_noisy_batches_when_noise_keeps_the_interval_wide_after_the_start():
    # 4 samples a batch at a rate of 0.5: no bend, binomial noise alone; few batches first
    est = AdaptiveTrend(bounds=RATE)
    est.update(np.full(FEW_STEPS - 1, 0.5), 4)
    assert est.estimate().note == FEW_BATCHES
    est.update(np.full(100, 0.5), 4)
    e = est.estimate()
    assert e.note == NOISY and e.half_width > WIDE_RATE
