"""Questions an auditor asks of a ledger: where did this model come from, and which round moved a metric.

:func:`load_audit` replays a ledger into an :class:`AuditLog` (rounds, their updates, aggregates and
evaluations). :func:`lineage` walks from a model back to the initial model: each step is a round with
its base model, its contributors with their updates (digest, examples, norm) that produced the next
model, and the members whose updates were refused. :func:`fedswarm.ledger.blame.blame` finds the round where a metric changed
most between two consecutive evaluations (and the other pairs of rounds whose change ties with it) and
lists each contributor's update statistics for the rounds in between: examples, L2 norm, and, when
updates were retained, the L2 distance and cosine similarity to the applied aggregate step (new model
minus base model) and the distance to the example-weighted mean of the round's updates.

A round aggregated privately (secure aggregation, CKKS, central DP, group-wise aggregation) commits its
contributors without inputs: nobody held an individual update, so the ledger has no per-update digest.
Lineage lists such a round's contributors without updates, and blame gives no per-contributor statistics
for it but says why (:data:`PRIVATE_REASON`); the aggregate step of the round is still known.

Run these on a verified ledger (the CLI verifies first): they read entries, they do not re-check them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fedswarm.core.errors import FedswarmError, VerificationError
from fedswarm.ledger.entries import (
    AggregateCommitted,
    AnomalyFlagged,
    EvaluationReported,
    FederationCreated,
    MemberAdmitted,
    MemberRemoved,
    PrivacySpent,
    RoundOpened,
    UpdateSubmitted,
)
from fedswarm.ledger.models import ObjectStore
from fedswarm.ledger.store import LedgerStore, find_ledger

__all__ = [
    "PRIVATE_REASON",
    "AuditError",
    "AuditLog",
    "AuditRound",
    "Contributor",
    "LineageStep",
    "Submission",
    "aggregated_privately",
    "lineage",
    "load_audit",
    "resolve_model",
    "round_submissions",
]

Scope = Literal["central", "members"]

PRIVATE_REASON = (
    "the updates were aggregated privately (secure aggregation, CKKS, central DP or group-wise aggregation): "
    "the ledger holds no per-update digest, only the contributors and the aggregate"
)
"""Why a round has no per-contributor update statistics."""


class AuditError(FedswarmError):
    """An audit question has no answer in this ledger (unknown model, metric never evaluated, ...)."""


@dataclass(frozen=True, slots=True)
class Submission:
    """An update as its ``update_submitted`` entry describes it."""

    seq: int
    member: str
    update: str
    examples: int
    norm: float
    bytes: int


@dataclass(slots=True)
class AuditRound:
    """Everything the log says about one round."""

    round: int
    opened: RoundOpened | None = None
    opened_seq: int | None = None
    submissions: dict[str, Submission] = field(default_factory=dict)
    aggregate: AggregateCommitted | None = None
    aggregate_seq: int | None = None
    evaluations: list[EvaluationReported] = field(default_factory=list)
    anomalies: list[AnomalyFlagged] = field(default_factory=list)
    privacy: list[PrivacySpent] = field(default_factory=list)


@dataclass(slots=True)
class AuditLog:
    """A ledger replayed for audits."""

    folder: Path
    federation: str
    size: int
    created: FederationCreated
    coordinator: str
    rounds: dict[int, AuditRound]
    models: dict[str, int]
    admitted: dict[str, int]
    removed: dict[str, int]
    objects: ObjectStore

    def round(self, number: int) -> AuditRound:
        """The record of round ``number``.

        Raises
        ------
        AuditError
            If the log has no such round.
        """
        try:
            return self.rounds[number]
        except KeyError:
            raise AuditError(
                f"round {number} is not in the ledger (rounds: 1..{max(self.rounds, default=0)})"
            ) from None


def load_audit(path: Path) -> AuditLog:
    """Replay the ledger at ``path`` (ledger folder, run directory or node data folder).

    Raises
    ------
    VerificationError
        If there is no ledger, it does not start with ``federation_created``, or a record cannot be read or
        does not parse (naming the database and the entry).
    """
    folder = find_ledger(path)
    store = LedgerStore(folder, readonly=True)
    try:
        created: FederationCreated | None = None
        coordinator = ""
        rounds: dict[int, AuditRound] = {}
        models: dict[str, int] = {}
        admitted: dict[str, int] = {}
        removed: dict[str, int] = {}
        for signed in store.entries():  # a record that does not parse is named
            entry, body = signed.entry, signed.entry.body
            if isinstance(body, FederationCreated):
                created, coordinator = body, entry.author
                models[body.initial_model] = 0
                admitted.update({m.name: entry.seq for m in body.members})
            elif isinstance(body, MemberAdmitted):
                admitted[body.member] = entry.seq
            elif isinstance(body, MemberRemoved):
                removed[body.member] = entry.seq
            elif isinstance(body, RoundOpened):
                record = rounds.setdefault(body.round, AuditRound(body.round))
                record.opened, record.opened_seq = body, entry.seq
            elif isinstance(body, UpdateSubmitted):
                record = rounds.setdefault(body.round, AuditRound(body.round))
                record.submissions[entry.author] = Submission(
                    entry.seq, entry.author, body.update, body.examples, body.norm, body.bytes
                )
            elif isinstance(body, AggregateCommitted):
                record = rounds.setdefault(body.round, AuditRound(body.round))
                record.aggregate, record.aggregate_seq = body, entry.seq
                models.setdefault(body.model, body.round)
            elif isinstance(body, EvaluationReported):
                rounds.setdefault(body.round, AuditRound(body.round)).evaluations.append(body)
            elif isinstance(body, AnomalyFlagged):
                rounds.setdefault(body.round, AuditRound(body.round)).anomalies.append(body)
            elif isinstance(body, PrivacySpent):
                rounds.setdefault(body.round, AuditRound(body.round)).privacy.append(body)
        if created is None:
            raise VerificationError(f"{folder}: the ledger is empty or does not start with federation_created")
        return AuditLog(
            folder=folder,
            federation=store.federation,
            size=store.size,
            created=created,
            coordinator=coordinator,
            rounds=dict(sorted(rounds.items())),
            models=models,
            admitted=admitted,
            removed=removed,
            objects=store.objects,
        )
    finally:
        store.close()


def resolve_model(log: AuditLog, model: str) -> str:
    """The full digest of a model named by its digest or a unique prefix of at least 8 hex digits.

    Raises
    ------
    AuditError
        If no model, or more than one, matches.
    """
    text = model.strip().lower()
    if text in log.models:
        return text
    if len(text) < 8:
        raise AuditError(f"model {model!r}: give the digest or a prefix of at least 8 hex digits")
    matches = [digest for digest in log.models if digest.startswith(text)]
    if not matches:
        raise AuditError(f"model {model!r} was not produced in this ledger")
    if len(matches) > 1:
        raise AuditError(f"model prefix {model!r} is ambiguous: {len(matches)} models match")
    return matches[0]


def aggregated_privately(aggregate: AggregateCommitted) -> bool:
    """Whether a round's contributors are committed without update digests (see :data:`PRIVATE_REASON`)."""
    return not aggregate.inputs and bool(aggregate.contributors)


