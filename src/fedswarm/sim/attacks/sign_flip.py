"""Sign flipping: the attacker sends ``-factor`` times its honest update (a standard Byzantine baseline,
e.g. Damaskinos et al. 2018; Karimireddy, He, Jaggi 2021)."""

from __future__ import annotations

from typing import Any, ClassVar

from fedswarm.sim.attacks.base import Attack, Vector
from fedswarm.sim.attacks.params import AttackParameters

__all__ = ["SignFlip", "build_sign_flip"]


class SignFlip(Attack):
    kind: ClassVar[str] = "sign_flip"

    def __init__(self, *, factor: float = 1.0) -> None:
        self.factor = factor

    def transform(self, update: Vector, *, member: int, rnd: int, n: int, f: int) -> Vector:
        return -self.factor * update

    def describe(self) -> dict[str, Any]:
        return {"factor": self.factor}


def build_sign_flip(params: AttackParameters) -> SignFlip:
    return SignFlip(factor=params.real("factor", 1.0, positive=True))
