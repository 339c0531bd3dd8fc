"""The spec sections of robustness: ``[attack]`` (simulation only) and ``[robustness]``.

``[attack]`` describes simulated attackers: which members (explicit ids, a count or a fraction, chosen
deterministically from the run seed), from which round, which attack and its parameters. The parameters
of each kind are checked when the run is built (see :mod:`fedswarm.sim.attacks`), naming the key
(``attack.parameters.factor``). ``[robustness]`` configures the per-update anomaly detection and the
group-wise robust aggregation; the aggregation rule itself is ``[strategy.rule]``. See docs/robustness.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator

__all__ = ["AttackKind", "AttackSpec", "DetectionSpec", "GroupwiseSpec", "RobustnessSpec"]

AttackKind = Literal[
    "label_flip",
    "sign_flip",
    "scaling",
    "gaussian",
    "alie",
    "ipm",
    "backdoor",
    "free_ride",
    "absent",
]
"""The attacks of :mod:`fedswarm.sim.attacks`; ``absent`` makes the chosen members send nothing."""

ParameterValue = bool | int | float | str | list[int] | list[float]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttackSpec(_Section):
    """Simulated attackers (never built on real nodes)."""

    kind: AttackKind
    members: list[StrictInt] | StrictInt | StrictFloat = Field(
        description="member ids, a count (int >= 1) or a fraction in (0, 1) of the federation, chosen by seed"
    )
    from_round: int = Field(1, ge=1, description="first round in which the attackers attack")
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _members(self) -> AttackSpec:
        m = self.members
        if isinstance(m, list):
            if not m:
                raise ValueError("members: the list of attacking members is empty")
            if len(set(m)) != len(m) or min(m) < 0:
                raise ValueError("members: member ids must be distinct and >= 0")
        elif isinstance(m, int):
            if m < 1:
                raise ValueError(f"members: a count of attackers must be >= 1, got {m}")
        elif not 0.0 < m < 1.0:
            raise ValueError(f"members: a fraction of attackers must be in (0, 1), got {m}")
        return self


class DetectionSpec(_Section):
    """Per-update anomaly scores against a robust reference, and a per-member reputation."""

    enabled: bool = True
    norm_ratio: float = Field(5.0, gt=1, description="flag an update whose norm exceeds this many median norms")
    distance_ratio: float = Field(
        6.0, gt=1, description="flag an update farther from the reference than this many median distances"
    )
    cosine: float = Field(-0.1, ge=-1, le=1, description="flag an update whose cosine to the reference is below this")
    cosine_z: float = Field(
        4.0, gt=0, description="... and whose cosine is this many robust deviations below the round's cosines"
    )
    decay: float = Field(0.3, gt=0, le=1, description="weight of the newest round in the reputation average")
    threshold: float = Field(
        0.5, ge=0, le=1, description="members whose reputation falls below this are reported as flagged"
    )
    min_updates: int = Field(4, ge=3, description="score a round only when it has at least this many updates")
    max_coordinates: int = Field(
        100_000, ge=0, description="score larger models on this many coordinates drawn each round; 0: all"
    )


class GroupwiseSpec(_Section):
    """Group-wise robust aggregation: random groups each round, a robust rule over the group means."""

    groups: int = Field(0, ge=0, description="number of groups per round; 0 disables group-wise aggregation")
    rule: str = Field("median", min_length=1, description="robust rule over the group means (a [strategy.rule] name)")
    options: dict[str, bool | int | float | str] = Field(default_factory=dict)


class RobustnessSpec(_Section):
    detection: DetectionSpec = Field(default_factory=DetectionSpec)
    groupwise: GroupwiseSpec = Field(default_factory=GroupwiseSpec)