def round_submissions(record: AuditRound, aggregate: AggregateCommitted) -> tuple[Submission, ...]:
    """The ``update_submitted`` entries behind a round's inputs, aligned with its contributors.

    Empty for a round aggregated privately.

    Raises
    ------
    AuditError
        If an input is not the update its contributor submitted in that round.
    """
    if aggregated_privately(aggregate):
        return ()
    if len(aggregate.inputs) != len(aggregate.contributors):
        raise AuditError(
            f"round {record.round}: {len(aggregate.inputs)} inputs for {len(aggregate.contributors)} contributors"
        )
    out = []
    for name, update in zip(aggregate.contributors, aggregate.inputs, strict=True):
        submission = record.submissions.get(name)
        if submission is None or submission.update != update:
            raise AuditError(f"round {record.round}: the update {update[:16]} of {name} is not in the ledger")
        out.append(submission)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Contributor:
    """A member whose update went into a round's aggregate.

    ``update``, ``examples``, ``norm`` and ``seq`` (its ``update_submitted`` entry) are ``None`` when the
    round was aggregated privately; ``weight`` is the aggregation weight the aggregate commits.
    """

    member: str
    weight: float
    update: str | None
    examples: int | None
    norm: float | None
    seq: int | None


@dataclass(frozen=True, slots=True)
class LineageStep:
    """One round on the way to a model: ``base_model`` plus the contributors' updates gave ``model``.

    ``private``: the round's inputs were aggregated privately, so its contributors carry no update
    (:data:`PRIVATE_REASON`).
    """

    round: int
    strategy: str
    base_model: str
    model: str
    contributors: tuple[Contributor, ...]
    private: bool
    rejected: dict[str, str]
    dropouts: dict[str, str]
    metrics: dict[str, float | None]
    entry: int


def lineage(log: AuditLog, model: str) -> list[LineageStep]:
    """The rounds that produced ``model``, from the initial model onwards (empty for the initial model).

    Raises
    ------
    AuditError
        If the model is unknown or its chain is broken.
    """
    digest = resolve_model(log, model)
    steps: list[LineageStep] = []
    by_output = {r.aggregate.model: r for r in log.rounds.values() if r.aggregate is not None}
    seen: set[str] = set()
    while digest != log.created.initial_model:
        if digest in seen:
            raise AuditError(f"model {digest} appears twice in its own lineage")
        seen.add(digest)
        record = by_output.get(digest)
        if record is None or record.aggregate is None or record.aggregate_seq is None:
            raise AuditError(f"no aggregate in the ledger produced model {digest}")
        aggregate = record.aggregate
        private = aggregated_privately(aggregate)
        if private:
            contributors = tuple(
                Contributor(name, weight, None, None, None, None)
                for name, weight in zip(aggregate.contributors, aggregate.weights, strict=True)
            )
        else:
            contributors = tuple(
                Contributor(s.member, weight, s.update, s.examples, s.norm, s.seq)
                for s, weight in zip(round_submissions(record, aggregate), aggregate.weights, strict=True)
            )
        metrics: dict[str, float | None] = {}
        for evaluation in record.evaluations:
            if evaluation.model == aggregate.model:
                prefix = "" if evaluation.scope == "central" else "members_"
                metrics.update({prefix + k: v for k, v in evaluation.metrics.items()})
        steps.append(
            LineageStep(
                round=record.round,
                strategy=aggregate.strategy,
                base_model=aggregate.base_model,
                model=aggregate.model,
                contributors=contributors,
                private=private,
                rejected=dict(aggregate.rejected),
                dropouts=dict(aggregate.dropouts),
                metrics=metrics,
                entry=record.aggregate_seq,
            )
        )
        digest = aggregate.base_model
    steps.reverse()
    return steps
