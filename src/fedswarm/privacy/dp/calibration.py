"""Calibration: the smallest noise multiplier that keeps a planned run within a target epsilon.

Epsilon decreases as the noise multiplier ``z`` grows, so bisection on ``z`` finds the boundary. The
search first brackets it by doubling (or halving) from ``z = 1``, then bisects until the bracket
``[lo, hi]`` satisfies ``hi - lo <= rtol * hi``, and returns ``hi``. The invariant of the search is that
the returned ``z`` was *evaluated* to give ``epsilon <= target_epsilon`` with the same accountant the run
will use, so calibrating and then accounting never exceeds the target; and any ``z`` smaller by more than
a relative ``rtol`` (default 1e-3) was evaluated to exceed it. The epsilon reached is therefore close to
the target (for Gaussian-like mechanisms epsilon scales roughly like ``1 / z``, so within about ``rtol``
relative).
"""

from __future__ import annotations

import math

import numpy as np

from fedswarm.core.errors import ConfigurationError
from fedswarm.privacy.dp.accounting import AccountantKind, SamplingKind, compute_epsilon

__all__ = ["MAX_NOISE_MULTIPLIER", "MIN_NOISE_MULTIPLIER", "calibrate_noise_multiplier"]

MIN_NOISE_MULTIPLIER = 1e-2
MAX_NOISE_MULTIPLIER = 1e4


def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    rounds: int,
    sampling: SamplingKind,
    sample_size: int,
    population: int,
    accountant: AccountantKind,
    rtol: float = 1e-3,
) -> float:
    """Smallest noise multiplier (within ``rtol``) whose ``rounds`` rounds spend at most ``target_epsilon``.

    Parameters
    ----------
    target_epsilon
        The epsilon the whole run may spend (> 0).
    delta
        Target delta, in (0, 1).
    rounds
        Planned number of rounds (>= 1).
    sampling, sample_size, population, accountant
        As for :func:`fedswarm.privacy.dp.accounting.compute_epsilon`.
    rtol
        Relative width of the final bracket, in (0, 0.5].

    Returns
    -------
    float
        A noise multiplier ``z`` with ``epsilon(z) <= target_epsilon``. If even
        :data:`MIN_NOISE_MULTIPLIER` meets the target, that value is returned.

    Raises
    ------
    ConfigurationError
        Invalid parameters, or the target needs more than :data:`MAX_NOISE_MULTIPLIER`.
    """
    target = float(target_epsilon)
    if not (math.isfinite(target) and target > 0.0):
        raise ConfigurationError(f"target_epsilon must be finite and > 0, got {target_epsilon!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 1:
        raise ConfigurationError(f"rounds must be an integer >= 1 to calibrate noise, got {rounds!r}")
    if not 0.0 < float(rtol) <= 0.5:
        raise ConfigurationError(f"rtol must be in (0, 0.5], got {rtol!r}")

    def eps(z: float) -> float:
        return compute_epsilon(
            accountant=accountant,
            sampling=sampling,
            population=population,
            sample_size=sample_size,
            noise_multiplier=z,
            delta=delta,
            rounds=rounds,
        )

    hi = 1.0
    if eps(hi) > target:
        lo = hi
        while True:
            hi = lo * 2.0
            if hi > MAX_NOISE_MULTIPLIER:
                raise ConfigurationError(
                    f"target_epsilon {target} is unreachable: {rounds} rounds (sample_size {sample_size} of "
                    f"{population}, {sampling}) spend more even with noise_multiplier {MAX_NOISE_MULTIPLIER:g}"
                )
            if eps(hi) <= target:
                break
            lo = hi
    else:
        while True:
            lo = hi / 2.0
            if lo < MIN_NOISE_MULTIPLIER:
                return MIN_NOISE_MULTIPLIER if eps(MIN_NOISE_MULTIPLIER) <= target else hi
            if eps(lo) > target:
                break
            hi = lo
    # Invariant: eps(lo) > target >= eps(hi).
    while hi - lo > float(rtol) * hi:
        mid = 0.5 * (lo + hi)
        if eps(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi
