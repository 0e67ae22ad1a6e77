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
from functools import lru_cache
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

    Rows whose fit of ``degree`` and of ``degree + 1`` both exist (the usual case) are solved
    together in a few stacked numpy calls; the others one by one. Each row's result depends
    only on that row.

    Args:
        m, t: ``(rows, 2 degree + 3)`` moment sums; my: ``(rows, degree + 2)``.
        syy, batches: ``(rows,)``.
        steps, degree: as for `local_fit`.
    """
    rows = m.shape[0]
    out: list[LocalFit | None] = [None] * rows
    size = degree + 1
    if (
        degree >= 1
        and steps >= degree + 3
        and m.shape[1] > 2 * size
        and t.shape[1] > 2 * size
        and my.shape[1] > size
    ):
        good = np.flatnonzero(m[:, 0] > 0)
        if good.size:
            _fill_stacked(out, good, m, my, t, syy, batches, degree)
    for i in range(rows):
        if out[i] is None:
            out[i] = _local_fit_one(
                m[i], my[i], t[i], float(syy[i]), float(batches[i]), steps, degree
            )
    return cast(list[LocalFit], out)


@lru_cache(maxsize=16)
def _hankel_layout(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The Hankel index ``i + j`` and the identity, for ``size`` coefficients (read-only)."""
    idx = np.arange(size)
    hank, eye = idx[:, None] + idx[None, :], np.eye(size)
    hank.flags.writeable = eye.flags.writeable = False
    return hank, eye


def _stacked_solve(
    m: np.ndarray, my: np.ndarray, t: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(solvable, theta, g, trace, t_hankel)`` of fits with ``size`` coefficients, per row."""
    hank, eye = _hankel_layout(size)
    g_mat, t_mat = m[:, hank], t[:, hank]
    eig = np.linalg.eigvalsh(g_mat)
    solvable = (eig[:, 0] > _CONDITION * eig[:, -1]) & (_CONDITION * eig[:, -1] > 0)
    rhs = np.empty((m.shape[0], size, size + 2))  # my, e0 and t's Hankel matrix, side by side
    rhs[:, :, 0] = my[:, :size]
    rhs[:, :, 1] = eye[:, 0]
    rhs[:, :, 2:] = t_mat
    g_safe = np.where(solvable[:, None, None], g_mat, eye)  # unsolvable rows: not used
    sol = np.linalg.solve(g_safe, rhs)
    trace = np.trace(sol[:, :, 2:], axis1=1, axis2=2)
    return solvable, sol[:, :, 0], sol[:, :, 1], trace, t_mat


def _quad(a: np.ndarray, mat: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a[r] @ mat[r] @ b[r]`` per row, summed in an order that does not depend on the rows."""
    return np.sum(np.sum(a[:, :, None] * mat, axis=1) * b, axis=1)


def _fill_stacked(
    out: list[LocalFit | None],
    rows: np.ndarray,
    m: np.ndarray,
    my: np.ndarray,
    t: np.ndarray,
    syy: np.ndarray,
    batches: np.ndarray,
    degree: int,
) -> None:
    """Fill ``out`` at ``rows`` where both the fit and the one a degree higher can be solved."""
    if rows.size < m.shape[0]:
        m, my, t, syy, batches = m[rows], my[rows], t[rows], syy[rows], batches[rows]
    scale = np.maximum(np.sqrt(m[:, 2] / m[:, 0]), 1.0)  # x spans >= 1 batch
    powers = scale[:, None] ** -np.arange(max(m.shape[1], t.shape[1]))
    m, t, my = (
        m * powers[:, : m.shape[1]],
        t * powers[:, : t.shape[1]],
        my * powers[:, : my.shape[1]],
    )
    size = degree + 1
    ok, theta, g, trace, t1 = _stacked_solve(m, my, t, size)
    ok2, theta2, g2, trace2, t2 = _stacked_solve(m, my, t, size + 1)
    noise = _quad(g, t1, g)
    rss = syy - np.sum(theta * my[:, :size], axis=1)
    dof = batches - trace
    bend = theta[:, 0] - theta2[:, 0]
    bend_noise = noise + _quad(g2, t2, g2) - 2 * _quad(g, t2[:, :size, :], g2)
    rss2 = syy - np.sum(theta2 * my[:, : size + 1], axis=1)
    dof2 = batches - trace2
    higher = dof2 >= 1.0  # residuals of the higher fit: scatter without the bend in it
    rss, dof = np.where(higher, rss2, rss), np.where(higher, dof2, dof)
    effective = m[:, 0] ** 2 / t[:, 0]
    # the rows' fields as Python floats, converted once per column (a read fits ten rows)
    fields = zip(
        rows.tolist(),
        (ok & ok2).tolist(),
        theta[:, 0].tolist(),
        noise.tolist(),
        effective.tolist(),
        rss.tolist(),
        dof.tolist(),
        bend.tolist(),
        bend_noise.tolist(),
        strict=True,
    )
    for row, solved, value, noise_j, effective_j, rss_j, dof_j, bend_j, bend_noise_j in fields:
        if solved:
            spread = max(rss_j, 0.0) / dof_j if dof_j >= 1.0 else math.nan
            out[row] = LocalFit(
                value, degree, noise_j, effective_j, spread, bend_j, max(bend_noise_j, 0.0)
            )


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
