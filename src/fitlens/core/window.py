"""Running-mean window algebra: the exact mean of the items between two running means.

A running mean ``m_k`` over total weight ``W_k`` (samples or steps) and an earlier one ``m_j``
over ``W_j`` determine the mean of the items in between exactly:
``(W_k m_k - W_j m_j) / (W_k - W_j)``. `fitlens explain` uses it on the rounded means of a
Keras log (with bounds); the Keras callback uses it on full-precision means to recover each
batch's value. Standard library only.
"""

from __future__ import annotations


def window_mean(w_j: float, m_j: float, w_k: float, m_k: float) -> float:
    """Exact mean over the items between two running means (no rounding involved).

    Args:
        w_j: Total weight (samples or steps) behind ``m_j``; 0 for the epoch start.
        m_j: Running mean after weight ``w_j``.
        w_k: Total weight behind ``m_k``; must exceed ``w_j``.
        m_k: Running mean after weight ``w_k``.

    Returns:
        The weighted mean of the items in ``(w_j, w_k]``.

    Raises:
        ValueError: If ``w_k <= w_j``.

    Example:
        >>> window_mean(2, 0.5, 4, 0.75)
        1.0
    """
    if not w_k > w_j:
        raise ValueError(f"Expected w_k > w_j for a non-empty window. Received: {w_j=}, {w_k=}.")
    return (w_k * m_k - w_j * m_j) / (w_k - w_j)


__all__ = ["window_mean"]
