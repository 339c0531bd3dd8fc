"""What every simulated attack shares: its hooks, and the deterministic choice of attackers.

An attack acts at up to three points of a round, all inside the simulation's coordinator (see
:mod:`fedswarm.sim.attacks.collector`):

* ``poison`` changes an attacker's local training data (data poisoning: label flipping, backdoor);
* ``transform`` changes the update its local training produced (model poisoning: sign flipping,
  scaling, Gaussian noise, free-riding);
* ``craft`` builds the update from the *honest updates of the round* (omniscient attacks: ALIE, IPM).

An attacker runs its own code, so it skips the members' client stages (member-side clipping does not
bind it); the aggregator's checks and rules apply to what it sends, as to everyone's.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fedswarm.core.data import Arrays
from fedswarm.core.errors import SpecError
from fedswarm.spec.robustness import AttackSpec

__all__ = ["Attack", "Matrix", "Vector", "choose_attackers"]

Vector = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float64]

_ATTACKER_STREAM = 0xA77AC4


class Attack:
    """Base class: an attack that changes nothing. Subclasses override the hooks they need."""

    kind: ClassVar[str] = "none"
    trains: ClassVar[bool] = True
    """Whether the attacker runs local training (on its possibly poisoned data) before ``transform``."""
    omniscient: ClassVar[bool] = False
    """Whether the update is built by ``craft`` from the round's honest updates."""
    absent: ClassVar[bool] = False
    """Whether the attacker sends nothing at all (a dropout)."""

    def poison(self, member: int, train: Arrays) -> Arrays:
        """The training data the attacker trains on (default: its own, unchanged)."""
        del member
        return train

    def transform(self, update: Vector, *, member: int, rnd: int, n: int, f: int) -> Vector:
        """The update the attacker sends, from the one its training produced (default: unchanged).

        ``n`` is the number of members selected in round ``rnd`` and ``f`` the number of attackers among them.
        """
        del member, rnd, n, f
        return update

    def craft(self, honest: Matrix, *, n: int, f: int) -> Vector:
        """Omniscient attacks: the update every attacker sends, from the honest updates (rows) of the round.

        ``n`` is the number of members selected in the round and ``f`` the number of attackers among them.
        """
        raise NotImplementedError(f"attack {self.kind!r} is not omniscient")

    def describe(self) -> dict[str, Any]:
        """The attack's settings, for the run summary."""
        return {}


def choose_attackers(attack: AttackSpec, *, members: int, seed: int) -> tuple[int, ...]:
    """The attacking members, sorted: the listed ids, or a count or fraction drawn from the seed.

    A fraction ``p`` means ``max(1, round(p * members))`` attackers.

    Raises
    ------
    SpecError
        An id outside the federation, or more attackers than members.
    """
    chosen = attack.members
    if isinstance(chosen, list):
        bad = [m for m in chosen if m >= members]
        if bad:
            raise SpecError("attack.members", f"member {bad[0]} is not in the federation (ids 0..{members - 1})")
        return tuple(sorted(chosen))
    count = chosen if isinstance(chosen, int) else max(1, math.floor(chosen * members + 0.5))
    if count > members:
        raise SpecError("attack.members", f"{count} attackers but the federation has {members} members")
    rng = np.random.default_rng([seed, _ATTACKER_STREAM])
    return tuple(sorted(int(m) for m in rng.choice(members, size=count, replace=False)))
