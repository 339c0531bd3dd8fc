"""Inner product manipulation (Xie, Koyejo, Gupta 2020, "Fall of Empires: Breaking Byzantine-tolerant SGD
by Inner Product Manipulation", UAI).

Every attacker sends ``-epsilon`` times the mean of the round's honest updates, so that the aggregate's
inner product with the true mean turns negative. Against the plain mean of ``n`` updates with ``f``
attackers that happens for ``epsilon > (n - f) / f``; small values (the paper's 0.1) are aimed at
median- and Krum-type rules.

Omniscient: the attackers see the honest updates of their round (in simulation the coordinator crafts
their updates from the honest members' replies before it aggregates).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fedswarm.sim.attacks.base import Attack, Matrix, Vector
from fedswarm.sim.attacks.params import AttackParameters

__all__ = ["IPM", "build_ipm"]


class IPM(Attack):
    kind: ClassVar[str] = "ipm"
    trains: ClassVar[bool] = False
    omniscient: ClassVar[bool] = True

    def __init__(self, *, epsilon: float) -> None:
        self.epsilon = epsilon

    def craft(self, honest: Matrix, *, n: int, f: int) -> Vector:
        return np.asarray(-self.epsilon * honest.mean(axis=0), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}


def build_ipm(params: AttackParameters) -> IPM:
    return IPM(epsilon=params.real("epsilon", 5.0, positive=True))
