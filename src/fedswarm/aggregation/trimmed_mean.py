"""Coordinate-wise trimmed mean (Yin, Chen, Ramchandran, Bartlett 2018, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates", ICML).

For each coordinate, the ``k = floor(beta * n)`` largest and ``k`` smallest values are dropped and the
remaining ``n - 2k`` are averaged. If at most ``k`` updates are Byzantine, every coordinate of the result
lies within the range of the honest updates' values.

Assumptions: ``0 <= beta < 0.5`` (so at least one value per coordinate is kept); robustness needs the
number of Byzantine updates to be at most ``floor(beta * n)``. ``beta = 0`` is the plain mean.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from fedswarm.aggregation._input import FloatMatrix, FloatVector, Updates, as_matrix
from fedswarm.aggregation._threads import for_column_chunks, scratch
from fedswarm.core.errors import ConfigurationError

__all__ = ["trim_count", "trimmed_mean"]


def trim_count(n: int, *, beta: float) -> int:
    """Number of values trimmed from each end: ``floor(beta * n)``, with ``beta`` read as a decimal.

    ``beta`` is taken as the shortest decimal that prints as it (``repr``), so ``beta=0.29`` trims 29 of
    100 values although the binary float ``0.29`` is slightly below 29/100.

    Raises
    ------
    ConfigurationError
        ``beta`` is not a real number in ``[0, 0.5)``, or nothing would be left to average.
    """
    if isinstance(beta, bool) or not isinstance(beta, int | float | np.integer | np.floating):
        raise ConfigurationError(f"trimmed_mean: beta must be a real number, got {beta!r}")
    value = float(beta)
    if not (math.isfinite(value) and 0.0 <= value < 0.5):
        raise ConfigurationError(f"trimmed_mean needs 0 <= beta < 0.5: beta={value}")
    k = math.floor(Fraction(repr(value)) * n)
    if n - 2 * k < 1:  # cannot happen for beta < 0.5; kept as a guard for the invariant
        raise ConfigurationError(f"trimmed_mean would trim all values: beta={value}, n={n}, 2k={2 * k}")
    return k


def trimmed_mean(updates: Updates, *, beta: float) -> FloatVector:
    """Coordinate-wise mean after dropping the ``floor(beta * n)`` largest and smallest values.

    Parameters
    ----------
    updates
        ``n`` updates: a sequence of equal-length 1-D arrays or one ``(n, d)`` array.
    beta
        Fraction trimmed from each end, ``0 <= beta < 0.5`` (see :func:`trim_count` for the rounding).

    Returns
    -------
    numpy.ndarray
        The ``(d,)`` float64 trimmed mean. The kept values are summed in sorted order, so the result
        does not depend on the order of the updates.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, or ``beta`` outside ``[0, 0.5)``.
    """
    matrix = as_matrix(updates)
    n, d = matrix.shape
    k = trim_count(n, beta=beta)
    out = np.empty(d, dtype=np.float64)
    for_column_chunks(n, d, lambda start, stop: _trim(matrix, k, out, start, stop))
    return out


def _trim(matrix: FloatMatrix, k: int, out: FloatVector, start: int, stop: int) -> None:
    n = matrix.shape[0]
    values = scratch("trimmed_mean.values", (stop - start, n), np.float64)
    np.copyto(values, matrix[:, start:stop].T)
    values.sort(axis=1)
    out[start:stop] = values[:, k : n - k].sum(axis=1) / (n - 2 * k)
