"""A round's block of ledger entries checked against the commit that carries it.

On the network, a round's leader sends every member a signed commit (previous model, new model, the
updates it received) together with the round's ledger entries: its own (``round_opened``,
``aggregate_committed``, evaluations, privacy and anomaly reports, the federation's first entries in round
1, and the admissions of members that take part for the first time) and the members' signed
``update_submitted`` entries. Signatures and the rules of the history are checked when the entries are
appended (:meth:`fedswarm.ledger.replica.Replica.extend`); this module checks what the rules cannot know:
that the block says what the commit says.

:func:`check_round_block` refuses a block, naming the entry and the reason, when an entry belongs to
another round, the round is opened or aggregated by someone else than the commit's leader or from another
model, a member is admitted after the round opened or by someone who is neither the coordinator nor leads
or takes part in the round (a leader not registered yet has a member of the round sign the admissions), an
update entry's digest is not the one the commit declares for its author, an aggregated update has no
entry, or the aggregate's inputs are not exactly the accepted updates. (A refused update may lack an
entry: a member cannot state the L2 norm of an update that is not finite.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.entries import (
    AggregateCommitted,
    AnomalyFlagged,
    EvaluationReported,
    FederationCreated,
    MemberAdmitted,
    MemberRemoved,
    PrivacySpent,
    RoundOpened,
    SignedEntry,
    UpdateSubmitted,
)

__all__ = ["BlockRefused", "CommitFacts", "DeclaredUpdate", "check_round_block"]


class BlockRefused(VerificationError):
    """A round's entries do not match its commit (the message names the entry and why)."""


@dataclass(frozen=True, slots=True)
class DeclaredUpdate:
    """An update the commit declares: its digest and whether it was aggregated."""

    digest: str
    accepted: bool


@dataclass(frozen=True, slots=True)
class CommitFacts:
    """What a signed commit states about its round.

    ``coordinator`` is the ledger's coordinator (the author of the first entry when ``first`` is set: the
    block then starts the ledger; of removals; and of admissions when the founding member leads). Members are admitted by the round's leader.
    """

    round: int
    leader: str
    previous_model: str
    model: str
    updates: Mapping[str, DeclaredUpdate]
    coordinator: str
    first: bool = False


def _refuse(item: SignedEntry, reason: str) -> BlockRefused:
    entry = item.entry
    return BlockRefused(f"entry {entry.seq} ({entry.kind} by {entry.author}): {reason}")


def _check_leader_entry(item: SignedEntry, facts: CommitFacts) -> None:
    if item.entry.author != facts.leader:
        raise _refuse(item, f"written by {item.entry.author}, not by the round's leader {facts.leader}")


def check_round_block(block: Sequence[SignedEntry], facts: CommitFacts) -> None:
    """Check that a round's entries say what its commit says.

    Parameters
    ----------
    block
        The entries in append order (parsed; signatures are checked when they are appended).
    facts
        The commit's round, leader, models and declared updates.

    Raises
    ------
    BlockRefused
        Naming the first entry that does not match, or what is missing.
    """
    opened = aggregated = 0
    submitted: dict[str, str] = {}
    aggregate: AggregateCommitted | None = None
    admissions: list[SignedEntry] = []
    selected: tuple[str, ...] = ()
    for position, item in enumerate(block):
        entry, body = item.entry, item.entry.body
        number = entry.round
        if number is not None and not isinstance(body, FederationCreated) and number != facts.round:
            raise _refuse(item, f"it is about round {number}, the commit is of round {facts.round}")
        if isinstance(body, FederationCreated):
            if not facts.first or position != 0:
                raise _refuse(item, "only the first entry of the ledger creates the federation")
            if entry.author != facts.coordinator:
                raise _refuse(item, f"the federation must be created by {facts.coordinator}")
        elif isinstance(body, MemberAdmitted):
            if opened:
                raise _refuse(item, "admissions come before the round opens")
            admissions.append(item)
        elif isinstance(body, MemberRemoved):
            if entry.author != facts.coordinator or opened:
                raise _refuse(item, f"removals are written by {facts.coordinator} before the round")
        elif isinstance(body, RoundOpened):
            _check_leader_entry(item, facts)
            if opened:
                raise _refuse(item, "the round is opened twice")
            selected = body.selected
            if body.base_model != facts.previous_model:
                raise _refuse(
                    item, f"it starts from model {body.base_model[:16]}, the commit from {facts.previous_model[:16]}"
                )
            opened += 1
        elif isinstance(body, UpdateSubmitted):
            declared = facts.updates.get(entry.author)
            if declared is None:
                raise _refuse(item, "the commit declares no update from its author")
            if body.update != declared.digest:
                raise _refuse(item, f"it states update {body.update[:16]}, the commit declares {declared.digest[:16]}")
            if aggregated:
                raise _refuse(item, "an update after the round's aggregate")
            submitted[entry.author] = body.update
        elif isinstance(body, AggregateCommitted):
            _check_leader_entry(item, facts)
            if aggregated:
                raise _refuse(item, "a second aggregate")
            if body.model != facts.model or body.base_model != facts.previous_model:
                raise _refuse(
                    item,
                    f"it commits model {body.model[:16]} from {body.base_model[:16]}, the commit "
                    f"{facts.model[:16]} from {facts.previous_model[:16]}",
                )
            aggregate = body
            aggregated += 1
        elif isinstance(body, EvaluationReported):
            _check_leader_entry(item, facts)
            if body.model != facts.model:
                raise _refuse(item, f"it evaluates model {body.model[:16]}, the commit's is {facts.model[:16]}")
        elif isinstance(body, PrivacySpent | AnomalyFlagged):
            _check_leader_entry(item, facts)
    if facts.first and (not block or not isinstance(block[0].entry.body, FederationCreated)):
        raise BlockRefused("the first round's block must start the ledger with federation_created")
    if opened != 1 or aggregate is None:
        raise BlockRefused(f"round {facts.round}'s block must open the round once and commit one aggregate")
    for item in admissions:
        if item.entry.author not in (facts.leader, facts.coordinator, *selected):
            raise _refuse(
                item,
                f"{item.entry.author} is not the coordinator and neither leads nor takes part in round {facts.round}",
            )
    _check_aggregate(aggregate, facts, submitted)


def _check_aggregate(aggregate: AggregateCommitted, facts: CommitFacts, submitted: Mapping[str, str]) -> None:
    accepted = {name: d.digest for name, d in facts.updates.items() if d.accepted}
    if not aggregate.inputs:  # a secure sum: no update is in the clear, so none may be on the ledger
        if submitted:
            raise BlockRefused(f"round {facts.round}: a secure sum with updates in the clear ({sorted(submitted)[0]})")
        return
    missing = sorted(name for name in accepted if name not in submitted)
    if missing:
        raise BlockRefused(f"round {facts.round}: the aggregated update of {missing[0]} has no entry")
    used = dict(zip(aggregate.contributors, aggregate.inputs, strict=True))
    if used != accepted:
        extra = sorted(set(used) ^ set(accepted)) or sorted(n for n in used if used[n] != accepted.get(n))
        raise BlockRefused(
            f"round {facts.round}: the aggregate's inputs are not the updates the commit accepted ({extra[0]})"
        )
