"""Build the attack ``[attack]`` names, with its parameters checked (errors name ``attack.parameters.<key>``).

| kind | parameters (default) |
|---|---|
| ``label_flip`` | ``source``, ``target`` (unset: every label ``y`` becomes ``C - 1 - y``) |
| ``sign_flip`` | ``factor`` (1.0): sends ``-factor * update`` |
| ``scaling`` | ``poison`` (``"label_flip"``; ``"none"``: its own update), ``factor`` (``n / (f * server_lr)``): model replacement, sends ``factor * update`` of its poisoned training |
| ``gaussian`` | ``std`` (1.0): sends N(0, std^2) noise |
| ``alie`` | ``z`` (Baruch et al.'s value for the round's n and f) |
| ``ipm`` | ``epsilon`` (5.0): sends ``-epsilon * mean(honest)`` |
| ``backdoor`` | ``target`` (0), ``features`` (last 4), ``value`` (data max), ``fraction`` (0.5), ``boost`` (1.0) |
| ``free_ride`` | none: sends a zero update |
| ``absent`` | none: sends nothing |
"""

from __future__ import annotations

from collections.abc import Callable

from fedswarm.core.task import DataInfo
from fedswarm.sim.attacks.absent import Absent
from fedswarm.sim.attacks.alie import build_alie
from fedswarm.sim.attacks.backdoor import build_backdoor
from fedswarm.sim.attacks.base import Attack
from fedswarm.sim.attacks.free_ride import FreeRide
from fedswarm.sim.attacks.gaussian import build_gaussian
from fedswarm.sim.attacks.ipm import build_ipm
from fedswarm.sim.attacks.label_flip import build_label_flip
from fedswarm.sim.attacks.params import AttackParameters
from fedswarm.sim.attacks.scaling import build_scaling
from fedswarm.sim.attacks.sign_flip import build_sign_flip
from fedswarm.spec.robustness import AttackSpec

__all__ = ["PARAMETERS", "build_attack"]

PARAMETERS: dict[str, tuple[str, ...]] = {
    "label_flip": ("source", "target"),
    "sign_flip": ("factor",),
    "scaling": ("factor", "poison"),
    "gaussian": ("std",),
    "alie": ("z",),
    "ipm": ("epsilon",),
    "backdoor": ("target", "features", "value", "fraction", "boost"),
    "free_ride": (),
    "absent": (),
}


def build_attack(
    attack: AttackSpec, info: DataInfo, *, seed: int, data_max: Callable[[], float], server_lr: float = 1.0
) -> Attack:
    """The attack of ``[attack]``; ``data_max`` gives the largest feature value (the backdoor's default trigger),
    ``server_lr`` the strategy's server learning rate (the model-replacement scale of ``scaling``).

    Raises
    ------
    SpecError
        An unknown parameter, or a value of the wrong type or range.
    """
    p = AttackParameters(attack.kind, attack.parameters, PARAMETERS[attack.kind])
    kind = attack.kind
    if kind == "label_flip":
        return build_label_flip(p, classes=info.num_classes)
    if kind == "sign_flip":
        return build_sign_flip(p)
    if kind == "scaling":
        return build_scaling(p, classes=info.num_classes, server_lr=server_lr)
    if kind == "gaussian":
        return build_gaussian(p, seed=seed)
    if kind == "alie":
        return build_alie(p)
    if kind == "ipm":
        return build_ipm(p)
    if kind == "backdoor":
        top = data_max() if not p.has("value") else 0.0
        return build_backdoor(p, classes=info.num_classes, num_features=info.num_features, data_max=top, seed=seed)
    if kind == "free_ride":
        return FreeRide()
    return Absent()
