"""The bodies of ledger entries about rounds: opened, updates, aggregates, evaluations, privacy, anomalies.

:class:`RoundOpened`, :class:`UpdateSubmitted`, :class:`AggregateCommitted`, :class:`EvaluationReported`,
:class:`PrivacySpent` and :class:`AnomalyFlagged`, with the value types their fields use. The envelope
around a body is :class:`~fedswarm.ledger.entries.Entry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias, get_args

from fedswarm.ledger.entry_base import (
    BodyBase,
    EntryKind,
    as_digest,
    as_digests,
    as_int,
    as_list,
    as_literal,
    as_metrics,
    as_name,
    as_names,
    as_real,
    as_reasons,
    as_text,
    field_error,
)

__all__ = [
    "AggregateCommitted",
    "AnomalyAction",
    "AnomalyFlagged",
    "EvaluationReported",
    "EvaluationScope",
    "Metrics",
    "PrivacySpent",
    "RoundOpened",
    "UpdateSubmitted",
]

EvaluationScope: TypeAlias = Literal["central", "members"]
AnomalyAction: TypeAlias = Literal["flagged", "excluded", "downweighted"]
Metrics: TypeAlias = Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class RoundOpened(BodyBase):
    """A round starts: its leader (the author), the selected members, the configuration and the base model."""

    kind: ClassVar[EntryKind] = "round_opened"
    _keys: ClassVar[frozenset[str]] = frozenset({"round", "leader", "selected", "config_digest", "base_model"})
    round: int
    leader: str
    selected: tuple[str, ...]
    config_digest: str
    base_model: str

    def __post_init__(self) -> None:
        as_int(self.round, "round", minimum=1)
        as_name(self.leader, "leader")
        object.__setattr__(self, "selected", as_names(self.selected, "selected"))
        as_digest(self.config_digest, "config_digest")
        as_digest(self.base_model, "base_model")

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "leader": self.leader,
            "selected": list(self.selected),
            "config_digest": self.config_digest,
            "base_model": self.base_model,
        }


@dataclass(frozen=True, slots=True)
class UpdateSubmitted(BodyBase):
    """A member's update for a round: its digest, examples, L2 norm and size (the author is the member)."""

    kind: ClassVar[EntryKind] = "update_submitted"
    _keys: ClassVar[frozenset[str]] = frozenset({"round", "update", "examples", "norm", "bytes"})
    round: int
    update: str
    examples: int
    norm: float
    bytes: int

    def __post_init__(self) -> None:
        as_int(self.round, "round", minimum=1)
        as_digest(self.update, "update")
        as_int(self.examples, "examples")
        object.__setattr__(self, "norm", as_real(self.norm, "norm"))
        as_int(self.bytes, "bytes")

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "update": self.update,
            "examples": self.examples,
            "norm": self.norm,
            "bytes": self.bytes,
        }


@dataclass(frozen=True, slots=True)
class AggregateCommitted(BodyBase):
    """A round's result: which updates (``inputs``, aligned with ``contributors``) made which model.

    A secure-aggregated round lists its ``contributors`` with no ``inputs``: the aggregator only ever held
    the sum of their updates, so no individual update digest exists. ``weights`` are the aggregation weights
    (examples; 1 each for a secure sum), ``metrics`` the training metrics reported with the
    updates, ``rejected`` and ``dropouts`` the members whose updates were refused or missing, with reasons.
    """

    kind: ClassVar[EntryKind] = "aggregate_committed"
    _keys: ClassVar[frozenset[str]] = frozenset(
        {
            "round",
            "strategy",
            "base_model",
            "inputs",
            "contributors",
            "weights",
            "model",
            "metrics",
            "rejected",
            "dropouts",
        }
    )
    round: int
    strategy: str
    base_model: str
    inputs: tuple[str, ...]
    contributors: tuple[str, ...]
    weights: tuple[float, ...]
    model: str
    metrics: Metrics
    rejected: Mapping[str, str]
    dropouts: Mapping[str, str]

    def __post_init__(self) -> None:
        as_int(self.round, "round", minimum=1)
        as_name(self.strategy, "strategy")
        as_digest(self.base_model, "base_model")
        object.__setattr__(self, "inputs", as_digests(self.inputs, "inputs"))
        object.__setattr__(self, "contributors", as_names(self.contributors, "contributors"))
        object.__setattr__(
            self,
            "weights",
            tuple(as_real(w, f"weights[{i}]") for i, w in enumerate(as_list(self.weights, "weights"))),
        )
        if len(self.contributors) != len(self.weights) or len(self.inputs) not in (0, len(self.contributors)):
            raise field_error(
                "inputs",
                "contributors and weights must have the same length, and inputs the same length or none (secure sum)",
            )
        as_digest(self.model, "model")
        object.__setattr__(self, "metrics", as_metrics(self.metrics, "metrics"))
        object.__setattr__(self, "rejected", dict(sorted(as_reasons(self.rejected, "rejected").items())))
        object.__setattr__(self, "dropouts", dict(sorted(as_reasons(self.dropouts, "dropouts").items())))

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "strategy": self.strategy,
            "base_model": self.base_model,
            "inputs": list(self.inputs),
            "contributors": list(self.contributors),
            "weights": list(self.weights),
            "model": self.model,
            "metrics": dict(self.metrics),
            "rejected": dict(self.rejected),
            "dropouts": dict(self.dropouts),
        }


