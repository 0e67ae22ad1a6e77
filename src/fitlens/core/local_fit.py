"""A weighted polynomial fit read at the newest batch, from moment sums: value, noise and bend.

Batch ``i`` sits at ``x_i <= 0`` (the newest at 0), has value ``y_i`` (the mean over its ``n_i``
samples) and fit weight ``w_i = d_i * n_i``, where ``d_i`` is the estimator's discount (``beta**-x``
for an exponential memory, 1 inside a window). Everything below comes from sums an estimator can
update in O(1) per batch and add across ranks:

* ``m[k] = sum w x^k`` and ``my[k] = sum w x^k y``: the normal equations of the fit;
* ``t[k] = sum d^2 n x^k`` (``= sum w^2 / n x^k``): with per-sample variance ``s2`` a batch value
  has variance ``s2 / n``, so the fit's value at 0, ``sum c_i y_i``, has variance
  ``s2 * g' T g`` with ``g = G^-1 e0`` (``G``, ``T`` the Hankel matrices of ``m`` and ``t``);
* ``syy = sum w y^2`` and ``batches = sum d``: the weighted residual sum of squares has
  expectation ``s2 * (batches - trace(G^-1 T))``, which estimates ``s2`` when it is not known.

The *bend* is how much a fit one degree higher disagrees at the newest batch: the bias of the
lower-degree fit if the curve bends within the memory. ``bend_noise`` is that difference's own
variance per unit ``s2``, so ``bend**2 - s2 * bend_noise`` estimates the squared bias.

x is rescaled by its weighted RMS (when above one batch) before solving so that the Hankel matrices stay well
conditioned whatever the memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np

#: A fit is used only if its (rescaled) normal matrix has eigenvalues within this ratio.
_CONDITION = 1e-10


@dataclass(frozen=True)
class LocalFit:
    """A fit of ``degree`` at the newest batch (NaN fields where there was too little data).

    Attributes:
        value: the fitted value at the newest batch (not clipped to any range).
        degree: the degree used: the one asked for, or lower when the batches cannot support it.
        noise: the variance of ``value`` per unit per-sample variance.
        effective_samples: ``(sum w)^2 / sum w^2/n``: samples an unweighted mean would need for
            the same noise (at degree 0).
        spread: per-sample variance estimated from the residuals (NaN: too few batches).
        bend: ``value`` minus the value of a fit one degree higher (NaN: too few batches).
        bend_noise: the variance of ``bend`` per unit per-sample variance.
    """

    value: float
    degree: int
    noise: float
    effective_samples: float
    spread: float
    bend: float
    bend_noise: float


def _hankel(s: np.ndarray, size: int) -> np.ndarray:
    idx = np.arange(size)
    return s[idx[:, None] + idx[None, :]]


def _solvable(g: np.ndarray) -> bool:
    eig = np.linalg.eigvalsh(g)
    return bool(eig[0] > _CONDITION * eig[-1] > 0)


def _solve(m: np.ndarray, my: np.ndarray, t: np.ndarray, degree: int, steps: int):
    """``(theta, g, dof_used)`` of the fit of ``degree``, or None if it cannot be made."""
    size = degree + 1
    if steps < degree + 2 or 2 * degree >= m.size or degree >= my.size:
        return None
    g_mat = _hankel(m, size)
    if not _solvable(g_mat):
        return None
    theta = np.linalg.solve(g_mat, my[:size])
    g = np.linalg.solve(g_mat, np.eye(size)[0])
    trace = float(np.trace(np.linalg.solve(g_mat, _hankel(t, size))))
    return theta, g, trace


def local_fit(
    m: np.ndarray,
    my: np.ndarray,
    t: np.ndarray,
    syy: float,
    batches: float,
    steps: int = 0,
    degree: int = 0,
) -> LocalFit:
    """Fit ``degree`` (falling back to lower degrees) and measure its noise and bend.

    Args:
        m, my, t: the moment sums above, ``m`` and ``t`` up to ``x^(2 degree + 2)`` and ``my`` up
            to ``x^(degree + 1)`` (shorter arrays just leave the bend or spread unknown).
        syy, batches: ``sum w y^2`` and ``sum d``.
        steps: batches seen; a fit of degree ``k >= 1`` needs at least ``k + 2``.
        degree: the degree wanted (0: a weighted mean, 1: a line).

    Returns:
        The fit; ``value`` is NaN when no weight has been seen.
    """
    m, my, t = np.asarray(m)[None], np.asarray(my)[None], np.asarray(t)[None]
    return local_fits(m, my, t, np.array([syy]), np.array([batches]), steps, degree)[0]


def local_fits(
    m: np.ndarray,
    my: np.ndarray,
    t: np.ndarray,
    syy: np.ndarray,
    batches: np.ndarray,
    steps: int = 0,
    degree: int = 0,
) -> list[LocalFit]:
    """`local_fit` of several estimators' sums (one per row) over the same ``steps``.

    For a line (``degree=1``, every trend estimator), rows whose line and parabola are both
    well conditioned (the usual case) are solved together in closed form (`_fill_lines`); the
    others one by one. Each row's result depends only on that row.

    Args:
        m, t: ``(rows, 2 degree + 3)`` moment sums; my: ``(rows, degree + 2)``.
        syy, batches: ``(rows,)``.
        steps, degree: as for `local_fit`.
    """
    rows = m.shape[0]
    out: list[LocalFit | None] = [None] * rows
    if degree == 1 and steps >= 4 and m.shape[1] >= 5 and t.shape[1] >= 5 and my.shape[1] >= 3:
        good = np.flatnonzero(m[:, 0] > 0)
        if good.size:
            _fill_lines(out, good, m, my, t, syy, batches)
    for i in range(rows):
        if out[i] is None:
            out[i] = _local_fit_one(
                m[i], my[i], t[i], float(syy[i]), float(batches[i]), steps, degree
            )
    return cast(list[LocalFit], out)


def _fill_lines(
    out: list[LocalFit | None],
    rows: np.ndarray,
    m: np.ndarray,
    my: np.ndarray,
    t: np.ndarray,
    syy: np.ndarray,
    batches: np.ndarray,
) -> None:
    """Fill ``out`` at ``rows`` with the line's fit (bend from the parabola) where both normal
    matrices are positive definite with a Frobenius condition number below 1 / `_CONDITION`
    (`_line_fit`, row by row on Python floats: a display reads ten rows at a time, for which
    a hundred float operations per row cost less than the numpy calls on arrays of ten)."""
    for row, m_r, my_r, t_r, syy_r, batches_r in zip(
        rows.tolist(),
        m[rows].tolist(),
        my[rows].tolist(),
        t[rows].tolist(),
        syy[rows].tolist(),
        batches[rows].tolist(),
        strict=True,
    ):
        out[row] = _line_fit(m_r, my_r, t_r, syy_r, batches_r)


def _line_fit(
    m: list[float], my: list[float], t: list[float], syy: float, batches: float
) -> LocalFit | None:
    """The line's `LocalFit` from one row's sums (``m``, ``t``: 5; ``my``: 3; ``m[0] > 0``), or
    None when the line's or the parabola's normal matrix is not well conditioned.

    The 2x2 and 3x3 symmetric systems are solved with their adjugates. Positive definiteness is
    tested by the leading minors, the conditioning by the Frobenius condition number, which
    bounds the 2-norm one that `_local_fit_one` tests from above (by at most 3x for a 3x3): a
    row accepted here is one it accepts; a row refused here goes to it.
    """
    m0 = m[0]
    spread2 = m[2] / m0  # weighted mean of x^2: x is rescaled by its root when above 1
    s1 = 1.0 / math.sqrt(spread2) if spread2 > 1.0 else 1.0
    s2 = s1 * s1
    s3, s4 = s2 * s1, s2 * s2
    m1, m2, m3, m4 = m[1] * s1, m[2] * s2, m[3] * s3, m[4] * s4
    t0, t1, t2, t3, t4 = t[0], t[1] * s1, t[2] * s2, t[3] * s3, t[4] * s4
    y0, y1, y2 = my[0], my[1] * s1, my[2] * s2
    # the line: G = [[m0, m1], [m1, m2]], adjugate [[m2, -m1], [-m1, m0]]
    det = m0 * m2 - m1 * m1
    if not (det > 0 and (m0 * m0 + 2 * m1 * m1 + m2 * m2) * _CONDITION < det):
        return None
    # the parabola: G2 = Hankel(m0..m4), adjugate A (symmetric; its last entry is det)
    a00, a01, a02 = m2 * m4 - m3 * m3, m2 * m3 - m1 * m4, m1 * m3 - m2 * m2
    a11, a12 = m0 * m4 - m2 * m2, m1 * m2 - m0 * m3
    det2 = m0 * a00 + m1 * a01 + m2 * a02
    frob_g2 = m0 * m0 + 2 * m1 * m1 + 3 * m2 * m2 + 2 * m3 * m3 + m4 * m4
    frob_a2 = a00 * a00 + a11 * a11 + det * det + 2 * (a01 * a01 + a02 * a02 + a12 * a12)
    if not (det2 > 0 and frob_g2 * frob_a2 * _CONDITION**2 < det2 * det2):
        return None
    g0, g1 = m2 / det, -m1 / det  # G^-1 e0
    theta0 = (m2 * y0 - m1 * y1) / det
    theta1 = (m0 * y1 - m1 * y0) / det
    trace = (m2 * t0 - 2 * m1 * t1 + m0 * t2) / det
    h0, h1, h2 = a00 / det2, a01 / det2, a02 / det2  # G2^-1 e0
    p0 = (a00 * y0 + a01 * y1 + a02 * y2) / det2
    p1 = (a01 * y0 + a11 * y1 + a12 * y2) / det2
    p2 = (a02 * y0 + a12 * y1 + det * y2) / det2
    trace2 = (a00 * t0 + a11 * t2 + det * t4 + 2 * (a01 * t1 + a02 * t2 + a12 * t3)) / det2
    noise = g0 * g0 * t0 + 2 * g0 * g1 * t1 + g1 * g1 * t2  # g' T g
    noise2 = (
        h0 * (h0 * t0 + 2 * h1 * t1 + 2 * h2 * t2) + h1 * (h1 * t2 + 2 * h2 * t3) + h2 * h2 * t4
    )
    cross = g0 * (h0 * t0 + h1 * t1 + h2 * t2) + g1 * (h0 * t1 + h1 * t2 + h2 * t3)  # g' T2 h
    dof2 = batches - trace2
    if dof2 >= 1.0:  # residuals of the higher fit: scatter without the bend in it
        rss, dof = syy - (p0 * y0 + p1 * y1 + p2 * y2), dof2
    else:
        rss, dof = syy - (theta0 * y0 + theta1 * y1), batches - trace
    spread = max(rss, 0.0) / dof if dof >= 1.0 else math.nan
    bend_noise = max(noise + noise2 - 2 * cross, 0.0)
    return LocalFit(theta0, 1, noise, m0 * m0 / t0, spread, theta0 - p0, bend_noise)


def _local_fit_one(
    m: np.ndarray,
    my: np.ndarray,
    t: np.ndarray,
    syy: float,
    batches: float,
    steps: int,
    degree: int,
) -> LocalFit:
    """`local_fit` of one row, step by step (any case, including too little data)."""
    nan = math.nan
    if not m[0] > 0:
        return LocalFit(nan, 0, nan, 0.0, nan, nan, nan)
    scale = max(math.sqrt(m[2] / m[0]), 1.0) if m.size > 2 else 1.0  # x spans >= 1 batch
    powers = scale ** -np.arange(max(m.size, t.size))
    m, t, my = m * powers[: m.size], t * powers[: t.size], my * powers[: my.size]
    fit = None
    while fit is None and degree > 0:
        fit = _solve(m, my, t, degree, steps)
        if fit is None:
            degree -= 1
    if fit is None:  # degree 0: the weighted mean always exists once m[0] > 0
        fit = (my[:1] / m[0], np.array([1.0 / m[0]]), t[0] / m[0])
    theta, g, trace = fit
    size = degree + 1
    noise = float(g @ _hankel(t, size) @ g)
    rss, dof = syy - float(theta @ my[:size]), batches - trace
    higher = _solve(m, my, t, degree + 1, steps) if 2 * degree + 2 < t.size else None
    bend = bend_noise = nan
    if higher is not None:
        theta2, g2, trace2 = higher
        t2 = _hankel(t, size + 1)
        bend = float(theta[0] - theta2[0])
        bend_noise = float(g @ t2[:size, :size] @ g + g2 @ t2 @ g2 - 2 * g @ t2[:size, :] @ g2)
        rss2, dof2 = syy - float(theta2 @ my[: size + 1]), batches - trace2
        if dof2 >= 1.0:  # residuals of the higher fit: scatter without the bend in it
            rss, dof = rss2, dof2
    spread = max(rss, 0.0) / dof if dof >= 1.0 else nan
    return LocalFit(
        float(theta[0]), degree, noise, float(m[0] ** 2 / t[0]), spread, bend, max(bend_noise, 0.0)
    )
