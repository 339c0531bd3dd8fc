"""Simulated attacks on a federation (simulation only; see docs/robustness.md).

Importing this package registers the attack library with the spec builder, which is what lets a
simulation carry out ``[attack]``; a process that never imports it (a real node) refuses a spec with
``[attack]``. One module per attack: label flipping, sign flipping, scaling (model replacement), Gaussian
noise, ALIE, IPM, backdoor, free-riding, and ``absent`` (a selected member that sends nothing).
"""

from fedswarm.sim.attacks.absent import Absent
from fedswarm.sim.attacks.alie import ALIE, alie_z
from fedswarm.sim.attacks.backdoor import Backdoor
from fedswarm.sim.attacks.base import Attack, choose_attackers
from fedswarm.sim.attacks.collector import AttackCollector, AttackerRuntime
from fedswarm.sim.attacks.extension import AttackReport, build_attack_part
from fedswarm.sim.attacks.free_ride import FreeRide
from fedswarm.sim.attacks.gaussian import GaussianNoise
from fedswarm.sim.attacks.ipm import IPM
from fedswarm.sim.attacks.label_flip import LabelFlip
from fedswarm.sim.attacks.registry import PARAMETERS, build_attack
from fedswarm.sim.attacks.scaling import Poison, Scaling, replacement_factor
from fedswarm.sim.attacks.sign_flip import SignFlip
from fedswarm.spec.robust_extension import register_attack_builder

register_attack_builder(build_attack_part)

__all__ = [
    "ALIE",
    "IPM",
    "PARAMETERS",
    "Absent",
    "Attack",
    "AttackCollector",
    "AttackReport",
    "AttackerRuntime",
    "Backdoor",
    "FreeRide",
    "GaussianNoise",
    "LabelFlip",
    "Poison",
    "Scaling",
    "SignFlip",
    "alie_z",
    "build_attack",
    "build_attack_part",
    "choose_attackers",
    "replacement_factor",
]
