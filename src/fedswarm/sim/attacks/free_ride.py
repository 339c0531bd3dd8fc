"""Free-riding: the member returns the global model unchanged (a zero update) while claiming its number
of examples, to receive the model without contributing (Lin, Du, Liu 2019, "Free-riders in Federated
Learning: Attacks and Defenses"). It does not train."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from fedswarm.sim.attacks.base import Attack, Vector

__all__ = ["FreeRide"]


class FreeRide(Attack):
    kind: ClassVar[str] = "free_ride"
    trains: ClassVar[bool] = False

    def transform(self, update: Vector, *, member: int, rnd: int, n: int, f: int) -> Vector:
        return np.zeros_like(update)
