"""Geometric median by the smoothed Weiszfeld algorithm of RFA (Pillutla, Kakade, Harchaoui 2022,
"Robust Aggregation for Federated Learning", IEEE Transactions on Signal Processing).

The geometric median minimizes ``g(v) = sum_i a_i |v - x_i|`` (``a_i`` the normalized weights). Starting
from the weighted mean, each smoothed Weiszfeld step sets

    v <- sum_i b_i x_i / sum_i b_i,   b_i = a_i / max(eps, |v - x_i|),

and the loop stops when the objective changes by at most ``tol`` relative to its new value, or after
``max_iter`` steps. Its breakdown point is 1/2: fewer than half of the total weight Byzantine cannot
move the result arbitrarily far.

Every iterate is a convex combination ``v = sum_j c_j x_j``, so the iterations run on the ``n``
coefficients ``c`` with the (shifted) Gram matrix of the updates, and the ``(d,)`` result is formed once
at the end: one Gram matrix and one weighted sum over the updates, whatever the number of steps.
Distances from the Gram matrix carry a round-off of about ``1e-8`` times the spread of the updates.

Assumptions: ``tol >= 0``, ``max_iter >= 1``, ``eps > 0``. An update so far away that its squared
distance overflows float64 gets weight 0 (the limit of ``a_i / |v - x_i|``).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation._gram import shifted_gram
from fedswarm.aggregation._input import (
    FloatMatrix,
    FloatVector,
    Updates,
    as_count,
    as_matrix,
    as_positive,
    as_weights,
)
from fedswarm.core.errors import ConfigurationError

__all__ = ["geometric_median"]


def geometric_median(
    updates: Updates,
    *,
    weights: npt.ArrayLike | None = None,
    tol: float = 1e-6,
    max_iter: int = 100,
    eps: float = 1e-8,
) -> FloatVector:
    """Approximate (weighted) geometric median of the updates by smoothed Weiszfeld iterations.

    Parameters
    ----------
    updates
        ``n`` updates: a sequence of equal-length 1-D arrays or one ``(n, d)`` array.
    weights
        Optional non-negative weight per update; updates of weight 0 are ignored.
    tol
        Stop when ``|g_old - g_new| <= tol * g_new`` (relative change of the objective), ``tol >= 0``.
    max_iter
        Maximum number of Weiszfeld steps, ``>= 1``.
    eps
        Smoothing ``nu`` of RFA: distances below ``eps`` count as ``eps``, ``eps > 0``.

    Returns
    -------
    numpy.ndarray
        The ``(d,)`` float64 estimate.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, invalid weights, or ``tol``, ``max_iter``, ``eps`` outside their bounds.
    """
    matrix = as_matrix(updates)
    n = matrix.shape[0]
    w = as_weights(weights, n, rule="geometric_median")
    tolerance = _check_tol(tol)
    steps = as_count(max_iter, name="max_iter", rule="geometric_median", minimum=1)
    smoothing = as_positive(eps, name="eps", rule="geometric_median")
    base = np.full(n, 1.0 / n) if w is None else w / w.sum()
    coefficients = _weiszfeld(matrix, base, tol=tolerance, max_iter=steps, eps=smoothing)
    return np.asarray(coefficients @ matrix, dtype=np.float64)


def _weiszfeld(matrix: FloatMatrix, base: FloatVector, *, tol: float, max_iter: int, eps: float) -> FloatVector:
    """Convex coefficients ``c`` (summing to 1) of the smoothed Weiszfeld estimate ``c @ matrix``.

    ``base`` holds the normalized weights (non-negative, summing to 1).
    """
    gram = shifted_gram(matrix, candidates=base > 0)
    # Updates of weight 0, and updates whose squared distance to the reference overflows, take no part.
    active = np.isfinite(np.diag(gram)) & (base > 0)
    gram = np.where(active[:, None] & active[None, :], gram, 0.0)
    diag = np.diag(gram).copy()
    a = np.where(active, base, 0.0)
    a /= a.sum()

    coefficients = a.copy()
    dist = _distances(gram, diag, coefficients)
    objective = float(a @ dist)
    for _ in range(max_iter):
        if objective == 0.0:
            break
        b = a / np.maximum(dist, eps)
        coefficients = b / b.sum()
        dist = _distances(gram, diag, coefficients)
        new_objective = float(a @ dist)
        converged = abs(objective - new_objective) <= tol * new_objective
        objective = new_objective
        if converged:
            break
    return coefficients


def _distances(gram: FloatMatrix, diag: FloatVector, coefficients: FloatVector) -> FloatVector:
    # |v - x_i|^2 = c.G.c - 2 (G c)_i + G_ii for v = sum_j c_j x_j with sum_j c_j = 1.
    gc = gram @ coefficients
    sq = float(coefficients @ gc) - 2.0 * gc + diag
    return np.sqrt(np.maximum(sq, 0.0))


def _check_tol(tol: object) -> float:
    if isinstance(tol, bool) or not isinstance(tol, int | float | np.integer | np.floating):
        raise ConfigurationError(f"geometric_median: tol must be a real number, got {tol!r}")
    value = float(tol)
    if not (math.isfinite(value) and value >= 0):
        raise ConfigurationError(f"geometric_median needs 0 <= tol < inf: tol={value}")
    return value
