"""The simulated attack as a part of the robustness extension: its collector wrapper and its report.

:func:`build_attack_part` is registered with :func:`fedswarm.spec.robust_extension.register_attack_builder`
when :mod:`fedswarm.sim.attacks` is imported. The report adds to every round's record ``attackers`` (how
many attackers were selected and attacking) and, for a backdoor, ``attack_success_rate`` (see
:mod:`fedswarm.sim.attacks.backdoor`); the run summary gets an ``attack`` block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedswarm.core.parameters import Parameters
from fedswarm.core.task import DataInfo
from fedswarm.rounds.collect import Collector
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.sim.attacks.backdoor import Backdoor
from fedswarm.sim.attacks.base import Attack, choose_attackers
from fedswarm.sim.attacks.collector import AttackCollector, AttackerRuntime
from fedswarm.sim.attacks.registry import build_attack
from fedswarm.spec.build import build_data, build_task, load_data
from fedswarm.spec.robust_extension import AttackPart, default_member_name
from fedswarm.spec.schema import Spec

__all__ = ["AttackReport", "build_attack_part"]


class AttackReport:
    """Per-round attack annotations and the summary's ``attack`` block."""

    def __init__(
        self, attack: Attack, *, attackers: tuple[int, ...], from_round: int, runtime: AttackerRuntime
    ) -> None:
        self.attack = attack
        self.attackers = attackers
        self._set = frozenset(attackers)
        self.from_round = from_round
        self.runtime = runtime
        self.success_rate: float | None = None
        self.success_history: list[float] = []

    def attack_success_rate(self, model: Parameters) -> float | None:
        """For a backdoor: accuracy of ``model`` on triggered held-out inputs of the other classes, i.e. the
        share classified as the target; None for other attacks or without a held-out set."""
        if not isinstance(self.attack, Backdoor):
            return None
        holdout = self.runtime.data.holdout
        if len(holdout) == 0:
            return None
        triggered = self.attack.triggered_holdout(holdout)
        result = self.runtime.task.evaluate(model, triggered)
        return float(result.metrics.get("accuracy", float("nan")))

    def after_round(self, outcome: RoundOutcome, *, model: Parameters) -> str | None:
        attacking = 0 if outcome.round < self.from_round else sum(1 for m in outcome.selected if int(m) in self._set)
        outcome.annotations["attackers"] = attacking
        asr = self.attack_success_rate(model)
        if asr is not None:
            outcome.annotations["attack_success_rate"] = asr
            self.success_rate = asr
            self.success_history.append(asr)
        return None

    def summary(self) -> Mapping[str, Any]:
        block: dict[str, Any] = {
            "kind": self.attack.kind,
            "members": [default_member_name(m) for m in self.attackers[:1000]],
            "count": len(self.attackers),
            "from_round": self.from_round,
            "parameters": self.attack.describe(),
        }
        if self.success_rate is not None:
            block["attack_success_rate"] = self.success_rate
            block["attack_success_rate_max"] = max(self.success_history)
        return {"attack": block}


def build_attack_part(spec: Spec, info: DataInfo, members: int) -> AttackPart:
    """The attack of ``spec.attack``: attackers chosen by seed, the collector wrapper and the report."""
    assert spec.attack is not None
    seed = spec.federation.seed
    attack = build_attack(
        spec.attack,
        info,
        seed=seed,
        data_max=lambda: float(np.max(load_data(spec).x)),
        server_lr=spec.strategy.server_lr,
    )
    attackers = choose_attackers(spec.attack, members=members, seed=seed)
    runtime = AttackerRuntime(lambda: build_task(spec, info), lambda: build_data(spec))
    from_round = spec.attack.from_round

    def wrap(inner: Collector) -> Collector:
        return AttackCollector(
            inner, attack=attack, attackers=frozenset(attackers), from_round=from_round, runtime=runtime
        )

    return AttackPart(
        wrap_collector=wrap,
        hook=AttackReport(attack, attackers=attackers, from_round=from_round, runtime=runtime),
    )
