"""The Gaussian mechanism of client-level DP-FedAvg (McMahan, Ramage, Talwar and Zhang 2018,
"Learning Differentially Private Recurrent Language Models").

Every member clips its update to L2 norm ``C`` (see :mod:`.clipping`); the federation releases the sum
of the clipped updates plus Gaussian noise.

Central noise
    The aggregator adds ``N(0, (z * C)^2 I)`` to the sum, where ``z`` is the noise multiplier. The
    accountant (:mod:`.accounting`) turns ``z``, the sampling and the number of rounds into epsilon.
    The model update is the noised sum divided by the *expected* number of participants
    (:func:`mean_from_noised_sum`), a public constant: dividing by the realised count would make the
    denominator depend on who took part, which the analysis of McMahan et al. does not cover.

Distributed noise
    Each of the ``n`` participants adds ``N(0, (z * C)^2 / n_min)`` to its own clipped update before
    secure aggregation, where ``n_min`` is the smallest number of survivors the round accepts. If
    ``k >= n_min`` updates are summed, the sum carries noise of variance ``k (z C)^2 / n_min >= (z C)^2``:
    at least the central guarantee. Caveats, which the round engine must enforce:

    * **Dropouts.** If fewer than ``n_min`` members survive, the sum carries *less* noise than the target
      and the accounted epsilon is wrong: the round must be aborted (:func:`check_survivors`).
    * **Collusion.** A member knows its own noise share and can subtract it; ``t`` colluding participants
      leave only ``(k - t) / n_min`` of the target variance. Choose ``n_min`` with that margin in mind.
    * **Secure aggregation is required.** Each individual share has the small standard deviation
      ``z C / sqrt(n_min)``; an update seen in the clear is barely protected.

Randomness
    Noise is drawn from a numpy :class:`~numpy.random.Generator` whose 256-bit seed comes from
    :mod:`secrets` (the operating system's CSPRNG), freshly for every call. The generator itself (PCG64)
    is fast but not a cryptographic generator: its output is unpredictable to anyone who does not see
    raw samples, which the released (noised) sums do not expose. Functions with an explicit ``seed``
    exist for reproducible tests only; their names contain ``unsafe`` and they warn with
    :class:`UnsafeNoiseWarning`.

Floating-point caveat (Mironov 2012, "On Significance of the Least Significant Bits for Differential
Privacy")
    The guarantee is proved for real-valued noise. Textbook floating-point samplers produce noise whose
    set of representable values, once added to the true value, can depend on that value; Mironov showed
    this breaks the Laplace mechanism outright. The Gaussian samples here (numpy's ziggurat in float64)
    share the weakness in principle. No mitigation (snapping, a discrete Gaussian over integers) is
    implemented in this module; the guarantee reported by the accountant is for the idealised real-valued
    mechanism, and a deployment that must withstand this attack should add integer-valued (discrete
    Gaussian) noise inside secure aggregation instead.
"""

from __future__ import annotations

import math
import secrets
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError, ParameterError, RoundAborted

__all__ = [
    "UnsafeNoiseWarning",
    "add_central_noise",
    "add_distributed_noise",
    "central_noise_std",
    "check_survivors",
    "distributed_noise_std",
    "mean_from_noised_sum",
    "secure_generator",
    "unsafe_add_central_noise",
    "unsafe_add_distributed_noise",
    "unsafe_seeded_generator",
]

Vector = npt.NDArray[np.float64]


class UnsafeNoiseWarning(UserWarning):
    """Noise was drawn from a caller-chosen seed: reproducible, therefore not private."""


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ConfigurationError(f"{name} must be finite and > 0, got {value!r}")
    return v


def secure_generator() -> np.random.Generator:
    """A fresh numpy Generator seeded with 256 bits from :mod:`secrets`."""
    return np.random.default_rng(secrets.randbits(256))


def unsafe_seeded_generator(seed: int) -> np.random.Generator:
    """A Generator seeded with ``seed``, for reproducible tests only; warns with UnsafeNoiseWarning."""
    warnings.warn(
        "differential-privacy noise drawn from an explicit seed is reproducible and gives no privacy; "
        "use it in tests only",
        UnsafeNoiseWarning,
        stacklevel=3,
    )
    return np.random.default_rng(seed)


def central_noise_std(*, noise_multiplier: float, clip: float) -> float:
    """Standard deviation ``z * C`` of the noise added once to the sum of clipped updates."""
    return _positive("noise_multiplier", noise_multiplier) * _positive("clip", clip)


