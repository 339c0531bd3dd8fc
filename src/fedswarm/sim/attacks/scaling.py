"""Scaling (model replacement): the attacker sends ``factor`` times its update, so that its model replaces
the average (Bagdasaryan, Veit, Hua, Estrin, Shmatikov 2020, "How To Backdoor Federated Learning",
AISTATS: a factor of about n / server learning rate replaces the global model with the attacker's).
Norm bounding (Sun et al. 2019) is the matching defence."""

from __future__ import annotations

from typing import Any, ClassVar

from fedswarm.sim.attacks.base import Attack, Vector
from fedswarm.sim.attacks.params import AttackParameters

__all__ = ["Scaling", "build_scaling"]


class Scaling(Attack):
    kind: ClassVar[str] = "scaling"

    def __init__(self, *, factor: float) -> None:
        self.factor = factor

    def transform(self, update: Vector, *, member: int, rnd: int) -> Vector:
        return self.factor * update

    def describe(self) -> dict[str, Any]:
        return {"factor": self.factor}


def build_scaling(params: AttackParameters) -> Scaling:
    return Scaling(factor=params.real("factor", 25.0, positive=True))
