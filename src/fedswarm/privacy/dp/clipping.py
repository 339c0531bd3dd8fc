"""L2 clipping of updates: the step that bounds each contribution's sensitivity before noise is added.

Clipping scales an update ``u`` to ``u * min(1, C / ||u||_2)``. The differential-privacy guarantee of the
Gaussian mechanism rests on ``||clip(u)||_2 <= C`` holding *exactly* for the vector that is summed, so
these functions guarantee it in floating point: the norm is computed without overflow or underflow (the
vector is first divided by its largest magnitude), and if rounding leaves the scaled vector a hair above
``C``: a vector that needs clipping is scaled to a relative 6e-14 below ``C`` and, if rounding leaves it
less than 1.4e-14 below, nudged down further. Any reasonable float64 norm computation (which differ by a
few units in the last place) therefore finds a clipped vector within ``C``; the relative loss of 6e-14 is
immaterial. A vector already within ``C`` is returned unchanged.

Results are always float64 (the round engine works on flat float64 vectors). Non-finite entries are
refused: an infinite or NaN update has no meaningful norm, and silently zeroing it would hide a bug.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError, ParameterError

__all__ = ["clip_l2", "clip_l2_batch", "l2_norms"]

Vector = npt.NDArray[np.float64]

# Clipped vectors aim a relative 2**-44 (about 6e-14) below the bound and must measure at least 2**-46 below
# it, so that other ways of computing the norm (BLAS, another summation order), which differ by a few ulps,
# also find it within the bound. Each nudge shrinks the scale by a few ulps; they are rarely needed.
_AIM = 1.0 - 2.0**-44
_MARGIN = 1.0 - 2.0**-46
_MAX_NUDGES = 64
_NUDGE = 1.0 - 4.0 * float(np.finfo(np.float64).eps)


def _check_max_norm(max_norm: float) -> float:
    c = float(max_norm)
    if not (math.isfinite(c) and c > 0.0):
        raise ConfigurationError(f"max_norm (the clipping bound) must be finite and > 0, got {max_norm!r}")
    return c


def _as_rows(updates: npt.NDArray[Any], *, what: str) -> Vector:
    a = np.asarray(updates)
    if a.dtype.kind not in "fiub":
        raise ParameterError(f"{what} must be a real numeric array, got dtype {a.dtype}")
    rows = np.array(a, dtype=np.float64, copy=True)
    if not np.isfinite(rows).all():
        raise ParameterError(f"{what} contains non-finite values (inf or NaN)")
    return rows


def _scaled_norms(rows: Vector) -> tuple[Vector, Vector]:
    """Per-row largest magnitude ``m`` and norm ``r`` of the row divided by ``m`` (1 <= r <= sqrt(d))."""
    peak = np.max(np.abs(rows), axis=1) if rows.shape[1] else np.zeros(rows.shape[0])
    safe = np.where(peak > 0.0, peak, 1.0)
    r = np.sqrt(np.einsum("ij,ij->i", rows / safe[:, None], rows / safe[:, None]))
    return peak, np.where(peak > 0.0, r, 0.0)


def l2_norms(updates: npt.NDArray[Any]) -> Vector:
    """Euclidean norm of every row of an (n, d) array, without overflow for huge entries.

    A norm beyond the float64 range is reported as ``inf``.

    Raises
    ------
    ParameterError
        ``updates`` is not 2-D, not numeric, or holds non-finite values.
    """
    rows = _as_rows(updates, what="updates")
    if rows.ndim != 2:
        raise ParameterError(f"updates must have shape (n, d), got {list(rows.shape)}")
    peak, r = _scaled_norms(rows)
    with np.errstate(over="ignore"):
        return np.asarray(peak * r, dtype=np.float64)


def _clip_rows(rows: Vector, c: float) -> tuple[Vector, Vector]:
    peak, r = _scaled_norms(rows)
    with np.errstate(over="ignore"):
        norms = peak * r
    over = norms > c
    if not over.any():
        return rows, norms
    idx = np.flatnonzero(over)
    # rows / peak has norm r in [1, sqrt(d)], so c / r never overflows and the product is ~c.
    scale = (c * _AIM) / r[idx]
    unit = rows[idx] / peak[idx, None]
    clipped = unit * scale[:, None]
    for _ in range(_MAX_NUDGES):
        peak_c, r_c = _scaled_norms(clipped)
        bad = peak_c * r_c > c * _MARGIN
        if not bad.any():
            break
        scale[bad] *= _NUDGE
        clipped[bad] = unit[bad] * scale[bad, None]
    else:  # pragma: no cover - unreachable for finite inputs
        raise ParameterError("clipping did not converge to a norm within the bound")
    rows[idx] = clipped
    return rows, norms


def clip_l2(update: npt.NDArray[Any], *, max_norm: float) -> tuple[Vector, float]:
    """Scale ``update`` so that its L2 norm (over all entries) is at most ``max_norm``.

    Parameters
    ----------
    update
        Any real array (usually a flat parameter update); its shape is kept.
    max_norm
        The clipping bound ``C`` (> 0).

    Returns
    -------
    tuple
        The clipped update as a new float64 array (a copy, equal to the input when its norm is already
        at most ``C``), and the original norm (``inf`` if it exceeds the float64 range).

    Raises
    ------
    ConfigurationError
        ``max_norm`` is not finite and positive.
    ParameterError
        ``update`` is not numeric or holds non-finite values.
    """
    c = _check_max_norm(max_norm)
    rows = _as_rows(update, what="update")
    shape = rows.shape
    clipped, norms = _clip_rows(rows.reshape(1, -1), c)
    return clipped.reshape(shape), float(norms[0])


def clip_l2_batch(updates: npt.NDArray[Any], *, max_norm: float) -> tuple[Vector, Vector]:
    """Clip every row of an (n, d) array to L2 norm at most ``max_norm``.

    Returns
    -------
    tuple
        The clipped rows as a new (n, d) float64 array and the (n,) original norms.

    Raises
    ------
    ConfigurationError
        ``max_norm`` is not finite and positive.
    ParameterError
        ``updates`` is not 2-D, not numeric, or holds non-finite values.
    """
    c = _check_max_norm(max_norm)
    rows = _as_rows(updates, what="updates")
    if rows.ndim != 2:
        raise ParameterError(f"updates must have shape (n, d), got {list(rows.shape)}")
    clipped, norms = _clip_rows(rows, c)
    return clipped, np.asarray(norms, dtype=np.float64)
