"""Clipping rules: norm bounding and centered clipping.

* :func:`clipped_mean` is norm bounding (Sun, Kairouz, Suresh, McMahan 2019, "Can You Really Backdoor
  Federated Learning?"): each update is scaled down to L2 norm at most ``max_norm``, then the (weighted)
  mean is taken. It limits how far any single update moves the model; it is not a defence against a
  majority.
* :func:`centered_clipping` is centered clipping (Karimireddy, He, Jaggi 2021, "Learning from History for
  Byzantine Robust Optimization", ICML): starting from a center ``v`` (typically the previous aggregate
  or momentum), repeat ``iterations`` times

      v <- v + (1/n) sum_i (x_i - v) * min(1, tau / |x_i - v|),

  so that an update far from the center moves ``v`` by at most ``tau / n``. Each step is one pass over
  the updates that also computes the distances to the new center for the next step (``iterations + 1``
  passes in all, on a few threads).

Assumptions: ``max_norm > 0``, ``tau > 0``, ``iterations >= 1``, a finite center of the updates' length.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation._input import (
    FloatMatrix,
    FloatVector,
    Updates,
    as_count,
    as_matrix,
    as_positive,
    as_vector,
    as_weights,
    distances_to,
    row_norms,
)
from fedswarm.aggregation._threads import map_column_chunks

__all__ = ["centered_clipping", "clipped_mean"]


def clipped_mean(updates: Updates, *, max_norm: float, weights: npt.ArrayLike | None = None) -> FloatVector:
    """(Weighted) mean of the updates after clipping each to L2 norm ``<= max_norm``.

    Parameters
    ----------
    updates
        ``n`` updates: a sequence of equal-length 1-D arrays or one ``(n, d)`` array.
    max_norm
        Norm bound ``M > 0``; an update ``x`` with ``|x| > M`` is replaced by ``x * M / |x|``.
    weights
        Optional non-negative weight per update (for example its number of training examples).

    Returns
    -------
    numpy.ndarray
        The ``(d,)`` float64 mean of the clipped updates. Its norm is at most ``max_norm`` (a convex
        combination of vectors inside the ball); a final rescale guards that bound against round-off.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, ``max_norm`` not a positive finite number, or invalid weights.
    """
    matrix = as_matrix(updates)
    n = matrix.shape[0]
    bound = as_positive(max_norm, name="max_norm", rule="clipped_mean")
    w = as_weights(weights, n, rule="clipped_mean")
    base = np.ones(n) if w is None else w
    norms = row_norms(matrix)
    with np.errstate(divide="ignore"):
        scale = np.minimum(1.0, bound / norms)
    # Sum, then divide: unclipped equal updates average to exactly themselves.
    out = np.asarray((base * scale) @ matrix, dtype=np.float64) / float(base.sum())
    norm = float(row_norms(out[None, :])[0])
    if norm > bound:
        out *= bound / norm
    return out


def centered_clipping(updates: Updates, *, tau: float, center: npt.ArrayLike, iterations: int = 1) -> FloatVector:
    """Centered clipping: move ``center`` by the mean of the updates' offsets, each clipped to ``tau``.

    Parameters
    ----------
    updates
        ``n`` updates: a sequence of equal-length 1-D arrays or one ``(n, d)`` array.
    tau
        Clipping radius ``> 0`` around the current center.
    center
        The ``(d,)`` starting point, typically the previous round's aggregate (or momentum).
    iterations
        Number of clipping steps ``L >= 1`` (the paper finds 1 enough when the center is good).

    Returns
    -------
    numpy.ndarray
        The ``(d,)`` float64 center after ``iterations`` steps. An update equal to the center has
        offset 0 and counts as unclipped.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, ``tau`` not a positive finite number, ``iterations < 1``, or a bad ``center``.
    """
    matrix = as_matrix(updates)
    n, d = matrix.shape
    radius = as_positive(tau, name="tau", rule="centered_clipping")
    steps = as_count(iterations, name="iterations", rule="centered_clipping", minimum=1)
    v = as_vector(center, d, name="center", rule="centered_clipping")
    dist = distances_to(matrix, v)
    for step in range(steps):
        with np.errstate(divide="ignore"):
            coefficients = np.minimum(1.0, radius / dist) / n
        v, dist = _step(matrix, v, coefficients, distances=step < steps - 1)
    return v


def _step(
    matrix: FloatMatrix, v: FloatVector, coefficients: FloatVector, *, distances: bool
) -> tuple[FloatVector, FloatVector]:
    """One clipping step ``v + sum_i coefficients_i (x_i - v)``, and the distances to the new center.

    One pass over the updates, column chunk by column chunk (on a few threads): each chunk's offsets, its
    part of the new center, and (if ``distances``) its part of the squared distances to the new center,
    which the next step needs. Distances that overflow are recomputed with scaling.
    """
    n, d = matrix.shape
    out = np.empty(d, dtype=np.float64)

    def part(start: int, stop: int) -> FloatVector | None:
        with np.errstate(over="ignore", invalid="ignore"):
            diff = matrix[:, start:stop] - v[start:stop]
            diff *= coefficients[:, None]
            # A sum over the rows rather than a BLAS product: the same rounding on any number of threads.
            out[start:stop] = v[start:stop] + diff.sum(axis=0)
            if not distances:
                return None
            np.subtract(matrix[:, start:stop], out[start:stop], out=diff)
            return np.asarray(np.einsum("ij,ij->i", diff, diff), dtype=np.float64)

    parts = map_column_chunks(n, d, part)
    if not distances:
        return out, np.zeros(0)
    sq = np.zeros(n, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for p in parts:
            assert p is not None
            sq += p
        dist = np.sqrt(sq)
    if not np.isfinite(dist).all():
        dist = distances_to(matrix, out)
    return out, dist
