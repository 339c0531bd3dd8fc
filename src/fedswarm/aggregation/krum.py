"""Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer 2017, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent", NeurIPS).

Each update ``i`` gets the score ``s(i) = sum of |x_i - x_j|^2 over the n - f - 2 updates j != i closest
to x_i``. Krum returns the update with the lowest score; Multi-Krum averages the ``m`` lowest-scored
updates uniformly.

Assumptions: at most ``f`` of the ``n`` updates are Byzantine and ``n >= 2f + 3`` (so every score sums
at least ``f + 1`` distances); Multi-Krum needs ``1 <= m <= n - f``. Settings outside these bounds are
refused.

Ties: updates are ranked by score, then by index; among equal scores the lowest index wins. Squared
distances come from the Gram matrix in float64 (see :mod:`~fedswarm.aggregation._gram`):
equal updates are exactly 0 apart, but mathematically equal scores of distinct updates may differ by
round-off on large inputs. A squared distance that overflows float64 counts as infinite. Because ties
go by position, the choice between distinct updates with exactly equal scores depends on their order;
with a single neighbour (``n - f - 2 = 1``) the two mutually nearest updates always tie.
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
from fedswarm.core.errors import ConfigurationError

__all__ = ["krum", "krum_select", "multi_krum"]


def krum(updates: Updates, *, f: int) -> FloatVector:
    """The update with the lowest Krum score (a copy of one of the inputs).

    Parameters
    ----------
    updates
        ``n`` updates: a sequence of equal-length 1-D arrays or one ``(n, d)`` array.
    f
        Number of Byzantine updates to tolerate; needs ``n >= 2f + 3``.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, or ``n < 2f + 3``.
    """
    matrix = as_matrix(updates)
    best = _select(matrix, f=f, m=1, rule="krum")[0]
    return np.array(matrix[best], dtype=np.float64, copy=True)


def multi_krum(updates: Updates, *, f: int, m: int) -> FloatVector:
    """Uniform mean of the ``m`` updates with the lowest Krum scores.

    Parameters
    ----------
    updates
        ``n`` updates: a sequence of equal-length 1-D arrays or one ``(n, d)`` array.
    f
        Number of Byzantine updates to tolerate; needs ``n >= 2f + 3``.
    m
        Number of updates averaged, ``1 <= m <= n - f``; ``m = 1`` is Krum.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, ``n < 2f + 3``, or ``m`` outside ``[1, n - f]``.
    """
    matrix = as_matrix(updates)
    chosen = _select(matrix, f=f, m=m, rule="multi_krum")
    indicator = np.zeros(matrix.shape[0], dtype=np.float64)
    indicator[chosen] = 1.0
    # Sum, then divide: m equal updates average to exactly themselves.
    return np.asarray(indicator @ matrix, dtype=np.float64) / len(chosen)


def krum_select(updates: Updates, *, f: int, m: int) -> npt.NDArray[np.intp]:
    """Indices of the ``m`` updates with the lowest Krum scores, best first (lowest index on ties).

    Parameters
    ----------
    updates
        ``n`` updates: a sequence of equal-length 1-D arrays or one ``(n, d)`` array.
    f
        Number of Byzantine updates to tolerate; needs ``n >= 2f + 3``.
    m
        Number of indices returned, ``1 <= m <= n - f``.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, ``n < 2f + 3``, or ``m`` outside ``[1, n - f]``.
    """
    return _select(as_matrix(updates), f=f, m=m, rule="krum_select")


def check_krum_bound(n: int, f: object, *, rule: str) -> int:
    """Validate ``f`` for Krum: a non-negative integer with ``n >= 2f + 3``; returns it."""
    count = as_count(f, name="f", rule=rule)
    if n < 2 * count + 3:
        raise ConfigurationError(f"{rule} needs n >= 2f + 3: n={n}, f={count}")
    return count


def neighbour_scores(sq_dist: FloatMatrix, *, neighbours: int) -> FloatVector:
    """Krum scores from squared distances: the sum of each row's ``neighbours`` smallest off-diagonal
    entries."""
    n = sq_dist.shape[0]
    if neighbours <= 0:
        return np.zeros(n, dtype=np.float64)
    others = np.array(sq_dist, dtype=np.float64, copy=True)
    np.fill_diagonal(others, np.inf)
    others.sort(axis=1)
    with np.errstate(over="ignore"):
        return np.asarray(others[:, :neighbours].sum(axis=1), dtype=np.float64)


def _select(matrix: FloatMatrix, *, f: int, m: int, rule: str) -> npt.NDArray[np.intp]:
    n = matrix.shape[0]
    count = check_krum_bound(n, f, rule=rule)
    chosen = as_count(m, name="m", rule=rule, minimum=1)
    if chosen > n - count:
        raise ConfigurationError(f"{rule} needs 1 <= m <= n - f: m={chosen}, n={n}, f={count}")
    scores = neighbour_scores(pairwise_sq_distances(matrix), neighbours=n - count - 2)
    order = np.argsort(scores, kind="stable")
    return np.asarray(order[:chosen], dtype=np.intp)
