"""Bucketing (Karimireddy, He, Jaggi 2022, "Byzantine-Robust Learning on Heterogeneous Datasets via
Bucketing", ICLR): average random small groups of updates before a robust rule sees them.

The ``n`` updates are shuffled by a seeded random permutation and split into ``g = ceil(n / s)`` buckets
of ``s`` consecutive updates (sizes differ by at most one: ``numpy.array_split`` of the permutation); the
robust rule then aggregates the ``g`` bucket means instead of the updates.

Why: under heterogeneous (non-IID) data, honest updates differ a lot, and a robust rule treats the
unusual-but-honest ones like attackers (a coordinate-wise median or Krum discards them, FLTrust gives
them no trust), which biases training. A mean of ``s`` random updates has ``s`` times less variance, so
the honest bucket means look alike and the rule keeps them.

What it costs: ``f`` Byzantine updates corrupt at most ``f`` buckets (at worst one each), so the rule must
tolerate ``f`` of ``g`` inputs: Krum needs ``g >= 2f + 3``, the median ``f < g / 2``. The paper takes
``s`` with ``s f / n <= 1/2``-ish (``s = 2`` for 20% attackers).

Assumptions: ``bucket_size >= 1`` (1 is a random reordering of the updates, which order-independent
rules do not notice). With weights, each bucket mean is the weighted mean of its updates (the plain mean
if every weight in the bucket is 0) and the bucket's weight is the sum of its updates' weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation._input import FloatMatrix, FloatVector, Updates, as_count, as_matrix, as_weights

__all__ = ["bucket_means", "bucket_split"]


def bucket_split(n: int, *, bucket_size: int, seed: Sequence[int]) -> list[npt.NDArray[np.intp]]:
    """The buckets of ``n`` updates: ``ceil(n / bucket_size)`` arrays of indices, each sorted.

    The permutation is drawn with PCG64 seeded by ``seed`` (non-negative integers), so the same seed
    gives the same buckets.

    Raises
    ------
    ConfigurationError
        ``bucket_size < 1`` or ``n < 1``.
    """
    size = as_count(bucket_size, name="bucket_size", rule="bucketing", minimum=1)
    count = as_count(n, name="n", rule="bucketing", minimum=1)
    groups = -(-count // size)
    permutation = np.random.Generator(np.random.PCG64(list(seed))).permutation(count)
    return [np.sort(part).astype(np.intp) for part in np.array_split(permutation, groups)]


def bucket_means(
    updates: Updates,
    *,
    bucket_size: int,
    seed: Sequence[int],
    weights: npt.ArrayLike | None = None,
) -> tuple[FloatMatrix, FloatVector]:
    """Means of random buckets of ``bucket_size`` updates, and each bucket's weight.

    Parameters
    ----------
    updates
        ``n`` updates: a sequence of equal-length 1-D arrays or one ``(n, d)`` array.
    bucket_size
        Updates per bucket ``s >= 1``; there are ``ceil(n / s)`` buckets.
    seed
        Entropy of the permutation (for example the run seed and the round).
    weights
        Optional non-negative weight per update: bucket means are then weighted means.

    Returns
    -------
    tuple
        The ``(g, d)`` float64 bucket means, in the order of :func:`bucket_split`, and the ``(g,)``
        bucket weights: the sums of the updates' weights, or the bucket sizes without weights.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, ``bucket_size < 1``, or invalid weights.
    """
    matrix = as_matrix(updates)
    n, d = matrix.shape
    w = as_weights(weights, n, rule="bucketing")
    buckets = bucket_split(n, bucket_size=bucket_size, seed=seed)
    means = np.empty((len(buckets), d), dtype=np.float64)
    sizes = np.empty(len(buckets), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for k, rows in enumerate(buckets):
            share = np.ones(len(rows)) if w is None or not w[rows].sum() > 0 else w[rows]
            # Row by row into the output: no copy of the bucket's rows.
            np.multiply(matrix[rows[0]], share[0], out=means[k])
            for row, weight in zip(rows[1:], share[1:], strict=True):
                means[k] += weight * matrix[row]
            means[k] /= share.sum()
            sizes[k] = len(rows) if w is None else w[rows].sum()
    return means, sizes
