"""Client-level DP-FedAvg as round stages (McMahan, Ramage, Talwar and Zhang 2018, "Learning
Differentially Private Recurrent Language Models"; adaptive clipping: Andrew et al. 2021).

Member side, in this order and after every other transform of the update (a transform after clipping
could lengthen the vector again):

1. :class:`DPClip` scales the update to L2 norm at most ``C`` (exactly, see :mod:`.clipping`) and, for
   adaptive clipping, the member records the bit ``[||u|| <= C]`` (:func:`clip_and_flag`).
2. ``dp = "distributed"`` only: :class:`DistributedNoiseShare` adds ``N(0, (z C)^2 / n_min)`` to each
   coordinate (and ``N(0, sigma_b^2 / n_min)`` to the bit), so that the sum of at least ``n_min``
   shares carries the target noise (:mod:`.mechanisms`).

Aggregator side, ``dp = "central"``: :class:`CentralGaussianNoise` works on the mean over the cohort.

Derivation of the noise on the mean. A round samples a cohort of ``m`` members (fixed size, or the
expected size under Poisson sampling), and the ``k <= m`` that deliver send clipped updates ``u_i``,
``||u_i|| <= C``. The Gaussian mechanism of the analysis releases ``S~ = sum_i u_i + N(0, (z C)^2 I)``:
the sum changes by at most ``C`` when one member is added or removed (``2 C`` when one is replaced,
which the accountant accounts for). The model update is ``S~ / m`` with the *public* constant ``m``;
dividing by the realised ``k`` would make the denominator data-dependent. Hence

    mean~ = S~ / m = sum_i u_i / m + N(0, (z C / m)^2 I),

i.e. the noise on the mean has standard deviation ``z C / m`` (:meth:`CentralGaussianNoise.std_on_mean`),
and the mean itself is the *sum* divided by ``m``, never an average over the survivors (or weighted by
examples). The release is applied before the strategy's server update, so any server optimizer
(FedAvg's learning rate, FedAdam's moments) is post-processing.

Adaptive clipping adds a second released value, the noised count ``sum_i b_i + N(0, sigma_b^2)``; with
``z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2`` on the update, the pair costs as much as one Gaussian with
multiplier ``z`` (:mod:`.adaptive`, Theorem 1 of Andrew et al.).

The stage classes satisfy the round engine's ``ClientStage`` and ``ServerStage`` protocols
structurally (this package sits below the round engine and does not import it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError
from fedswarm.privacy.dp.clipping import clip_l2
from fedswarm.privacy.dp.mechanisms import (
    add_distributed_noise,
    distributed_noise_std,
    secure_generator,
)

__all__ = ["CentralGaussianNoise", "DPClip", "DistributedNoiseShare", "clip_and_flag", "count_share_std"]

Vector = npt.NDArray[np.float64]


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ConfigurationError(f"{name} must be finite and > 0, got {value!r}")
    return v


def clip_and_flag(update: npt.NDArray[Any], *, clip: float) -> tuple[Vector, float]:
    """Clip ``update`` to L2 norm ``clip``; return it and the bit ``1.0`` if it was not longer, else ``0.0``."""
    clipped, norm = clip_l2(update, max_norm=clip)
    return clipped, 1.0 if norm <= clip else 0.0


def count_share_std(*, count_noise_multiplier: float, min_survivors: int) -> float:
    """Standard deviation ``sigma_b / sqrt(n_min)`` of one member's share of the count noise."""
    if min_survivors < 1:
        raise ConfigurationError(f"min_survivors must be >= 1, got {min_survivors!r}")
    return _positive("count_noise_multiplier", count_noise_multiplier) / math.sqrt(min_survivors)


