"""Adaptive clipping: Andrew, Thakkar, McMahan and Ramaswamy 2021, "Differentially Private Learning
with Adaptive Clipping" (NeurIPS 2021).

Instead of a fixed clip ``C``, the federation tracks a target quantile ``gamma`` of the members' update
norms. Each round every participant reports the bit ``b_i = [ ||Delta_i|| <= C ]`` along with its clipped
update; the federation releases the noised count ``sum(b_i) + N(0, sigma_b^2)``, divides it by the
expected number of participants ``m`` to get the unclipped fraction ``b``, and updates geometrically:

    C <- C * exp(-eta * (b - gamma))

so ``C`` shrinks when more than a ``gamma`` fraction went unclipped and grows otherwise.

Privacy: releasing the count costs privacy too. Centring the bits at ``-1/2`` gives the count sensitivity
``1/2``, so the pair (update sum with noise multiplier ``z_Delta``, count with standard deviation
``sigma_b``) is equivalent to one Gaussian mechanism with noise multiplier
``z = (z_Delta^-2 + (2 sigma_b)^-2)^-1/2`` (Theorem 1 of the paper). To keep an accounted multiplier
``z``, the update must therefore carry the larger

    sigma_eff = z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2,

which exists only when ``2 sigma_b > z``. Feed ``z`` to the accountant and ``sigma_eff`` to the noise
(:func:`update_noise_multiplier`). The paper suggests ``sigma_b = m / 20``, ``eta = 0.2``, ``gamma = 0.5``.
Under replace-one neighbourhoods both sensitivities double, so the same relation holds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError, ParameterError
from fedswarm.privacy.dp.mechanisms import secure_generator, unsafe_seeded_generator

__all__ = [
    "AdaptiveClipper",
    "accounted_noise_multiplier",
    "default_count_noise_multiplier",
    "geometric_clip_update",
    "noised_count",
    "unclipped_count",
    "unsafe_noised_count",
    "update_noise_multiplier",
]

_STATE_VERSION = 1


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ConfigurationError(f"{name} must be finite and > 0, got {value!r}")
    return v


def _quantile(value: float) -> float:
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ConfigurationError(f"target_quantile must be in (0, 1), got {value!r}")
    return v


def update_noise_multiplier(*, noise_multiplier: float, count_noise_multiplier: float) -> float:
    """Noise multiplier ``sigma_eff = (z^-2 - (2 sigma_b)^-2)^-1/2`` to apply to the update sum.

    ``noise_multiplier`` is the accounted ``z``; ``count_noise_multiplier`` is ``sigma_b``, the standard
    deviation of the noise on the clipped count (a count of members, sensitivity one member).

    Raises
    ------
    ConfigurationError
        A value is not positive, or ``2 sigma_b <= z`` (the count alone would spend the whole budget).
    """
    z = _positive("noise_multiplier", noise_multiplier)
    sb = _positive("count_noise_multiplier", count_noise_multiplier)
    if 2.0 * sb <= z:
        raise ConfigurationError(
            f"count_noise_multiplier {sb} is too small for noise_multiplier {z}: adaptive clipping needs "
            f"2 * count_noise_multiplier > noise_multiplier (increase it, e.g. to expected members / 20)"
        )
    return float((z**-2 - (2.0 * sb) ** -2) ** -0.5)


def accounted_noise_multiplier(*, update_noise_multiplier: float, count_noise_multiplier: float) -> float:
    """The single noise multiplier ``(z_Delta^-2 + (2 sigma_b)^-2)^-1/2`` to feed to the accountant."""
    zd = _positive("update_noise_multiplier", update_noise_multiplier)
    sb = _positive("count_noise_multiplier", count_noise_multiplier)
    return float((zd**-2 + (2.0 * sb) ** -2) ** -0.5)


def default_count_noise_multiplier(expected_count: float) -> float:
    """The paper's suggestion ``sigma_b = m / 20`` for ``m`` expected participants per round."""
    return _positive("expected_count", expected_count) / 20.0


def unclipped_count(norms: npt.NDArray[Any], *, clip: float) -> int:
    """Number of original update norms at most ``clip`` (the bits ``b_i`` summed)."""
    c = _positive("clip", clip)
    n = np.asarray(norms, dtype=np.float64)
    if n.ndim != 1 or np.isnan(n).any() or (n < 0).any():
        raise ParameterError("norms must be a 1-D array of non-negative numbers")
    return int(np.count_nonzero(n <= c))


def noised_count(count: int, *, count_noise_multiplier: float) -> float:
    """``count + N(0, sigma_b^2)`` with noise from a securely seeded generator."""
    sb = _positive("count_noise_multiplier", count_noise_multiplier)
    return float(count) + float(secure_generator().normal(0.0, sb))


