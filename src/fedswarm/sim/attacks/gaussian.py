"""Gaussian noise: the attacker sends a random vector drawn from N(0, std^2 I) instead of its update (the
Gaussian Byzantine baseline of Blanchard et al. 2017). The noise is seeded by (run seed, round, member)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fedswarm.sim.attacks.base import Attack, Vector
from fedswarm.sim.attacks.params import AttackParameters

__all__ = ["GaussianNoise", "build_gaussian"]

_NOISE_STREAM = 0x6A55


class GaussianNoise(Attack):
    kind: ClassVar[str] = "gaussian"
    trains: ClassVar[bool] = False

    def __init__(self, *, std: float, seed: int) -> None:
        self.std = std
        self.seed = seed

    def transform(self, update: Vector, *, member: int, rnd: int, n: int, f: int) -> Vector:
        rng = np.random.default_rng([self.seed, _NOISE_STREAM, rnd, member])
        return rng.normal(0.0, self.std, size=update.shape)

    def describe(self) -> dict[str, Any]:
        return {"std": self.std}


def build_gaussian(params: AttackParameters, *, seed: int) -> GaussianNoise:
    return GaussianNoise(std=params.real("std", 1.0, positive=True), seed=seed)
