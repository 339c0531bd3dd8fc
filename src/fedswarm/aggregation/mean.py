"""Weighted mean of updates: the aggregation of FedAvg (McMahan et al. 2017,
"Communication-Efficient Learning of Deep Networks from Decentralized Data")."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError

__all__ = ["weighted_mean"]


def weighted_mean(updates: npt.NDArray[Any], *, weights: npt.NDArray[Any] | None = None) -> npt.NDArray[np.float64]:
    """Mean of the rows of ``updates`` (shape (n, d)), weighted by ``weights`` (shape (n,), ≥ 0).

    With ``weights=None`` every update counts equally. FedAvg weights by each member's number of
    training examples.

    Raises
    ------
    ConfigurationError
        No updates, weights of the wrong length, negative weights, or weights summing to zero.
    """
    u = np.asarray(updates)
    if u.ndim != 2 or u.shape[0] == 0:
        raise ConfigurationError(f"weighted_mean needs a non-empty (n, d) array, got shape {list(u.shape)}")
    if weights is None:
        return np.asarray(u.mean(axis=0, dtype=np.float64))
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (u.shape[0],):
        raise ConfigurationError(f"weights have shape {list(w.shape)}, expected [{u.shape[0]}]")
    if (w < 0).any():
        raise ConfigurationError("weights must be non-negative")
    total = w.sum()
    if total <= 0:
        raise ConfigurationError("weights sum to zero: every update has weight 0 (no training examples?)")
    return np.asarray((w / total) @ u, dtype=np.float64)
