"""Input checks and shared numeric kernels of the Byzantine-robust aggregation rules.

Every robust rule takes the members' updates either as a sequence of 1-D arrays (one per member) or as
one 2-D array of shape ``(n, d)``. :func:`as_matrix` turns both into one C-contiguous float64 matrix:

* a float64 C-contiguous ``(n, d)`` array is used as is (no copy; it is never written to);
* anything else is copied once into a new float64 matrix (float32 updates double in size).

Rejections name what is wrong:

* a bad update (wrong rank, non-numeric dtype, wrong length, NaN or infinity) raises
  :class:`~fedswarm.core.errors.UpdateRejected` whose ``member`` is ``"index i"``, the update's position
  in the input, so a caller can map it back to the member that sent it;
* no update at all, an empty update, or a bad keyword setting raises
  :class:`~fedswarm.core.errors.ConfigurationError` naming the rule, the setting and the bound.

The kernels below are shared by several rules: row norms and distances that survive overflow, the
pairwise squared distances through the Gram matrix, and a column-chunk loop that runs the per-coordinate
work of the coordinate-wise rules on a few threads (numpy's sort releases the GIL).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError, UpdateRejected

__all__ = [
    "FloatMatrix",
    "FloatVector",
    "Updates",
    "as_count",
    "as_matrix",
    "as_positive",
    "as_vector",
    "as_weights",
    "distances_to",
    "for_column_chunks",
    "pairwise_sq_distances",
    "row_norms",
    "shifted_gram",
]

FloatMatrix: TypeAlias = npt.NDArray[np.float64]
FloatVector: TypeAlias = npt.NDArray[np.float64]
Updates: TypeAlias = npt.NDArray[Any] | Sequence[npt.ArrayLike]

_NUMERIC_KINDS = frozenset("fiu")
_GRAM_CHUNK_BYTES = 1 << 24  # columns per Gram chunk: about 16 MB of shifted copy
_SORT_CHUNK_BYTES = 1 << 22  # columns per per-coordinate chunk: about 4 MB, stays in cache
_MAX_THREADS = 4


def _reject(index: int, reason: str) -> UpdateRejected:
    return UpdateRejected(f"index {index}", reason)


def as_matrix(updates: Updates) -> FloatMatrix:
    """Validate ``updates`` and return them as one C-contiguous float64 matrix of shape ``(n, d)``.

    Raises
    ------
    UpdateRejected
        An update is not 1-D, not numeric, differs in length from update 0, or holds NaN or infinity.
    ConfigurationError
        There is no update, the updates have no coordinate, or an array input is not 2-D and numeric.
    """
    if isinstance(updates, np.ndarray):
        if updates.ndim != 2:
            raise ConfigurationError(
                f"updates must be a sequence of 1-D arrays or one (n, d) array, got shape {list(updates.shape)}"
            )
        if updates.dtype.kind not in _NUMERIC_KINDS:
            raise ConfigurationError(f"updates have dtype {updates.dtype}, expected real numbers")
        matrix = np.ascontiguousarray(updates, dtype=np.float64)
    else:
        matrix = _stack(updates)
    n, d = matrix.shape
    if n == 0:
        raise ConfigurationError("no updates to aggregate: at least one update is needed")
    if d == 0:
        raise ConfigurationError("the updates have no coordinates (length 0)")
    _check_finite(matrix)
    return matrix


def _stack(updates: Sequence[npt.ArrayLike]) -> FloatMatrix:
    try:
        items = list(updates)
    except TypeError as exc:
        raise ConfigurationError(
            f"updates must be a sequence of 1-D arrays or one (n, d) array, got {type(updates).__name__}"
        ) from exc
    rows: list[npt.NDArray[Any]] = []
    for index, update in enumerate(items):
        try:
            row = np.asarray(update)
        except (TypeError, ValueError) as exc:
            raise _reject(index, f"is not an array of numbers ({exc})") from exc
        if row.ndim != 1:
            raise _reject(index, f"has shape {list(row.shape)}, expected a 1-D array")
        if row.dtype.kind not in _NUMERIC_KINDS:
            raise _reject(index, f"has dtype {row.dtype}, expected real numbers")
        if rows and row.shape[0] != rows[0].shape[0]:
            raise _reject(index, f"has {row.shape[0]} coordinates, update 0 has {rows[0].shape[0]}")
        rows.append(row)
    if not rows:
        return np.empty((0, 0), dtype=np.float64)
    matrix = np.empty((len(rows), rows[0].shape[0]), dtype=np.float64)
    for index, row in enumerate(rows):
        matrix[index] = row
    return matrix


def _check_finite(matrix: FloatMatrix) -> None:
    # A row sum is finite exactly when every term is finite, unless finite terms overflow the sum:
    # only rows with a non-finite sum are inspected element by element.
    with np.errstate(over="ignore", invalid="ignore"):
        sums = matrix.sum(axis=1)
    for index in np.flatnonzero(~np.isfinite(sums)):
        bad = np.flatnonzero(~np.isfinite(matrix[index]))
        if bad.size:
            first = int(bad[0])
            raise _reject(
                int(index),
                f"{bad.size} non-finite value(s), the first is {matrix[index, first]} at coordinate {first}",
            )


def as_weights(weights: npt.ArrayLike | None, n: int, *, rule: str) -> FloatVector | None:
    """Validate per-update weights: ``n`` finite values, none negative, with a positive sum.

    Returns ``None`` when ``weights`` is ``None`` (every update counts equally). Weights are returned as
    given (not normalized): rules that need exact comparisons keep integer counts exact.
    """
    if weights is None:
        return None
    try:
        w = np.array(weights, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{rule}: weights must be real numbers ({exc})") from exc
    if w.shape != (n,):
        raise ConfigurationError(f"{rule}: weights have shape {list(w.shape)}, expected [{n}] (one weight per update)")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        i = int(bad[0])
        raise ConfigurationError(f"{rule}: weights[{i}] = {w[i]}, weights must be finite and >= 0")
    if not w.sum() > 0:
        raise ConfigurationError(f"{rule}: weights sum to zero, at least one update needs a positive weight")
    return w


def as_vector(value: npt.ArrayLike, d: int, *, name: str, rule: str) -> FloatVector:
    """Validate a 1-D setting of length ``d`` with finite values (a center, a server update)."""
    try:
        v = np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{rule}: {name} must be real numbers ({exc})") from exc
    if v.shape != (d,):
        raise ConfigurationError(f"{rule}: {name} has shape {list(v.shape)}, expected [{d}] like the updates")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        i = int(bad[0])
        raise ConfigurationError(f"{rule}: {name}[{i}] = {v[i]}, expected finite values")
    return v


def as_count(value: object, *, name: str, rule: str, minimum: int = 0) -> int:
    """Validate an integer setting ``>= minimum`` (booleans are refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigurationError(f"{rule}: {name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigurationError(f"{rule} needs {name} >= {minimum}: {name}={value}")
    return int(value)


def as_positive(value: object, *, name: str, rule: str) -> float:
    """Validate a real setting that must be finite and strictly positive."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigurationError(f"{rule}: {name} must be a real number, got {value!r}")
    x = float(value)
    if not (math.isfinite(x) and x > 0):
        raise ConfigurationError(f"{rule} needs 0 < {name} < inf: {name}={x}")
    return x


def row_norms(matrix: FloatMatrix) -> FloatVector:
    """Euclidean norm of every row; rows whose squared norm overflows are recomputed with scaling."""
    with np.errstate(over="ignore", invalid="ignore"):
        norms: FloatVector = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    for index in np.flatnonzero(~np.isfinite(norms)):
        norms[index] = _scaled_norm(matrix[index])
    return norms


def distances_to(matrix: FloatMatrix, point: FloatVector) -> FloatVector:
    """Exact Euclidean distance of every row to ``point``, computed chunk by chunk (no (n, d) copy)."""
    n, d = matrix.shape
    sq = np.zeros(n, dtype=np.float64)
    width = _chunk_width(n, _SORT_CHUNK_BYTES)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, d, width):
            diff = matrix[:, start : start + width] - point[start : start + width]
            sq += np.einsum("ij,ij->i", diff, diff)
    dist = np.sqrt(sq)
    for index in np.flatnonzero(~np.isfinite(dist)):
        with np.errstate(over="ignore"):
            dist[index] = _scaled_norm(matrix[index] - point)
    return dist


def _scaled_norm(row: FloatVector) -> float:
    scale = float(np.max(np.abs(row)))
    if not math.isfinite(scale) or scale == 0.0:
        return scale
    scaled = row / scale
    with np.errstate(over="ignore"):
        return scale * math.sqrt(float(np.dot(scaled, scaled)))


def shifted_gram(matrix: FloatMatrix, *, candidates: npt.NDArray[np.bool_] | None = None) -> FloatMatrix:
    """Gram matrix of the rows shifted by a reference row: ``G[i, j] = (x_i - x_r) . (x_j - x_r)``.

    Shifting leaves every difference ``x_i - x_j`` unchanged but removes the common offset, which keeps
    the round-off of ``|x_i|^2 + |x_j|^2 - 2 x_i . x_j`` small when updates share a large component, and
    makes equal updates exactly 0 apart. The reference ``r`` is the row of smallest norm (lowest index on
    ties) among ``candidates`` (all rows by default), so a far-away update is never the reference.
    Entries that overflow float64 come out as ``inf`` or ``nan``.
    """
    n, d = matrix.shape
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("ij,ij->i", matrix, matrix)
    sq = np.where(np.isnan(sq), np.inf, sq)
    if candidates is not None:
        sq = np.where(candidates, sq, np.inf)
    reference = matrix[int(np.argmin(sq))]
    gram = np.zeros((n, n), dtype=np.float64)
    width = _chunk_width(n, _GRAM_CHUNK_BYTES)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, d, width):
            block = matrix[:, start : start + width] - reference[start : start + width]
            gram += block @ block.T
    return gram


def pairwise_sq_distances(matrix: FloatMatrix) -> FloatMatrix:
    """Squared Euclidean distances between all rows, ``(n, n)``, symmetric with a zero diagonal.

    Computed as ``G_ii + G_jj - 2 G_ij`` from :func:`shifted_gram` in float64. Negative round-off is
    clamped to 0; distances that overflow float64 are ``inf``.
    """
    gram = shifted_gram(matrix)
    diag = np.diag(gram)
    with np.errstate(over="ignore", invalid="ignore"):
        dist = diag[:, None] + diag[None, :] - 2.0 * gram
    dist = np.where(np.isnan(dist), np.inf, np.maximum(dist, 0.0))
    dist = np.triu(dist, 1)
    dist = dist + dist.T
    return np.asarray(dist, dtype=np.float64)


def _chunk_width(rows: int, budget_bytes: int) -> int:
    return max(256, budget_bytes // (8 * max(rows, 1)))


def _thread_count() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(_MAX_THREADS, cores))


def for_column_chunks(rows: int, d: int, work: Callable[[int, int], None]) -> None:
    """Call ``work(start, stop)`` on consecutive column ranges covering ``[0, d)``.

    Chunks are sized so that ``rows`` x width float64 values stay near 4 MB. Several chunks run on a small
    thread pool; ``work`` must only write its own columns of the output. Results do not depend on the
    number of threads.
    """
    width = _chunk_width(rows, _SORT_CHUNK_BYTES)
    starts = range(0, d, width)
    threads = min(_thread_count(), len(starts))
    if threads <= 1:
        for start in starts:
            work(start, min(start + width, d))
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(lambda start: work(start, min(start + width, d)), starts):
            pass
