"""Server-side adaptive optimizers of Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR).

The aggregated client update Δ is treated as a pseudo-gradient step. With first moment m and second
moment v (element-wise, initialised to 0 and τ² respectively in the paper's Algorithm 2):

* m ← β₁·m + (1 − β₁)·Δ
* FedAdagrad: v ← v + Δ²
* FedYogi:    v ← v − (1 − β₂)·Δ²·sign(v − Δ²)
* FedAdam:    v ← β₂·v + (1 − β₂)·Δ²
* x ← x + η·m / (√v + τ)

As in the paper there is no bias correction. These are pure functions; the strategy holds m and v.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["FedOptVariant", "fedopt_step"]

FedOptVariant = Literal["adam", "yogi", "adagrad"]


def fedopt_step(
    x: npt.NDArray[Any],
    delta: npt.NDArray[Any],
    m: npt.NDArray[Any],
    v: npt.NDArray[Any],
    *,
    variant: FedOptVariant,
    eta: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """One server step. Returns new ``(x, m, v)``; inputs are not modified."""
    d = np.asarray(delta, dtype=np.float64)
    m_new = beta1 * np.asarray(m, dtype=np.float64) + (1.0 - beta1) * d
    d2 = d * d
    v0 = np.asarray(v, dtype=np.float64)
    if variant == "adagrad":
        v_new = v0 + d2
    elif variant == "yogi":
        v_new = v0 - (1.0 - beta2) * d2 * np.sign(v0 - d2)
    elif variant == "adam":
        v_new = beta2 * v0 + (1.0 - beta2) * d2
    else:  # pragma: no cover - Literal guards this
        raise ValueError(f"unknown FedOpt variant {variant!r}")
    x_new = np.asarray(x, dtype=np.float64) + eta * m_new / (np.sqrt(v_new) + tau)
    return x_new, m_new, v_new
