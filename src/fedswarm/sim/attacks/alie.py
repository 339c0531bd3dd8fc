"""A little is enough (ALIE; Baruch, Baruch, Goldberg 2019, "A Little Is Enough: Circumventing Defenses
For Distributed Learning", NeurIPS).

Every attacker sends ``mu - z * sigma``, the per-coordinate mean of the round's honest updates minus ``z``
per-coordinate standard deviations. The paper picks ``z`` from the number of members ``n`` and attackers
``f`` so that the attackers, with the honest updates that lie on their side of the mean, form a majority
that a median- or Krum-type rule follows:

    s = floor(n / 2 + 1) - f,        z = Phi^-1((n - s) / n),

``Phi`` the standard normal CDF (n = 25, f = 5 gives s = 8 and z = 0.468). ``z`` can also be set.

Omniscient: the attackers see the honest updates of their round (in simulation the coordinator crafts
their updates from the honest members' replies before it aggregates).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from fedswarm.sim.attacks.base import Attack, Matrix, Vector
from fedswarm.sim.attacks.params import AttackParameters

__all__ = ["ALIE", "alie_z", "build_alie"]


def alie_z(n: int, f: int) -> float:
    """Baruch et al.'s ``z`` for ``n`` members of which ``f`` attack (0 when the formula gives no room)."""
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    if not 0.0 < p < 1.0:
        return 0.0
    return NormalDist().inv_cdf(p)


class ALIE(Attack):
    kind: ClassVar[str] = "alie"
    trains: ClassVar[bool] = False
    omniscient: ClassVar[bool] = True

    def __init__(self, *, z: float | None = None) -> None:
        self.z = z

    def craft(self, honest: Matrix, *, n: int, f: int) -> Vector:
        z = self.z if self.z is not None else alie_z(n, f)
        return np.asarray(honest.mean(axis=0) - z * honest.std(axis=0), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"z": "Baruch et al. (n, f)" if self.z is None else self.z}


def build_alie(params: AttackParameters) -> ALIE:
    return ALIE(z=params.real("z", 0.0) if params.has("z") else None)
