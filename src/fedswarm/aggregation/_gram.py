"""Pairwise squared distances of the updates through their Gram matrix, blockwise, with an accuracy check.

Krum, Multi-Krum and Bulyan need all ``n (n - 1) / 2`` squared distances between ``n`` updates of ``d``
coordinates, and the geometric median works on the Gram matrix. Computed one pair at a time that is
``n^2 d / 2`` subtractions; through the Gram matrix it is one symmetric matrix product (BLAS ``syrk``),
``|x_i - x_j|^2 = G_ii + G_jj - 2 G_ij``, about ten times faster:

* **Shift.** The Gram matrix is taken of the rows minus a reference row (the row of smallest norm), which
  leaves every difference unchanged but removes a common offset, so equal updates come out exactly 0
  apart and updates sharing a large component keep their digits.
* **Blockwise.** Columns are processed in blocks of about 8 MB of shifted copy, so the extra memory is
  bounded whatever ``d``; the blocks are summed into 8 partial Gram matrices (fixed column ranges) that run
  on a few threads with single-threaded BLAS (:mod:`fedswarm.aggregation._threads`) and are added in
  order, so the result does not depend on the number of threads.
* **Accuracy check.** The rounding error of ``G_ii + G_jj - 2 G_ij`` is at most a few ``d u (G_ii + G_jj)``
  (``u = 2^-53``) and typically ``sqrt(d) u (G_ii + G_jj)``. A pair whose computed squared distance is
  below ``2^-20 (G_ii + G_jj)`` may have lost most of its digits to cancellation (two updates close to
  each other but far from the reference, such as identical Sybil updates); such pairs are recomputed:
  first from a second Gram matrix of just the rows involved, shifted by one of them, and pairs that are
  still suspect from there directly as ``sum((x_i - x_j)^2)`` in float64. A distance kept from a Gram
  matrix is therefore typically within a relative error of ``2^20 sqrt(d) u`` (about ``1e-7`` at
  ``d = 10^6``; at worst ``2^20 d u``, about ``1e-4``) of the float64 sum of squared differences.

Squared distances that overflow float64 are ``inf`` (never ``nan``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation._input import FloatMatrix, FloatVector, row_sq_norms
from fedswarm.aggregation._threads import chunk_width, map_column_chunks, parallel_map

__all__ = ["SUSPECT", "pairwise_sq_distances", "shifted_gram"]

SUSPECT = 2.0**-20
"""A squared distance below ``SUSPECT * (G_ii + G_jj)`` is recomputed (see the module docstring)."""

_GRAM_CHUNK_BYTES = 1 << 23
_GROUPS = 8


def shifted_gram(matrix: FloatMatrix, *, candidates: npt.NDArray[np.bool_] | None = None) -> FloatMatrix:
    """Gram matrix of the rows shifted by a reference row: ``G[i, j] = (x_i - x_r) . (x_j - x_r)``.

    The reference ``r`` is the row of smallest norm (lowest index on ties) among ``candidates`` (all rows
    by default), so a far-away update is never the reference. Entries that overflow float64 come out as
    ``inf`` or ``nan``.
    """
    sq = row_sq_norms(matrix)
    if candidates is not None:
        sq = np.where(candidates, sq, np.inf)
    return _gram(matrix, None, matrix[int(np.argmin(sq))])


def pairwise_sq_distances(matrix: FloatMatrix) -> FloatMatrix:
    """Squared Euclidean distances between all rows, ``(n, n)``, symmetric with a zero diagonal.

    Computed from :func:`shifted_gram` in float64 with the accuracy check of the module docstring.
    Negative round-off is clamped to 0; distances that overflow float64 are ``inf``.
    """
    gram = shifted_gram(matrix)
    dist = _distances(gram)
    suspect = _suspect(dist, np.diag(gram))
    if suspect.any():
        _refine(matrix, dist, suspect)
    return dist


def _gram(matrix: FloatMatrix, rows: npt.NDArray[np.intp] | None, reference: FloatVector) -> FloatMatrix:
    """Gram matrix of ``matrix[rows] - reference`` (all rows if ``rows`` is None), blockwise."""
    d = matrix.shape[1]
    m = matrix.shape[0] if rows is None else len(rows)
    width = chunk_width(m, _GRAM_CHUNK_BYTES)
    chunks = -(-d // width)
    groups = min(_GROUPS, chunks)
    edges = [min(d, (k * chunks // groups) * width) for k in range(groups + 1)]

    def part(k: int) -> FloatMatrix:
        acc = np.zeros((m, m), dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(edges[k], edges[k + 1], width):
                stop = min(start + width, d)
                block = matrix[:, start:stop] if rows is None else matrix[rows, start:stop]
                shifted = block - reference[start:stop]
                acc += shifted @ shifted.T
        return acc

    parts = parallel_map(groups, part)
    gram = parts[0]
    with np.errstate(over="ignore", invalid="ignore"):
        for p in parts[1:]:
            gram += p
    return gram


def _distances(gram: FloatMatrix) -> FloatMatrix:
    diag = np.diag(gram)
    with np.errstate(over="ignore", invalid="ignore"):
        dist = diag[:, None] + diag[None, :] - 2.0 * gram
    dist = np.where(np.isnan(dist), np.inf, np.maximum(dist, 0.0))
    dist = np.triu(dist, 1)
    return np.asarray(dist + dist.T, dtype=np.float64)


def _suspect(dist: FloatMatrix, diag: FloatVector) -> npt.NDArray[np.bool_]:
    """Pairs ``i < j`` whose Gram-form distance may have lost its digits to cancellation."""
    with np.errstate(over="ignore", invalid="ignore"):
        scale = diag[:, None] + diag[None, :]
        suspect = np.isfinite(dist) & np.isfinite(scale) & (dist < SUSPECT * scale)
    return np.asarray(np.triu(suspect, 1), dtype=np.bool_)


def _refine(matrix: FloatMatrix, dist: FloatMatrix, suspect: npt.NDArray[np.bool_]) -> None:
    """Recompute the suspect pairs of ``dist`` in place (both triangles)."""
    pairs = np.argwhere(suspect)
    rows = np.unique(pairs)
    counts = np.bincount(pairs.ravel(), minlength=matrix.shape[0])
    reference = matrix[int(np.argmax(counts))]  # the row in most suspect pairs: one of a tight cluster
    sub = _gram(matrix, rows.astype(np.intp), reference)
    sub_dist = _distances(sub)
    still = _suspect(sub_dist, np.diag(sub))
    local = {int(r): k for k, r in enumerate(rows)}
    direct: list[tuple[int, int]] = []
    for i, j in pairs:
        a, b = local[int(i)], local[int(j)]
        if still[min(a, b), max(a, b)]:
            direct.append((int(i), int(j)))
        else:
            dist[i, j] = dist[j, i] = sub_dist[a, b]
    if direct:
        exact = _direct(matrix, np.array(direct, dtype=np.intp))
        for (i, j), value in zip(direct, exact, strict=True):
            dist[i, j] = dist[j, i] = value


def _direct(matrix: FloatMatrix, pairs: npt.NDArray[np.intp]) -> FloatVector:
    """``sum((x_i - x_j)^2)`` for each pair, column chunk by column chunk (``inf`` on overflow)."""
    first, second = pairs[:, 0], pairs[:, 1]

    def part(start: int, stop: int) -> FloatVector:
        with np.errstate(over="ignore", invalid="ignore"):
            diff = matrix[first, start:stop] - matrix[second, start:stop]
            return np.asarray(np.einsum("ij,ij->i", diff, diff), dtype=np.float64)

    total = np.zeros(len(pairs), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for p in map_column_chunks(len(pairs), matrix.shape[1], part):
            total += p
    return np.where(np.isnan(total), np.inf, total)
