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

from fedswarm.aggregation._input import FloatMatrix, FloatVector, Updates, as_matrix, as_weights
from fedswarm.aggregation._threads import for_column_chunks, scratch

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
    values = scratch("median.values", (stop - start, n), np.float64)
    np.copyto(values, matrix[:, start:stop].T)
    values.sort(axis=1)
    lo, hi = (n - 1) // 2, n // 2
    # 0.5 * a + 0.5 * b rounds like (a + b) / 2 but cannot overflow.
    out[start:stop] = 0.5 * values[:, lo] + 0.5 * values[:, hi]


def _weighted(matrix: FloatMatrix, w: FloatVector, out: FloatVector, start: int, stop: int) -> None:
    order = _sorted_members(matrix, start, stop)
    sorted_weights = scratch("median.weights", order.shape, np.float64)
    np.take(w, order, mode="clip", out=sorted_weights)
    lo, hi = _crossings(sorted_weights)
    rows = np.arange(stop - start)
    cols = np.arange(start, stop)
    out[start:stop] = 0.5 * matrix[order[rows, lo], cols] + 0.5 * matrix[order[rows, hi], cols]


def _crossings(sorted_weights: FloatMatrix) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Per row of ``sorted_weights`` (the weights in increasing order of value): how many running sums are
    below half the total, and how many are at most half of it (the positions of the median and of the
    value it is averaged with).

    The running sums are formed one position after the other for all rows at once, the same additions as
    a cumulative sum along each row, in float64. The second count differs from the first only where a
    running sum equals half the total exactly; only those rows are counted again.
    """
    width, n = sorted_weights.shape
    cumulative = scratch("median.cumulative", (n, width), np.float64)
    np.copyto(cumulative, sorted_weights.T)
    for k in range(1, n):
        cumulative[k] += cumulative[k - 1]
    half = 0.5 * cumulative[-1]  # 2 W_k >= W  <=>  W_k >= W / 2, halving is exact
    below = scratch("median.below", (n, width), np.bool_)
    lo = np.count_nonzero(np.less(cumulative, half, out=below), axis=0)
    hi = lo.copy()
    tie = np.flatnonzero(cumulative[lo, np.arange(width)] == half)
    if tie.size:
        hi[tie] = np.count_nonzero(cumulative[:, tie] <= half[tie], axis=0)
    return lo, hi


def _sorted_members(matrix: FloatMatrix, start: int, stop: int) -> npt.NDArray[np.intp]:
    """For each coordinate ``start <= c < stop``, the members (row indices) in increasing order of value:
    an argsort of the transposed column chunk, shape ``(stop - start, n)``.

    An argsort costs about three sorts, so the values are sorted once with the member index written into
    the ``b`` lowest mantissa bits of each value (``2^b >= n``): the sorted values then carry their
    index. This moves a value by less than ``2^b`` units in the last place and keeps it finite, so
    values further apart keep their order; values closer than that may come out in the wrong order.
    Coordinates where two neighbours agree above the index bits but differ in value are argsorted
    instead, so the order is always exact (equal values may come in any order, which changes no median).
    """
    n = matrix.shape[0]
    bits = max(1, (n - 1).bit_length())
    mask = (1 << bits) - 1
    keys = scratch("median.keys", (stop - start, n), np.int64)
    np.copyto(keys.view(np.float64), matrix[:, start:stop].T)
    keys &= ~mask
    keys |= np.arange(n, dtype=np.int64)
    keys.view(np.float64).sort(axis=1)
    order = scratch("median.order", (stop - start, n), np.intp)
    np.bitwise_and(keys, mask, out=order)
    keys &= ~mask
    same = np.equal(keys[:, 1:], keys[:, :-1], out=scratch("median.same", (stop - start, n - 1), np.bool_))
    if same.any():
        rows = np.flatnonzero(same.any(axis=1))
        values = matrix[order[rows], (start + rows)[:, None]]
        unsure = (same[rows] & (values[:, 1:] != values[:, :-1])).any(axis=1)
        if unsure.any():
            redo = rows[unsure]
            order[redo] = np.argsort(matrix[:, start + redo].T, axis=1)
    return order