@dataclass(frozen=True, slots=True)
class EvaluationReported(BodyBase):
    """Metrics of a model: on the held-out set (``central``) or summarized over members' test splits."""

    kind: ClassVar[EntryKind] = "evaluation_reported"
    _keys: ClassVar[frozenset[str]] = frozenset({"round", "model", "scope", "members", "metrics"})
    round: int
    model: str
    scope: EvaluationScope
    members: int
    metrics: Metrics

    def __post_init__(self) -> None:
        as_int(self.round, "round")
        as_digest(self.model, "model")
        as_literal(self.scope, "scope", get_args(EvaluationScope))
        as_int(self.members, "members")
        object.__setattr__(self, "metrics", as_metrics(self.metrics, "metrics"))

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "model": self.model,
            "scope": self.scope,
            "members": self.members,
            "metrics": dict(self.metrics),
        }


@dataclass(frozen=True, slots=True)
class PrivacySpent(BodyBase):
    """Privacy budget after a round: cumulative ``(epsilon, delta)`` from ``accountant``.

    ``member`` is ``None`` for the federation-level (central DP) budget, or the member whose local budget
    this is.
    """

    kind: ClassVar[EntryKind] = "privacy_spent"
    _keys: ClassVar[frozenset[str]] = frozenset({"round", "member", "epsilon", "delta", "accountant"})
    round: int
    epsilon: float
    delta: float
    accountant: str
    member: str | None = None

    def __post_init__(self) -> None:
        as_int(self.round, "round", minimum=1)
        object.__setattr__(self, "epsilon", as_real(self.epsilon, "epsilon"))
        object.__setattr__(self, "delta", as_real(self.delta, "delta"))
        if self.epsilon < 0 or not 0 <= self.delta < 1:
            raise field_error(
                "epsilon", f"({self.epsilon}, {self.delta}) is not a valid (epsilon >= 0, 0 <= delta < 1)"
            )
        as_name(self.accountant, "accountant")
        if self.member is not None:
            as_name(self.member, "member")

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "member": self.member,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
        }


@dataclass(frozen=True, slots=True)
class AnomalyFlagged(BodyBase):
    """A detector flagged a member's update in a round, with its scores and what was done about it."""

    kind: ClassVar[EntryKind] = "anomaly_flagged"
    _keys: ClassVar[frozenset[str]] = frozenset({"round", "member", "scores", "reason", "action"})
    round: int
    member: str
    scores: Metrics
    reason: str
    action: AnomalyAction = "flagged"

    def __post_init__(self) -> None:
        as_int(self.round, "round", minimum=1)
        as_name(self.member, "member")
        object.__setattr__(self, "scores", as_metrics(self.scores, "scores"))
        as_text(self.reason, "reason")
        as_literal(self.action, "action", get_args(AnomalyAction))

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "member": self.member,
            "scores": dict(self.scores),
            "reason": self.reason,
            "action": self.action,
        }
