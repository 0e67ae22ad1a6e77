"""`local_fit` against explicit numpy matrices: value, noise, spread, bend, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fitlens.core.estimators import EMATrend
from fitlens.core.local_fit import local_fit


@st.composite
def batches(draw, min_size=1):
    vals = draw(st.lists(st.floats(0, 1), min_size=min_size, max_size=40))
    sizes = draw(st.lists(st.integers(1, 64), min_size=len(vals), max_size=len(vals)))
    return np.array(vals), np.array(sizes, dtype=float)


def naive(v, n, decay, degree):
    """Value at the newest batch, its coefficients, and the residual spread, by matrices."""
    x = np.arange(len(v), dtype=float) - (len(v) - 1)
    d = decay ** (-x)
    w = d * n
    X = np.vander(x, degree + 1, increasing=True)
    gram = X.T @ (w[:, None] * X)
    c = np.linalg.solve(gram, X.T * w)[0]  # value = c @ v
    hat = X @ np.linalg.solve(gram, X.T * w)
    resid = v - hat @ v
    dof = np.trace((np.eye(len(v)) - hat) * (d[None, :]))  # trace(W (I - P) N^-1)
    return float(c @ v), c, float(w @ resid**2), float(dof)


@given(batches(min_size=6), st.floats(0.6, 0.95))
def test_the_line_its_noise_and_its_bend_match_the_explicit_weighted_least_squares(data, decay):
    v, n = data
    est = EMATrend(beta=decay)
    est.update(v, n)
    fit = est.fit()
    value, c, _, _ = naive(v, n, decay, 1)
    value2, c2, rss2, dof2 = naive(v, n, decay, 2)
    scale = 1 + np.abs(v).max()
    assert fit.degree == 1
    assert fit.value == pytest.approx(value, abs=1e-7 * scale)
    assert fit.noise == pytest.approx(float(np.sum(c**2 / n)), rel=1e-6)
    assert fit.bend == pytest.approx(value - value2, abs=1e-6 * scale)
    assert fit.bend_noise == pytest.approx(float(np.sum((c - c2) ** 2 / n)), rel=1e-5, abs=1e-12)
    assert fit.effective_samples == pytest.approx(
        np.sum(decay ** np.arange(len(v))[::-1] * n) ** 2
        / np.sum(decay ** (2 * np.arange(len(v))[::-1]) * n)
    )
    if dof2 >= 1:
        assert fit.spread == pytest.approx(max(rss2, 0) / dof2, rel=1e-5, abs=1e-9)


def test_the_residual_spread_is_unbiased_for_the_per_sample_variance():
    """Mean over fixed seeds of the spread estimate vs the per-sample variance it estimates:
    400 draws, each with relative sd ~ sqrt(2 / dof) ~ 0.2, give a mean within ~3% (3 sd)."""
    rng = np.random.default_rng(0)
    n = rng.integers(8, 64, size=80).astype(float)
    spreads = []
    for _ in range(400):
        v = 0.3 - 0.001 * np.arange(80) + rng.normal(0, 1.0, size=80) / np.sqrt(n)
        est = EMATrend(beta=0.95)
        est.update(v, n)
        spreads.append(est.fit().spread)
    assert np.mean(spreads) == pytest.approx(1.0, abs=0.03)


def test_too_few_batches_for_the_line_fall_back_to_the_weighted_mean():
    est = EMATrend(beta=0.9)
    est.update([0.2, 0.6], [10, 30])
    fit = est.fit()
    assert (fit.degree, fit.value) == (
        0,
        pytest.approx((0.9 * 10 * 0.2 + 30 * 0.6) / (0.9 * 10 + 30)),
    )
    assert np.isnan(fit.bend) and np.isnan(fit.spread)


def test_all_weight_on_one_batch_is_a_flat_fit_that_returns_that_batch():
    """The flat-fit fallback: three steps, but only one carries samples, so no slope exists."""
    est = EMATrend(beta=0.9)
    est.update([0.9, 0.1, 0.4], [0, 0, 16])
    fit = est.fit()
    assert (fit.degree, fit.value) == (0, pytest.approx(0.4))


def test_no_weight_yet_gives_nan():
    fit = local_fit(np.zeros(5), np.zeros(3), np.zeros(5), 0.0, 0.0, 3, 1)
    assert np.isnan(fit.value) and fit.effective_samples == 0.0


@given(batches(min_size=6), st.floats(0.6, 0.95), st.lists(st.integers(1, 40), max_size=3))
def test_chunked_updates_give_the_same_noise_spread_and_bend_as_one_block(data, decay, cuts):
    v, n = data
    whole, chunked = EMATrend(beta=decay), EMATrend(beta=decay)
    whole.update(v, n)
    for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(v)], strict=True):
        chunked.update(v[a:b], n[a:b])
    f, g = whole.fit(), chunked.fit()
    for field in ("value", "noise", "spread", "bend", "bend_noise", "effective_samples"):
        assert getattr(g, field) == pytest.approx(
            getattr(f, field), rel=1e-6, abs=1e-9, nan_ok=True
        )


def test_a_leading_batch_without_samples_does_not_count_as_an_observation():
    v = np.linspace(0.2, 0.8, 12) + 0.05 * np.sin(1.7 * np.arange(12))  # some scatter
    n = np.full(12, 16.0)
    plain, padded = EMATrend(beta=0.9), EMATrend(beta=0.9)
    plain.update(v, n)
    padded.update(np.r_[0.5, v], np.r_[0.0, n])
    assert padded.fit().spread == pytest.approx(plain.fit().spread, rel=1e-9)


def _lapack_lines(m, my, t, syy, batches):
    """The stacked fit of lines as fitlens solved it before the closed form (eigvalsh for the
    condition, LAPACK solves): ``(solved, value, noise, spread, bend, bend_noise)`` per row."""
    scale = np.maximum(np.sqrt(m[:, 2] / m[:, 0]), 1.0)
    powers = scale[:, None] ** -np.arange(5)
    m, t, my = m * powers, t * powers, my * powers[:, :3]
    out = []
    for size in (2, 3):
        hank = np.add.outer(np.arange(size), np.arange(size))
        g_mat, t_mat = m[:, hank], t[:, hank]
        eig = np.linalg.eigvalsh(g_mat)
        solvable = (eig[:, 0] > 1e-10 * eig[:, -1]) & (eig[:, -1] > 0)
        g_mat = np.where(solvable[:, None, None], g_mat, np.eye(size))  # refused rows: unused
        theta = np.linalg.solve(g_mat, my[:, :size, None])[:, :, 0]
        g = np.linalg.solve(g_mat, np.eye(size)[None, :, :1].repeat(len(m), 0))[:, :, 0]
        trace = np.trace(np.linalg.solve(g_mat, t_mat), axis1=1, axis2=2)
        out.append((solvable, theta, g, trace, t_mat))
    (ok, theta, g, trace, _), (ok2, theta2, g2, trace2, t2) = out
    quad = np.einsum
    noise = quad("ri,rij,rj->r", g, t2[:, :2, :2], g)
    bend_noise = (
        noise + quad("ri,rij,rj->r", g2, t2, g2) - 2 * quad("ri,rij,rj->r", g, t2[:, :2], g2)
    )
    rss, dof = syy - np.sum(theta * my[:, :2], 1), batches - trace
    rss2, dof2 = syy - np.sum(theta2 * my, 1), batches - trace2
    rss, dof = np.where(dof2 >= 1, rss2, rss), np.where(dof2 >= 1, dof2, dof)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(dof >= 1, np.maximum(rss, 0) / dof, np.nan)
    cond = np.linalg.cond(m[:, np.add.outer(np.arange(3), np.arange(3))])
    return ok & ok2, theta[:, 0], noise, spread, theta[:, 0] - theta2[:, 0], bend_noise, cond


@given(
    st.integers(0, 2**32 - 1),
    st.integers(4, 3000),
    st.sampled_from([1.0, 4.0, 32.0, 512.0]),
    st.floats(0.0, 0.5),
)
def test_lines_solved_in_closed_form_equal_the_lapack_solve_up_to_float64_rounding(
    seed, steps, size, zero_share
):
    """`local_fits` solves every line's 2x2 and 3x3 normal equations with adjugates; the result
    must be the LAPACK solve's (the earlier implementation, kept above) up to the rounding a
    solve amplifies by the rescaled matrix's condition number, for the lines of every memory
    `AdaptiveTrend` uses, with weightless batches among them; a row the closed form refuses is
    one that is ill conditioned (it then takes the one-by-one path, which tests the 2-norm)."""
    from fitlens.core.local_fit import local_fits

    rng = np.random.default_rng(seed)
    v = 0.9 - 0.5 * np.exp(-np.arange(steps) / 300.0) + 0.05 * rng.standard_normal(steps)
    w = np.where(rng.random(steps) < zero_share, 0.0, size)
    w[-1] = size
    lines = [EMATrend(memory) for memory in (30.0, 300.0, 600.0, 1200.0, 2400.0, 4800.0, 1e5)]
    for line in lines:
        line.update(v, w)
    m, my, t = (np.array([getattr(line, k) for line in lines]) for k in ("m", "my", "t"))
    syy = np.array([line.syy for line in lines])
    batches_ = np.array([line.batches for line in lines])
    fits = local_fits(m, my, t, syy, batches_, steps, 1)
    solved, value, noise, spread, bend, bend_noise, cond = _lapack_lines(m, my, t, syy, batches_)
    eps = np.finfo(float).eps
    for i, fit in enumerate(fits):
        if not solved[i]:
            assert cond[i] > 1e9  # refused by the earlier code too: ill conditioned
            continue
        tol = 64 * eps * cond[i]
        scale = max(1.0, abs(value[i]))
        assert fit.degree == 1
        assert fit.value == pytest.approx(value[i], rel=tol, abs=tol * scale)
        assert fit.bend == pytest.approx(bend[i], rel=tol, abs=tol * scale)
        assert fit.noise == pytest.approx(noise[i], rel=tol)
        assert fit.bend_noise == pytest.approx(max(bend_noise[i], 0.0), rel=tol, abs=tol * noise[i])
        assert fit.spread == pytest.approx(spread[i], rel=tol, abs=tol * scale, nan_ok=True)