def distributed_noise_std(*, noise_multiplier: float, clip: float, min_survivors: int) -> float:
    """Standard deviation ``z * C / sqrt(n_min)`` of each participant's share of distributed noise."""
    if isinstance(min_survivors, bool) or not isinstance(min_survivors, int | np.integer) or min_survivors < 1:
        raise ConfigurationError(f"min_survivors must be an integer >= 1, got {min_survivors!r}")
    return central_noise_std(noise_multiplier=noise_multiplier, clip=clip) / math.sqrt(min_survivors)


def _noised(values: npt.NDArray[Any], *, std: float, rng: np.random.Generator, what: str) -> Vector:
    a = np.asarray(values)
    if a.dtype.kind not in "fiub":
        raise ParameterError(f"{what} must be a real numeric array, got dtype {a.dtype}")
    x = np.array(a, dtype=np.float64, copy=True)
    if not np.isfinite(x).all():
        raise ParameterError(f"{what} contains non-finite values (inf or NaN)")
    x += rng.normal(0.0, std, size=x.shape)
    return x


def add_central_noise(summed: npt.NDArray[Any], *, noise_multiplier: float, clip: float) -> Vector:
    """Return ``summed + N(0, (z C)^2 I)`` as a new float64 array (central DP-FedAvg).

    ``summed`` must be the sum of updates each clipped to L2 norm ``clip``.

    Raises
    ------
    ConfigurationError
        ``noise_multiplier`` or ``clip`` is not finite and positive.
    ParameterError
        ``summed`` is not numeric or holds non-finite values.
    """
    std = central_noise_std(noise_multiplier=noise_multiplier, clip=clip)
    return _noised(summed, std=std, rng=secure_generator(), what="summed")


def add_distributed_noise(
    update: npt.NDArray[Any], *, noise_multiplier: float, clip: float, min_survivors: int
) -> Vector:
    """Return ``update + N(0, (z C)^2 / n_min I)``: one participant's share of distributed noise.

    ``update`` must already be clipped to L2 norm ``clip``; the noised update must only leave the member
    inside secure aggregation. See the module docstring for the dropout and collusion caveats.

    Raises
    ------
    ConfigurationError
        A knob is not finite and positive, or ``min_survivors`` < 1.
    ParameterError
        ``update`` is not numeric or holds non-finite values.
    """
    std = distributed_noise_std(noise_multiplier=noise_multiplier, clip=clip, min_survivors=min_survivors)
    return _noised(update, std=std, rng=secure_generator(), what="update")


def unsafe_add_central_noise(summed: npt.NDArray[Any], *, noise_multiplier: float, clip: float, seed: int) -> Vector:
    """:func:`add_central_noise` with noise from ``seed``: reproducible, for tests only (warns)."""
    std = central_noise_std(noise_multiplier=noise_multiplier, clip=clip)
    return _noised(summed, std=std, rng=unsafe_seeded_generator(seed), what="summed")


def unsafe_add_distributed_noise(
    update: npt.NDArray[Any], *, noise_multiplier: float, clip: float, min_survivors: int, seed: int
) -> Vector:
    """:func:`add_distributed_noise` with noise from ``seed``: reproducible, for tests only (warns)."""
    std = distributed_noise_std(noise_multiplier=noise_multiplier, clip=clip, min_survivors=min_survivors)
    return _noised(update, std=std, rng=unsafe_seeded_generator(seed), what="update")


def mean_from_noised_sum(noised_sum: npt.NDArray[Any], *, expected_count: float) -> Vector:
    """Divide a noised sum by the expected number of participants (a public constant).

    For Poisson sampling of members with rate ``q`` out of ``N`` this is ``q * N``; for fixed-size
    sampling it is the cohort size ``m``. The realised count must not be used: it is data-dependent.

    Raises
    ------
    ConfigurationError
        ``expected_count`` is not finite and positive.
    """
    count = _positive("expected_count", expected_count)
    return np.asarray(noised_sum, dtype=np.float64) / count


def check_survivors(survivors: int, *, min_survivors: int) -> None:
    """Refuse to release a distributed-noise sum over fewer than ``min_survivors`` participants.

    Raises
    ------
    RoundAborted
        ``survivors < min_survivors``: the sum would carry less noise than accounted for.
    """
    if survivors < min_survivors:
        raise RoundAborted(
            f"only {survivors} members survived but distributed DP noise was calibrated for at least "
            f"{min_survivors}: the sum would carry less noise than accounted for"
        )
