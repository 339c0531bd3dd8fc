"""FLTrust (Cao, Fang, Liu, Gong 2021, "FLTrust: Byzantine-robust Federated Learning via Trust
Bootstrapping", NDSS).

The aggregator computes its own update ``g_0`` on a small clean root data set. Each member's update
``g_i`` gets the trust score ``TS_i = ReLU(cos(g_i, g_0))``, is rescaled to the norm of ``g_0``, and the
result is the trust-weighted average

    g = sum_i TS_i * (|g_0| / |g_i|) * g_i / sum_i TS_i.

Updates pointing away from ``g_0`` get no weight, and no update can contribute more than ``|g_0|`` in
norm, so the result's norm is at most ``|g_0|``.

Assumptions: the server update comes from clean data and has the updates' length. Degenerate cases
(documented, not errors): an update of norm 0 has an undefined cosine and gets trust 0; if every trust
score is 0 (including when ``g_0 = 0``), the result is the zero vector.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation._input import FloatVector, Updates, as_matrix, as_vector, row_norms

__all__ = ["fltrust"]


def fltrust(updates: Updates, *, server_update: npt.ArrayLike) -> FloatVector:
    """Trust-weighted average of norm-rescaled updates, trust from the cosine with the server update.

    Parameters
    ----------
    updates
        ``n`` updates: a sequence of equal-length 1-D arrays or one ``(n, d)`` array.
    server_update
        The ``(d,)`` update the aggregator computed on its root data set.

    Returns
    -------
    numpy.ndarray
        The ``(d,)`` float64 aggregate; zeros when every trust score is 0.

    Raises
    ------
    UpdateRejected
        An update is malformed (its index is named).
    ConfigurationError
        No update, or ``server_update`` of the wrong length or with non-finite values.
    """
    matrix = as_matrix(updates)
    n, d = matrix.shape
    g0 = as_vector(server_update, d, name="server_update", rule="fltrust")
    out = np.zeros(d, dtype=np.float64)
    norm0 = float(row_norms(g0[None, :])[0])
    if norm0 == 0.0:
        return out
    unit0 = g0 / norm0
    norms = row_norms(matrix)
    positive = norms > 0
    with np.errstate(over="ignore", invalid="ignore"):
        cosine = np.divide(matrix @ unit0, norms, out=np.zeros(n), where=positive)
    for index in np.flatnonzero(~np.isfinite(cosine)):  # the dot product overflowed: use the unit row
        cosine[index] = float((matrix[index] / norms[index]) @ unit0)
    trust = np.maximum(cosine, 0.0)
    total = float(trust.sum())
    if total == 0.0:
        return out
    scale = np.divide(norm0, norms, out=np.zeros(n), where=positive)
    coefficients = trust * scale / total
    return np.asarray(coefficients @ matrix, dtype=np.float64)
