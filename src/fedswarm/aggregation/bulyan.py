"""Bulyan (El Mhamdi, Guerraoui, Rouault 2018, "The Hidden Vulnerability of Distributed Learning in
Byzantium", ICML), over Krum.

1. Selection: Krum (Blanchard et al. 2017) is applied repeatedly; each time the chosen update moves from
   the remaining set ``R`` to the selection, until ``theta = n - 2f`` updates are selected.
2. Aggregation: per coordinate, the ``beta = theta - 2f`` selected values closest to the coordinate-wise
   median of the selection are averaged.

Assumptions: at most ``f`` of the ``n`` updates are Byzantine and ``n >= 4f + 3``; other settings are
refused.

Details fixed here (the paper leaves them open):

* Krum on the remaining set scores each update by its ``|R| - f - 2`` closest others. For the last
  selections that count drops below 1 when ``f <= 1``; it is then raised to 1 (a single remaining update
  is simply taken). Krum's ties go to the lowest index; with a single neighbour (late selections when
  ``f <= 2``) the two mutually nearest remaining updates tie, so which of them is selected depends on
  their order in the input.
* The median of an even number of values is the average of the two middle ones.
* Ties in the distance to the median are resolved towards the smaller value. The kept values are then
  a contiguous run of the sorted values, so the result does not depend on the order of the updates
  (given the same selection).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation._gram import pairwise_sq_distances
from fedswarm.aggregation._input import (
    FloatMatrix,
    FloatVector,
    Updates,
    as_count,
    as_matrix,
)
from fedswarm.aggregation._threads import for_column_chunks
from fedswarm.aggregation.krum import neighbour_scores
from fedswarm.core.errors import ConfigurationError

__all__ = ["bulyan", "bulyan_select"]


def bulyan(updates: Updates, *, f: int) -> FloatVector:
    """Bulyan over Krum: iterated Krum selection, then a coordinate-wise average around the median.

    Parameters
    ----------
    updates
        ``n`` updates: a sequence of equal-length 1-D arrays or one ``(n, d)`` array.
    f
        Number of Byzantine updates to tolerate; needs ``n >= 4f + 3``.

    Returns
    -------
    numpy.ndarray
        The ``(d,)`` float64 aggregate.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, or ``n < 4f + 3``.
    """
    matrix = as_matrix(updates)
    count = _check(matrix.shape[0], f)
    rows = np.sort(_iterated_krum(pairwise_sq_distances(matrix), f=count))
    d = matrix.shape[1]
    out = np.empty(d, dtype=np.float64)
    for_column_chunks(len(rows), d, lambda start, stop: _around_median(matrix, rows, count, out, start, stop))
    return out


def bulyan_select(updates: Updates, *, f: int) -> npt.NDArray[np.intp]:
    """Indices of the ``n - 2f`` updates Bulyan's iterated Krum selects, in the order of selection.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, or ``n < 4f + 3``.
    """
    matrix = as_matrix(updates)
    count = _check(matrix.shape[0], f)
    return _iterated_krum(pairwise_sq_distances(matrix), f=count)


def _check(n: int, f: object) -> int:
    count = as_count(f, name="f", rule="bulyan")
    if n < 4 * count + 3:
        raise ConfigurationError(f"bulyan needs n >= 4f + 3: n={n}, f={count}")
    return count


def _iterated_krum(sq_dist: FloatMatrix, *, f: int) -> npt.NDArray[np.intp]:
    n = sq_dist.shape[0]
    remaining = np.arange(n)
    picked: list[int] = []
    for _ in range(n - 2 * f):
        size = len(remaining)
        neighbours = min(max(size - f - 2, 1), size - 1)
        scores = neighbour_scores(sq_dist[np.ix_(remaining, remaining)], neighbours=neighbours)
        best = int(np.argmin(scores))  # first minimum: the lowest remaining index
        picked.append(int(remaining[best]))
        remaining = np.delete(remaining, best)
    return np.asarray(picked, dtype=np.intp)


def _around_median(
    matrix: FloatMatrix, rows: npt.NDArray[np.intp], f: int, out: FloatVector, start: int, stop: int
) -> None:
    theta = len(rows)
    beta = theta - 2 * f
    values = np.ascontiguousarray(matrix[rows, start:stop].T)
    values.sort(axis=1)
    middle = 0.5 * values[:, (theta - 1) // 2] + 0.5 * values[:, theta // 2]
    # Window [s, s + beta) of the sorted values: s is the first start whose value just past the right
    # end is not closer to the median than its left end (ties keep the smaller value). The test is
    # monotone in s, so s is the number of starts that fail it.
    with np.errstate(over="ignore"):
        right = values[:, beta:] - middle[:, None]
        left = middle[:, None] - values[:, : 2 * f]
    first = np.count_nonzero(right < left, axis=1)[:, None]
    position = np.arange(theta)
    window = (position >= first) & (position < first + beta)
    out[start:stop] = np.where(window, values, 0.0).sum(axis=1) / beta