def unsafe_noised_count(count: int, *, count_noise_multiplier: float, seed: int) -> float:
    """:func:`noised_count` with noise from ``seed``: reproducible, for tests only (warns)."""
    sb = _positive("count_noise_multiplier", count_noise_multiplier)
    return float(count) + float(unsafe_seeded_generator(seed).normal(0.0, sb))


def geometric_clip_update(clip: float, *, unclipped_fraction: float, target_quantile: float, clip_lr: float) -> float:
    """``C * exp(-eta * (b - gamma))``: the geometric update of the clip toward the target quantile."""
    c = _positive("clip", clip)
    gamma = _quantile(target_quantile)
    eta = _positive("clip_lr", clip_lr)
    b = float(unclipped_fraction)
    if not math.isfinite(b):
        raise ParameterError(f"unclipped_fraction must be finite, got {unclipped_fraction!r}")
    return c * math.exp(-eta * (b - gamma))


class AdaptiveClipper:
    """The clip norm of adaptive clipping, updated once per round from a noised unclipped count.

    Parameters
    ----------
    initial_clip
        The clip of the first round (the paper starts small, e.g. 0.1, and adapts quickly).
    target_quantile
        ``gamma``: the fraction of updates that should go unclipped.
    clip_lr
        ``eta``: the learning rate of the geometric update.
    count_noise_multiplier
        ``sigma_b``: the standard deviation of the noise on the count.
    """

    def __init__(
        self,
        *,
        initial_clip: float,
        target_quantile: float = 0.5,
        clip_lr: float = 0.2,
        count_noise_multiplier: float,
    ) -> None:
        self._clip = _positive("initial_clip", initial_clip)
        self.target_quantile = _quantile(target_quantile)
        self.clip_lr = _positive("clip_lr", clip_lr)
        self.count_noise_multiplier = _positive("count_noise_multiplier", count_noise_multiplier)
        self._rounds = 0

    @property
    def clip(self) -> float:
        """The clip norm for the next round."""
        return self._clip

    @property
    def rounds(self) -> int:
        """How many rounds have updated the clip."""
        return self._rounds

    def observe_noised_count(self, noised: float, *, expected_count: float) -> float:
        """Update the clip from a count that already carries ``N(0, sigma_b^2)`` noise; return the new clip.

        Use this when the count was noised elsewhere (for example inside secure aggregation with
        distributed noise). Never pass an exact count: that releases it without privacy.
        """
        fraction = float(noised) / _positive("expected_count", expected_count)
        self._clip = geometric_clip_update(
            self._clip,
            unclipped_fraction=fraction,
            target_quantile=self.target_quantile,
            clip_lr=self.clip_lr,
        )
        self._rounds += 1
        return self._clip

    def step(self, norms: npt.NDArray[Any], *, expected_count: float) -> float:
        """Count the unclipped ``norms`` (original norms, before clipping), noise the count, update the clip."""
        count = unclipped_count(norms, clip=self._clip)
        noised = noised_count(count, count_noise_multiplier=self.count_noise_multiplier)
        return self.observe_noised_count(noised, expected_count=expected_count)

    def unsafe_step_seeded(self, norms: npt.NDArray[Any], *, expected_count: float, seed: int) -> float:
        """:meth:`step` with count noise from ``seed``: reproducible, for tests only (warns)."""
        count = unclipped_count(norms, clip=self._clip)
        noised = unsafe_noised_count(count, count_noise_multiplier=self.count_noise_multiplier, seed=seed)
        return self.observe_noised_count(noised, expected_count=expected_count)

    def state_dict(self) -> dict[str, Any]:
        """The clip, the round count and the hyperparameters, as plain JSON-compatible values."""
        return {
            "version": _STATE_VERSION,
            "clip": self._clip,
            "rounds": self._rounds,
            "target_quantile": self.target_quantile,
            "clip_lr": self.clip_lr,
            "count_noise_multiplier": self.count_noise_multiplier,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the clip and round count; the hyperparameters must match this clipper's.

        Raises
        ------
        ConfigurationError
            Unknown version, invalid values, or hyperparameters that differ from this clipper's.
        """
        if state.get("version") != _STATE_VERSION:
            raise ConfigurationError(f"adaptive clip state: unsupported version {state.get('version')!r}")
        for key in ("target_quantile", "clip_lr", "count_noise_multiplier"):
            if float(state[key]) != getattr(self, key):
                raise ConfigurationError(
                    f"adaptive clip state: {key} is {state[key]!r} but this run uses {getattr(self, key)!r}"
                )
        rounds = state["rounds"]
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ConfigurationError(f"adaptive clip state: rounds must be an integer >= 0, got {rounds!r}")
        self._clip = _positive("clip", state["clip"])
        self._rounds = rounds
