"""Build the robustness extension from a spec: detection, group-wise aggregation, FLTrust, simulated attacks.

:func:`build_robustness_extension` is the factory registered in :data:`fedswarm.spec.extensions.FACTORIES`.
It also checks up front what a rule needs from the sampled cohort (Krum's ``n >= 2f + 3``, ...).

**Attacks are simulation-only.** ``[attack]`` is carried out by :mod:`fedswarm.sim.attacks`, which
registers its builder here with :func:`register_attack_builder` when the simulation imports it. A process
that never imported it (a real node) refuses a spec with ``[attack]`` instead of ignoring it; the attack
code never runs on a member: it answers the attackers' requests inside the simulation's coordinator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fedswarm.core.data import Arrays
from fedswarm.core.errors import ConfigurationError, SpecError
from fedswarm.core.task import DataInfo
from fedswarm.rounds.collect import Collector, PlainCollector
from fedswarm.rounds.extension import RunExtension
from fedswarm.rounds.robust.detection import Detector, DetectorSettings
from fedswarm.rounds.robust.extension import RobustnessExtension, RoundHook
from fedswarm.rounds.robust.groupwise import GroupwiseCollector
from fedswarm.rounds.robust.rules import FLTrustRule
from fedswarm.rounds.robust.server_update import RootTrainer, ServerUpdateCollector
from fedswarm.spec.build import build_data, build_rule, build_task
from fedswarm.spec.rules import build_named_rule, min_updates
from fedswarm.spec.schema import Spec
from fedswarm.strategy.base import AggregationRule, LocalTraining, Sampling

__all__ = [
    "AttackBuilder",
    "AttackPart",
    "build_robustness_extension",
    "default_member_name",
    "register_attack_builder",
    "root_data",
]

_ROOT_STREAM = 0xF1_7257


def default_member_name(member: int) -> str:
    """Member names as the simulation and the ledger spell them."""
    return f"member-{member:05d}"


@dataclass(frozen=True)
class AttackPart:
    """What the simulated attack adds to a run: an outermost collector wrapper and a round hook."""

    wrap_collector: Callable[[Collector], Collector]
    hook: RoundHook


AttackBuilder = Callable[[Spec, DataInfo, int], AttackPart]
_ATTACK_BUILDERS: list[AttackBuilder] = []


def register_attack_builder(builder: AttackBuilder) -> None:
    """Called by :mod:`fedswarm.sim.attacks` on import: the simulation can carry out ``[attack]``."""
    if builder not in _ATTACK_BUILDERS:
        _ATTACK_BUILDERS.append(builder)


def root_data(spec: Spec, size: int) -> Arrays:
    """FLTrust's root data set: ``size`` rows drawn (by seed) from the union of the members' training splits."""
    pooled = build_data(spec).pooled_train()
    rng = np.random.default_rng([spec.federation.seed, _ROOT_STREAM])
    rows = np.sort(rng.choice(len(pooled), size=min(size, len(pooled)), replace=False))
    return Arrays(pooled.x[rows], pooled.y[rows])


def _root_trainer(spec: Spec, info: DataInfo, size: int) -> Callable[[], RootTrainer]:
    def build() -> RootTrainer:
        t = spec.training
        return RootTrainer(
            build_task(spec, info),
            root_data(spec, size),
            training=LocalTraining(epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate),
            seed=spec.federation.seed,
        )

    return build


def _check_cohort(rule: AggregationRule, n: int, *, what: str, where: str) -> None:
    need = min_updates(rule)
    if need is not None and n < need[0]:
        raise SpecError(
            f"{where}.{need[1]}",
            f"rule {rule.name!r} needs at least {need[0]} inputs per round, but {what} gives at most {n}",
        )


def build_robustness_extension(spec: Spec, info: DataInfo, members: int) -> RunExtension | None:
    """The robustness extension ``spec`` asks for (detection is on by default), or None.

    Raises
    ------
    SpecError
        A rule's options do not fit the cohort, or group-wise aggregation is combined with a robust
        ``[strategy.rule]``.
    ConfigurationError
        ``[attack]`` in a process that cannot simulate attacks.
    """
    rule = build_rule(spec)
    cohort = Sampling(fraction=spec.strategy.fraction, min_members=spec.strategy.min_members).count(members)
    robust = spec.robustness
    collector: Collector | None = None
    fltrust_size: int | None = rule.root_size if isinstance(rule, FLTrustRule) else None
    if robust.groupwise.groups > 0:
        if spec.privacy.dp != "none":
            raise ConfigurationError(
                f"robustness.groupwise with privacy.dp = {spec.privacy.dp!r}: differential privacy of group-wise "
                "robust aggregation has no analysis here (the robust rule over noised group sums); use one or the other"
            )
        if rule.needs_individual_updates:
            raise SpecError(
                "strategy.rule.name",
                f"with group-wise aggregation the robust rule is robustness.groupwise.rule; the strategy rule "
                f"{rule.name!r} needs individual updates, which groups hide: use 'mean'",
            )
        group_rule = build_named_rule(
            robust.groupwise.rule,
            robust.groupwise.options,
            name_key="robustness.groupwise.rule",
            where="robustness.groupwise.options",
            seed=spec.federation.seed,
        )
        groups = min(robust.groupwise.groups, cohort)
        _check_cohort(group_rule, groups, what=f"{groups} groups", where="robustness.groupwise.options")
        if isinstance(group_rule, FLTrustRule):
            fltrust_size = group_rule.root_size
        collector = GroupwiseCollector(group_rule, groups=robust.groupwise.groups, seed=spec.federation.seed)
    else:
        _check_cohort(rule, cohort, what=f"sampling {cohort} of {members} members", where="strategy.rule.options")
    if fltrust_size is not None:
        collector = ServerUpdateCollector(collector or PlainCollector(), _root_trainer(spec, info, fltrust_size))
    hooks: list[RoundHook] = []
    if spec.attack is not None:
        if not _ATTACK_BUILDERS:
            raise ConfigurationError(
                "the spec's attack section is simulation-only: it is carried out by fedswarm.sim.attacks, which "
                "this process has not loaded (real nodes never load it); remove the attack section from the spec"
            )
        part = _ATTACK_BUILDERS[-1](spec, info, members)
        collector = part.wrap_collector(collector or PlainCollector())
        hooks.append(part.hook)
    d = robust.detection
    detector = None
    if d.enabled:
        settings = DetectorSettings(
            norm_ratio=d.norm_ratio,
            distance_ratio=d.distance_ratio,
            cosine=d.cosine,
            cosine_z=d.cosine_z,
            decay=d.decay,
            threshold=d.threshold,
            min_updates=d.min_updates,
            max_coordinates=d.max_coordinates,
        )
        detector = Detector(settings, member_name=default_member_name)
    if detector is None and collector is None and not hooks:
        return None
    return RobustnessExtension(detector=detector, collector=collector, hooks=hooks)
