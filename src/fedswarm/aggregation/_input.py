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

The kernels below are shared by several rules: row norms and distances to a point that survive overflow.
Pairwise distances through the Gram matrix are in :mod:`fedswarm.aggregation._gram`, the column-chunk
threads in :mod:`fedswarm.aggregation._threads`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation._threads import map_column_chunks
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
    "row_norms",
    "row_sq_norms",
]

FloatMatrix: TypeAlias = npt.NDArray[np.float64]
FloatVector: TypeAlias = npt.NDArray[np.float64]
Updates: TypeAlias = npt.NDArray[Any] | Sequence[npt.ArrayLike]

_NUMERIC_KINDS = frozenset("fiu")


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


def row_sq_norms(matrix: FloatMatrix) -> FloatVector:
    """Squared Euclidean norm of every row (``inf`` on overflow), column chunks summed in column order."""
    n, d = matrix.shape

    def part(start: int, stop: int) -> FloatVector:
        block = matrix[:, start:stop]
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(np.einsum("ij,ij->i", block, block), dtype=np.float64)

    total = np.zeros(n, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for p in map_column_chunks(n, d, part):
            total += p
    return np.where(np.isnan(total), np.inf, total)


def row_norms(matrix: FloatMatrix) -> FloatVector:
    """Euclidean norm of every row; rows whose squared norm overflows are recomputed with scaling."""
    norms: FloatVector = np.sqrt(row_sq_norms(matrix))
    for index in np.flatnonzero(~np.isfinite(norms)):
        norms[index] = _scaled_norm(matrix[index])
    return norms


def distances_to(matrix: FloatMatrix, point: FloatVector) -> FloatVector:
    """Exact Euclidean distance of every row to ``point``, computed chunk by chunk (no (n, d) copy)."""
    n, d = matrix.shape

    def part(start: int, stop: int) -> FloatVector:
        with np.errstate(over="ignore", invalid="ignore"):
            diff = matrix[:, start:stop] - point[start:stop]
            return np.asarray(np.einsum("ij,ij->i", diff, diff), dtype=np.float64)

    sq = np.zeros(n, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for p in map_column_chunks(n, d, part):  # summed in column order: independent of the threads
            sq += p
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
