"""The rules a ledger's history must follow, replayed entry by entry.

Signatures and hashes prove that entries were not changed; these rules prove that the history makes
sense: one ``federation_created`` first; every author registered, not removed, and signing with its
registered key; members admitted by the coordinator or a member (on the network, where nobody coordinates,
by the leader of the round they join) and removed by the coordinator; rounds opened in increasing order by
their leader on the current model; updates only from selected members, once per round; an aggregate
committed by the round's leader, from exactly the updates submitted in that round, on the round's base
model; evaluations of known models; privacy and anomaly reports about opened rounds and known members.

:class:`LedgerState` is a plain state machine: :meth:`LedgerState.apply` takes entries in order and raises
:class:`RuleViolation` (a :class:`~fedswarm.core.errors.VerificationError`) with the reason when one
breaks a rule. Verification, audits and replicas all replay through it.

It also keeps who was registered at every size of the log (:class:`Registry`): a checkpoint of ``s``
entries is checked against the members registered at size ``s`` (:class:`Membership`), whether an auditor
verifies the whole folder or a replica whose log has grown since receives it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.checkpoint import quorum_size
from fedswarm.ledger.entries import (
    AggregateCommitted,
    AnomalyFlagged,
    Entry,
    EvaluationReported,
    FederationCreated,
    MemberAdmitted,
    MemberRemoved,
    PrivacySpent,
    RoundOpened,
    UpdateSubmitted,
)

__all__ = ["LedgerState", "Membership", "Registry", "RoundState", "RuleViolation"]


class RuleViolation(VerificationError):
    """An entry that breaks a rule of the history (the message says which)."""


@dataclass(slots=True)
class RoundState:
    """What the log says about the round in progress."""

    round: int
    leader: str
    selected: frozenset[str]
    base_model: str
    updates: dict[str, str] = field(default_factory=dict)
    committed: str | None = None


_OPEN = sys.maxsize
"""The end of the span of a member that is still registered."""

_Span = tuple[int, int, bytes]
"""``(start, stop, key)``: registered with ``key`` while the log holds ``start <= size < stop`` entries."""


@dataclass(frozen=True, slots=True)
class Membership:
    """Who was registered when the log held ``size`` entries: what a checkpoint of that size is checked against.

    The rule for a checkpoint of ``size`` entries: it is signed by the coordinator or by one of ``members``
    with the key registered for it at that size; every cosignature is by one of ``members`` with its key at
    that size; it is final when strictly more than ``quorum`` of ``members`` cosigned it. Members admitted
    later do not count, members removed later still do.
    """

    size: int
    coordinator: str | None
    coordinator_key: bytes | None
    members: Mapping[str, bytes]
    """Registered, not removed members with their keys (the coordinator excluded)."""
    quorum: tuple[int, int]

    def signer_key(self, name: str) -> bytes:
        """The key a checkpoint of this size signed by ``name`` must carry.

        Raises
        ------
        VerificationError
            ``name`` is neither the coordinator nor a member registered at this size.
        """
        if name == self.coordinator and self.coordinator_key is not None:
            return self.coordinator_key
        key = self.members.get(name)
        if key is None:
            raise VerificationError(
                f"signed by {name}, who is neither the coordinator nor a member registered at size {self.size}"
            )
        return key

    def needed(self, *, quorum: tuple[int, int] | None = None) -> int:
        """Cosigners a checkpoint of this size needs to be final (``quorum`` default: the log's)."""
        return quorum_size(len(self.members), quorum=self.quorum if quorum is None else quorum)


class Registry:
    """Who was registered at every size of a log, kept while its entries are applied.

    Membership changes rarely (the creation, admissions, removals), so the registry keeps, for each name,
    the spans of log sizes over which it was registered and with which key (a member removed and admitted
    again has two); a lookup at a size picks each name's span covering it and never replays the log.
    Memory grows with the number of changes, not with members times changes. A size beyond the log sees
    the members registered now.
    """

    __slots__ = ("_coordinator", "_quorum", "_spans")

    def __init__(self) -> None:
        self._coordinator: str | None = None
        self._quorum: tuple[int, int] = (2, 3)
        self._spans: dict[str, tuple[_Span, ...]] = {}

    def create(self, size: int, coordinator: str, keys: Mapping[str, bytes], quorum: tuple[int, int]) -> None:
        """Register the coordinator and the founding members (``keys``, the coordinator's included) from
        ``size`` entries on."""
        self._coordinator = coordinator
        self._quorum = quorum
        self._spans = {name: ((size, _OPEN, key),) for name, key in keys.items()}

    def admit(self, size: int, name: str, key: bytes) -> None:
        """Register ``name`` with ``key`` from ``size`` entries on (it is not registered now)."""
        self._spans[name] = (*self._spans.get(name, ()), (size, _OPEN, key))

    def remove(self, size: int, name: str) -> None:
        """End ``name``'s registration at ``size`` entries (it is registered now)."""
        *earlier, (start, _stop, key) = self._spans[name]
        self._spans[name] = (*earlier, (start, size, key))

    def at(self, size: int) -> Membership:
        """The membership when the log held ``size`` entries (now, for a size beyond the log)."""
        members: dict[str, bytes] = {}
        coordinator_key = None
        for name, spans in self._spans.items():
            for start, stop, key in reversed(spans):
                if start <= size < stop:
                    if name == self._coordinator:
                        coordinator_key = key
                    else:
                        members[name] = key
                    break
                if start <= size:
                    break
        coordinator = self._coordinator if coordinator_key is not None else None
        return Membership(size, coordinator, coordinator_key, MappingProxyType(members), self._quorum)

    def copy(self) -> Registry:
        """An independent copy (the spans are immutable tuples: shared)."""
        copy = Registry()
        copy._coordinator, copy._quorum, copy._spans = self._coordinator, self._quorum, dict(self._spans)
        return copy


class LedgerState:
    """The federation as the entries applied so far describe it."""

    __slots__ = (
        "coordinator",
        "current_model",
        "federation",
        "initial_model",
        "key_origin",
        "keys",
        "last_round",
        "models",
        "population",
        "quorum",
        "registry",
        "removed",
        "round",
        "size",
        "spec_digest",
        "strategy",
    )

    def __init__(self) -> None:
        self.federation: str | None = None
        self.coordinator: str | None = None
        self.keys: dict[str, bytes] = {}
        self.removed: set[str] = set()
        self.quorum: tuple[int, int] = (2, 3)
        self.population = 0
        self.spec_digest = ""
        self.strategy = ""
        self.key_origin = ""
        self.initial_model = ""
        self.current_model = ""
        self.models: dict[str, int] = {}
        self.round: RoundState | None = None
        self.last_round = 0
        self.size = 0
        self.registry = Registry()

    def members(self) -> dict[str, bytes]:
        """Registered members that are not removed, with their keys (the coordinator excluded)."""
        return {name: key for name, key in self.keys.items() if name != self.coordinator and name not in self.removed}

    def member_count(self) -> int:
        """Number of registered, not removed members (the coordinator excluded)."""
        return len(self.keys) - len(self.removed) - (1 if self.coordinator in self.keys else 0)

    def is_active(self, name: str) -> bool:
        """Whether ``name`` may author entries now."""
        return name in self.keys and name not in self.removed

    def membership(self, size: int | None = None) -> Membership:
        """Who was registered when the log held ``size`` entries (default: now; a larger size sees now)."""
        return self.registry.at(self.size if size is None else size)

    def copy(self) -> LedgerState:
        """An independent copy: applying entries to it leaves this state unchanged."""
        copy = LedgerState()
        for name in LedgerState.__slots__:
            value = getattr(self, name)
            if isinstance(value, dict | set):
                value = type(value)(value)
            setattr(copy, name, value)
        copy.registry = self.registry.copy()
        if self.round is not None:
            copy.round = replace(self.round, updates=dict(self.round.updates))
        return copy

    def apply(self, entry: Entry) -> None:
        """Apply the next entry.

        Raises
        ------
        RuleViolation
            If the entry breaks a rule; the state is then unchanged.
        """
        if entry.seq != self.size:
            raise RuleViolation(f"sequence number {entry.seq} where {self.size} was expected")
        body = entry.body
        if self.federation is None:
            if not isinstance(body, FederationCreated):
                raise RuleViolation(f"the log must start with federation_created, not {entry.kind}")
            self._create(entry, body)
            self.size += 1
            return
        if entry.federation != self.federation:
            raise RuleViolation(f"federation {entry.federation!r} is not this log's {self.federation!r}")
        registered = self.keys.get(entry.author)
        if registered is None:
            raise RuleViolation(f"author {entry.author} is not a registered member")
        if entry.author in self.removed:
            raise RuleViolation(f"author {entry.author} was removed from the federation")
        if entry.key != registered:
            raise RuleViolation(f"signed with a key that is not {entry.author}'s registered key")
        if isinstance(body, FederationCreated):
            raise RuleViolation("a second federation_created entry")
        if isinstance(body, MemberAdmitted):
            self._admit(entry, body)
        elif isinstance(body, MemberRemoved):
            self._remove(entry, body)
        elif isinstance(body, RoundOpened):
            self._open(entry, body)
        elif isinstance(body, UpdateSubmitted):
            self._submit(entry, body)
        elif isinstance(body, AggregateCommitted):
            self._commit(entry, body)
        elif isinstance(body, EvaluationReported):
            if body.model not in self.models:
                raise RuleViolation(f"evaluation of model {body.model[:16]}..., which no entry produced")
            if body.round > self.last_round:
                raise RuleViolation(f"evaluation for round {body.round}, which was not opened")
        elif isinstance(body, PrivacySpent):
            self._check_round_known(body.round)
            if body.member is not None and body.member not in self.keys:
                raise RuleViolation(f"privacy budget of {body.member}, who is not a member")
        elif isinstance(body, AnomalyFlagged):
            self._check_round_known(body.round)
            if body.member not in self.keys:
                raise RuleViolation(f"anomaly flagged for {body.member}, who is not a member")
        self.size += 1

    def apply_update(self, seq: int, author: str, key: bytes, round: int, update: str) -> None:
        """Apply an ``update_submitted`` entry given by its fields (what :meth:`apply` does, faster).

        The caller has checked that the entry is well formed and of this log's federation.

        Raises
        ------
        RuleViolation
            If the entry breaks a rule; the state is then unchanged.
        """
        if seq != self.size:
            raise RuleViolation(f"sequence number {seq} where {self.size} was expected")
        if self.federation is None:
            raise RuleViolation("the log must start with federation_created, not update_submitted")
        registered = self.keys.get(author)
        if registered is None:
            raise RuleViolation(f"author {author} is not a registered member")
        if author in self.removed:
            raise RuleViolation(f"author {author} was removed from the federation")
        if key != registered:
            raise RuleViolation(f"signed with a key that is not {author}'s registered key")
        current = self._open_round(round, "update")
        if author not in current.selected:
            raise RuleViolation(f"{author} submitted an update to round {round} without being selected")
        if author in current.updates:
            raise RuleViolation(f"{author} submitted a second update to round {round}")
        current.updates[author] = update
        self.size += 1

    # -- rules ------------------------------------------------------------------------------------
    def _create(self, entry: Entry, body: FederationCreated) -> None:
        names = {m.name for m in body.members}
        if entry.author in names:
            raise RuleViolation(f"the coordinator {entry.author} is also listed as a member")
        self.federation = entry.federation
        self.coordinator = entry.author
        self.keys = {m.name: m.key for m in body.members}
        self.keys[entry.author] = entry.key
        self.quorum = body.quorum
        self.population = body.population
        self.spec_digest = body.spec_digest
        self.strategy = body.strategy
        self.key_origin = body.keys
        self.initial_model = self.current_model = body.initial_model
        self.models = {body.initial_model: 0}
        self.registry.create(entry.seq + 1, entry.author, self.keys, body.quorum)

    def _require_coordinator(self, entry: Entry) -> None:
        if entry.author != self.coordinator:
            raise RuleViolation(f"only the coordinator {self.coordinator} may write {entry.kind}")

    def _admit(self, entry: Entry, body: MemberAdmitted) -> None:
        if body.member in self.keys and body.member not in self.removed:
            raise RuleViolation(f"{body.member} is already a member")
        self.keys[body.member] = body.key
        self.removed.discard(body.member)
        self.registry.admit(entry.seq + 1, body.member, body.key)

    def _remove(self, entry: Entry, body: MemberRemoved) -> None:
        self._require_coordinator(entry)
        if body.member == self.coordinator:
            raise RuleViolation("the coordinator cannot be removed")
        if body.member not in self.keys or body.member in self.removed:
            raise RuleViolation(f"{body.member} is not a member")
        self.removed.add(body.member)
        self.registry.remove(entry.seq + 1, body.member)

    def _open(self, entry: Entry, body: RoundOpened) -> None:
        if body.leader != entry.author:
            raise RuleViolation(f"round {body.round} names {body.leader} as leader but is written by {entry.author}")
        if body.round <= self.last_round:
            raise RuleViolation(f"round {body.round} opened after round {self.last_round}")
        if body.base_model != self.current_model:
            raise RuleViolation(
                f"round {body.round} starts from model {body.base_model[:16]}..., the current model is "
                f"{self.current_model[:16]}..."
            )
        if len(set(body.selected)) != len(body.selected):
            raise RuleViolation(f"round {body.round} selects a member twice")
        for name in body.selected:
            if not self.is_active(name) or name == self.coordinator:
                raise RuleViolation(f"round {body.round} selects {name}, who is not an active member")
        self.round = RoundState(body.round, body.leader, frozenset(body.selected), body.base_model)
        self.last_round = body.round

    def _open_round(self, number: int, what: str) -> RoundState:
        current = self.round
        if current is None or current.round != number:
            raise RuleViolation(f"{what} for round {number}, which is not the open round")
        if current.committed is not None:
            raise RuleViolation(f"{what} for round {number}, which is already committed")
        return current

    def _submit(self, entry: Entry, body: UpdateSubmitted) -> None:
        current = self._open_round(body.round, "update")
        if entry.author not in current.selected:
            raise RuleViolation(f"{entry.author} submitted an update to round {body.round} without being selected")
        if entry.author in current.updates:
            raise RuleViolation(f"{entry.author} submitted a second update to round {body.round}")
        current.updates[entry.author] = body.update

    def _commit(self, entry: Entry, body: AggregateCommitted) -> None:
        current = self._open_round(body.round, "aggregate")
        if entry.author != current.leader:
            raise RuleViolation(f"round {body.round}'s aggregate is written by {entry.author}, not by its leader")
        if body.base_model != current.base_model:
            raise RuleViolation(f"round {body.round}'s aggregate starts from another model than the round")
        if len(set(body.contributors)) != len(body.contributors):
            raise RuleViolation(f"round {body.round}'s aggregate lists a contributor twice")
        if not body.inputs:
            for name in body.contributors:
                if name not in current.selected:
                    raise RuleViolation(f"round {body.round}'s secure sum lists {name}, who was not selected")
                if name in current.updates:
                    raise RuleViolation(f"round {body.round}'s secure sum lists {name}, whose update is in the clear")
        for name, digest in zip(body.contributors, body.inputs, strict=False):
            submitted = current.updates.get(name)
            if submitted is None:
                raise RuleViolation(f"round {body.round}'s aggregate uses an update from {name}, who submitted none")
            if submitted != digest:
                raise RuleViolation(f"round {body.round}'s aggregate uses another update from {name} than submitted")
        for name in (*body.rejected, *body.dropouts):
            if name not in current.selected:
                raise RuleViolation(f"round {body.round}'s aggregate reports {name}, who was not selected")
        current.committed = body.model
        self.current_model = body.model
        self.models.setdefault(body.model, body.round)

    def _check_round_known(self, number: int) -> None:
        if number > self.last_round:
            raise RuleViolation(f"round {number} was not opened")