@dataclass(frozen=True, slots=True)
class DPClip:
    """Member stage: clip the update to L2 norm ``clip`` (the sensitivity bound of DP-FedAvg)."""

    clip: float
    name: str = "dp_clip"

    def __post_init__(self) -> None:
        _positive("privacy.clip", self.clip)

    def apply(self, update: Vector, *, ctx: object) -> Vector:
        return clip_l2(update, max_norm=self.clip)[0]

    def payload_bytes(self, update: Vector, *, dense_bytes: int) -> int:
        return dense_bytes


@dataclass(frozen=True, slots=True)
class DistributedNoiseShare:
    """Member stage: add this member's share ``N(0, (z C)^2 / n_min)`` of the distributed noise.

    The noised update must only leave the member inside secure aggregation.
    """

    noise_multiplier: float
    clip: float
    min_survivors: int
    name: str = "dp_noise_share"

    def __post_init__(self) -> None:
        distributed_noise_std(noise_multiplier=self.noise_multiplier, clip=self.clip, min_survivors=self.min_survivors)

    @property
    def std(self) -> float:
        """Standard deviation of the share on each coordinate."""
        return distributed_noise_std(
            noise_multiplier=self.noise_multiplier, clip=self.clip, min_survivors=self.min_survivors
        )

    def apply(self, update: Vector, *, ctx: object) -> Vector:
        return add_distributed_noise(
            update, noise_multiplier=self.noise_multiplier, clip=self.clip, min_survivors=self.min_survivors
        )

    def payload_bytes(self, update: Vector, *, dense_bytes: int) -> int:
        return dense_bytes


@dataclass(frozen=True, slots=True)
class CentralGaussianNoise:
    """Aggregator stage of central DP-FedAvg: noise on the mean ``sum / expected_count``.

    ``after_aggregate`` expects the *sum of clipped updates divided by* ``expected_count`` (not a mean
    over survivors) and adds ``N(0, (z C / m)^2)`` per coordinate; see the module docstring.
    ``count_noise_std`` > 0 adds ``N(0, sigma_b^2)`` to a trailing count coordinate of the *sum*
    (adaptive clipping) through :meth:`sum_noise`.
    """

    noise_multiplier: float
    clip: float
    expected_count: int
    name: str = "dp_central_noise"

    def __post_init__(self) -> None:
        _positive("noise_multiplier", self.noise_multiplier)
        _positive("clip", self.clip)
        if self.expected_count < 1:
            raise ConfigurationError(f"expected_count must be >= 1, got {self.expected_count!r}")

    @property
    def std_on_sum(self) -> float:
        """``z C``: the noise on the sum of clipped updates."""
        return self.noise_multiplier * self.clip

    @property
    def std_on_mean(self) -> float:
        """``z C / m``: the noise on the released mean."""
        return self.std_on_sum / self.expected_count

    def sum_noise(self, length: int, *, count_noise_std: float = 0.0) -> Vector:
        """Noise for a sum of ``length`` coordinates: ``N(0, (z C)^2)`` each, or for the last one
        ``N(0, count_noise_std^2)`` when ``count_noise_std`` > 0, from a securely seeded generator."""
        rng = secure_generator()
        if count_noise_std > 0.0:
            noise = rng.normal(0.0, self.std_on_sum, size=length - 1)
            return np.concatenate([noise, rng.normal(0.0, count_noise_std, size=1)])
        return rng.normal(0.0, self.std_on_sum, size=length)

    def accept(self, member: int, update: Vector, *, ctx: object) -> str | None:
        norm = float(np.linalg.norm(update))
        if norm > self.clip * (1.0 + 1e-9):
            return f"update norm {norm:.6g} exceeds the DP clip {self.clip:.6g}"
        return None

    def after_aggregate(self, aggregate: Vector, *, ctx: object) -> Vector:
        return np.asarray(aggregate, dtype=np.float64) + secure_generator().normal(
            0.0, self.std_on_mean, size=np.shape(aggregate)
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "noise_multiplier": self.noise_multiplier,
            "clip": self.clip,
            "expected_count": self.expected_count,
        }
