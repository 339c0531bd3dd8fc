"""Coordinate-wise median (Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML).

Each coordinate of the result is the median of that coordinate over the updates. With fewer than half of
the updates Byzantine, every coordinate of the result lies within the range of the honest updates'
values for that coordinate, however large the Byzantine values are.

Assumptions: at least one update; robustness needs the Byzantine updates (or, weighted, their total
weight) to be less than half. The rule itself accepts any ``n >= 1``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation._input import FloatMatrix, FloatVector, Updates, as_matrix, as_weights, for_column_chunks

__all__ = ["median"]


def median(updates: Updates, *, weights: npt.ArrayLike | None = None) -> FloatVector:
    """Coordinate-wise (weighted) median of the updates.

    Parameters
    ----------
    updates
        ``n`` updates: a sequence of equal-length 1-D arrays or one ``(n, d)`` array.
    weights
        Optional non-negative weight per update (for example its number of training examples).

    Returns
    -------
    numpy.ndarray
        The ``(d,)`` float64 median.

    Notes
    -----
    Unweighted, an even ``n`` gives the average of the two middle values (as :func:`numpy.median`).

    Weighted: per coordinate, sort the values and accumulate their weights ``W_1 <= ... <= W_n`` (total
    ``W``). The median is the first value whose cumulative weight reaches half the total,
    ``2 W_k >= W``; if it reaches exactly half (``2 W_k == W``, compared in float64), the result is the
    average of that value and the next value with positive weight. Equal weights therefore give exactly
    the unweighted median; updates of weight 0 are ignored.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, or invalid weights.
    """
    matrix = as_matrix(updates)
    n, d = matrix.shape
    w = as_weights(weights, n, rule="median")
    out = np.empty(d, dtype=np.float64)
    if n == 1:
        out[:] = matrix[0]
        return out
    if w is None:
        for_column_chunks(n, d, lambda start, stop: _plain(matrix, out, start, stop))
    else:
        weights_ = w
        for_column_chunks(n, d, lambda start, stop: _weighted(matrix, weights_, out, start, stop))
    return out


def _plain(matrix: FloatMatrix, out: FloatVector, start: int, stop: int) -> None:
    n = matrix.shape[0]
    values = np.ascontiguousarray(matrix[:, start:stop].T)
    values.sort(axis=1)
    lo, hi = (n - 1) // 2, n // 2
    # 0.5 * a + 0.5 * b rounds like (a + b) / 2 but cannot overflow.
    out[start:stop] = 0.5 * values[:, lo] + 0.5 * values[:, hi]


def _weighted(matrix: FloatMatrix, w: FloatVector, out: FloatVector, start: int, stop: int) -> None:
    block = np.ascontiguousarray(matrix[:, start:stop].T)
    order = np.argsort(block, axis=1)
    cumulative = np.cumsum(w[order], axis=1)
    half = 0.5 * cumulative[:, -1:]  # 2 W_k >= W  <=>  W_k >= W / 2, halving is exact
    lo = np.count_nonzero(cumulative < half, axis=1)
    hi = np.count_nonzero(cumulative <= half, axis=1)
    rows = np.arange(block.shape[0])
    out[start:stop] = 0.5 * block[rows, order[rows, lo]] + 0.5 * block[rows, order[rows, hi]]
