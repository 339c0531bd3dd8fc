"""Absent: the member is selected as usual but sends nothing (a dropout from the round).

Not an attack but the control of a revert: a run in which a member is *absent* from round R on is the run
that never had its updates from round R, with the same sampling of every round (the member is still
drawn, so nobody else's selection changes). ``fedswarm ledger revert --exclude`` must reproduce it.
"""

from __future__ import annotations

from typing import ClassVar

from fedswarm.sim.attacks.base import Attack

__all__ = ["Absent"]


class Absent(Attack):
    kind: ClassVar[str] = "absent"
    trains: ClassVar[bool] = False
    absent: ClassVar[bool] = True
