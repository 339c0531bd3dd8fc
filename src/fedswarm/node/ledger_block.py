"""What a network round writes on the ledger: the entry bodies a leader and its members sign.

The bodies are those :mod:`fedswarm.ledger.recorder` writes in simulation, with the authors a real
federation has: each member signs its own ``update_submitted`` (the digest, size and L2 norm of the update
bytes it sends, and its example count), the round's leader signs ``round_opened``, ``aggregate_committed``,
``evaluation_reported``, the privacy and anomaly reports of the round's extensions and the admissions of
members that take part for the first time, and the federation's founding member (the first round's leader)
signs ``federation_created`` as the ledger's coordinator (:func:`check_creation` is what every node expects
of that entry).

**Entry 0 registers the founding members.** The manifest records the revision that added each member
(``since``); the founding members are those with ``since == 1``, revoked or not
(:attr:`fedswarm.node.manifest.Manifest.founders`). Every node, a founding member or one that joined later,
knows them from its own manifest (:attr:`GenesisFacts.founders`), so every node requires the same of entry 0:
created by a founding member's coordinator name with that member's key, registering exactly the founding
members with their manifest keys. Members added later are registered by ``member_admitted`` entries.

**Update digest.** On the network an update's digest is the SHA-256 of the bytes the member sends (one
little-endian float64 tensor named ``update``, :mod:`fedswarm.transport.wire`): the digest the commit
declares and the leader checks on arrival, so every node can match the ledger against the commit.

**Positions.** An entry's sequence number is part of what its author signs, but a member signs its entry
before the leader knows which updates will arrive. A member therefore signs the position its entry has when
every registered member submits: its rank among them in member-id order after the round's opening entry
(:func:`predicted_seq`). The leader keeps every entry at its predicted position when that position is in
the block, and asks the members whose positions moved (a member before them dropped out, or the round was
sampled) to sign their unchanged statement again at the new one (:func:`assign_positions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedswarm.codec import canonical
from fedswarm.core.errors import VerificationError
from fedswarm.ledger.entries import (
    AggregateCommitted,
    AnomalyFlagged,
    Body,
    Entry,
    EvaluationReported,
    FederationCreated,
    MemberKey,
    PrivacySpent,
    RoundOpened,
    SignedEntry,
)
from fedswarm.ledger.roundblock import BlockRefused
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.spec.schema import Spec
from fedswarm.transport.wire import decode_update

__all__ = [
    "COORDINATOR_PREFIX",
    "GenesisFacts",
    "assign_positions",
    "check_creation",
    "check_founder",
    "config_digest",
    "coordinator_name",
    "leader_bodies",
    "member_order",
    "predicted_seq",
    "update_norm",
]

COORDINATOR_PREFIX = "coordinator@"
"""The ledger's coordinator on the network is ``coordinator@<founding member>``: ``@`` never occurs in a
member name, so the name cannot be a member's."""


def coordinator_name(member: str) -> str:
    """The coordinator's name on the ledger when ``member`` founded it."""
    return f"{COORDINATOR_PREFIX}{member}"


def check_founder(first: Entry, founders: Mapping[str, bytes]) -> str:
    """The founding member of a stored ledger, after checking its first entry; returns its name.

    ``founders``: the manifest's founding members and their keys (:meth:`GenesisFacts.founder_keys`).

    Raises
    ------
    VerificationError
        Entry 0 is not the creation by a coordinator name, names no founding member of the manifest, or is
        signed with another key than that member's.
    """
    if not isinstance(first.body, FederationCreated) or not first.author.startswith(COORDINATOR_PREFIX):
        raise VerificationError(f"entry 0 ({first.kind} by {first.author}) is not the creation by a coordinator")
    founder = first.author.removeprefix(COORDINATOR_PREFIX)
    registered = founders.get(founder)
    if registered is None:
        raise VerificationError(f"entry 0 is written by {first.author}, but {founder} is not a founding member")
    if registered != first.key:
        raise VerificationError(f"entry 0 is signed by {first.author} with another key than {founder}'s")
    return founder


def check_creation(first: SignedEntry, founder: str, *, expected: FederationCreated) -> None:
    """Entry 0 as every node expects it, a founding member or one that joined later.

    ``expected`` is the creation this node would write (:meth:`GenesisFacts.creation`): it registers the
    manifest's founding members with their keys. Entry 0 must be the creation by ``founder``'s coordinator
    name, signed with the key of ``founder``, a founding member; state the facts of ``expected``; and register
    exactly the founding members, each with its manifest key (in any order).

    Raises
    ------
    BlockRefused
        Naming the first field that differs (the missing or extra members by name).
    """
    entry = first.entry
    if entry.author != coordinator_name(founder) or not isinstance(entry.body, FederationCreated):
        raise BlockRefused(f"entry 0 must create the federation as {coordinator_name(founder)}")
    founders = {m.name: m.key for m in expected.members}
    if founder not in founders:
        raise BlockRefused(f"entry 0 is created by {founder}, who is not a founding member (since 1) of the manifest")
    if founders[founder] != entry.key:
        raise BlockRefused(f"entry 0 is not signed with {founder}'s key from the manifest")
    body = entry.body
    for name in ("spec_digest", "strategy", "initial_model", "quorum", "keys"):
        if getattr(body, name) != getattr(expected, name):
            raise BlockRefused(f"entry 0 states {name} {getattr(body, name)!r}, this node {getattr(expected, name)!r}")
    registered = {m.name: m.key for m in body.members}  # a name listed twice does not parse
    missing = sorted(founders.keys() - registered.keys())
    if missing:
        raise BlockRefused(f"entry 0 does not register the founding members {missing} of the manifest")
    extra = sorted(registered.keys() - founders.keys())
    if extra:
        raise BlockRefused(f"entry 0 registers {extra}, who are not founding members (since 1) of the manifest")
    for name in sorted(registered):
        if registered[name] != founders[name]:
            raise BlockRefused(f"entry 0 registers another key for {name} than the manifest's")


def config_digest(spec: Spec) -> str:
    """Digest of the round configuration (``strategy``, ``training`` and ``stages``), as in simulation."""
    value = spec.to_dict()
    return canonical.digest({name: value[name] for name in ("strategy", "training", "stages") if name in value}).hex()


def update_norm(data: bytes | bytearray) -> float:
    """L2 norm of an update in its wire form."""
    return float(np.linalg.norm(decode_update(data, source="update")))


@dataclass(frozen=True, slots=True)
class GenesisFacts:
    """What every node knows the ledger's first entry must say: the spec's facts, and the founding members
    with their keys (the manifest's members with ``since == 1``, revoked or not, which never change).

    ``quorum`` is the spec's ``ledger.quorum`` (default 2/3): entry 0 records it and every replica counts
    finality with it, so a node whose spec sets another quorum refuses the creation (:func:`check_creation`).
    """

    spec_digest: str
    population: int
    strategy: str
    initial_model: str
    config_digest: str
    founders: tuple[MemberKey, ...]
    quorum: tuple[int, int] = (2, 3)

    def founder_keys(self) -> dict[str, bytes]:
        """The founding members' keys by name."""
        return {m.name: m.key for m in self.founders}

    def creation(self, member_id: Callable[[str], int]) -> FederationCreated:
        """The ``federation_created`` body: the founding members in member-id order (:func:`member_order`),
        provisioned keys, the spec's quorum."""
        keys = self.founder_keys()
        return FederationCreated(
            spec_digest=self.spec_digest,
            population=self.population,
            members=tuple(MemberKey(name, keys[name]) for name in member_order(keys, member_id)),
            strategy=self.strategy,
            initial_model=self.initial_model,
            quorum=self.quorum,
            keys="provisioned",
        )


def predicted_seq(size: int, rank: int) -> int:
    """Where a member's update entry goes when every registered member submits.

    ``size`` is the ledger's size before the round (an empty ledger gets ``federation_created`` first),
    ``rank`` the member's position among the registered members in member-id order.
    """
    return size + (1 if size == 0 else 0) + 1 + rank


def assign_positions(predicted: Mapping[str, int], *, start: int, order: Callable[[str], int]) -> dict[str, int]:
    """Positions ``start, start + 1, ...`` of a block's update entries, one per member of ``predicted``.

    A member keeps its predicted position when it lies in the block and no other member claims it; the
    others take the free positions in member-id order (they must sign again).
    """
    slots = range(start, start + len(predicted))
    taken: dict[int, str] = {}
    for name in sorted(predicted, key=order):
        seq = predicted[name]
        if seq in slots and seq not in taken:
            taken[seq] = name
    kept = set(taken.values())
    free = iter(seq for seq in slots if seq not in taken)
    out = {name: seq for seq, name in taken.items()}
    for name in sorted((n for n in predicted if n not in kept), key=order):
        out[name] = next(free)
    return out


def _metrics(values: Mapping[str, float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in values.items():
        number = float(value)
        out[str(key)] = number if math.isfinite(number) else None
    return out


def _anomalies(notes: Any, rnd: int) -> list[AnomalyFlagged]:
    """``annotations["anomalies"]``: dicts with the member's name, a reason and numeric scores."""
    if not isinstance(notes, Sequence):
        return []
    out = []
    for note in notes:
        if not isinstance(note, Mapping) or not note.get("flagged", True) or "member" not in note:
            continue
        scores = {
            str(k): (float(v) if math.isfinite(float(v)) else None)
            for k, v in note.items()
            if k not in ("member", "round", "flagged", "reason")
            and isinstance(v, int | float)
            and not isinstance(v, bool)
        }
        out.append(AnomalyFlagged(rnd, str(note["member"]), scores, str(note.get("reason", ""))))
    return out


def _privacy(note: Any, rnd: int) -> list[PrivacySpent]:
    """``annotations["privacy"]`` (``epsilon``, ``delta``, ``accountant``) when a budget is kept."""
    if not isinstance(note, Mapping) or note.get("epsilon") is None:
        return []
    return [
        PrivacySpent(
            rnd, float(note["epsilon"]), float(note.get("delta") or 0.0), str(note.get("accountant") or "unknown")
        )
    ]


def leader_bodies(
    outcome: RoundOutcome,
    *,
    leader: str,
    names: Callable[[int], str],
    digests: Mapping[int, str],
    strategy: str,
    config: str,
    previous_model: str,
    model: str,
    secure: bool,
) -> tuple[RoundOpened, list[Body]]:
    """The leader's entries of a round: its opening, and what follows the members' updates.

    ``digests`` are the received updates' digests by member id; ``secure``: the round aggregated a secure
    sum (no update is in the clear), whose contributors are listed without inputs.
    """
    rnd = int(outcome.round)
    opened = RoundOpened(rnd, leader, tuple(names(int(m)) for m in outcome.selected), config, previous_model)
    accepted = [int(m) for m in outcome.accepted]
    contributors = tuple(names(m) for m in accepted)
    aggregate = AggregateCommitted(
        round=rnd,
        strategy=strategy,
        base_model=previous_model,
        inputs=() if secure else tuple(digests[m] for m in accepted),
        contributors=contributors,
        weights=tuple(1.0 for _ in accepted) if secure else tuple(float(w) for w in outcome.weights[: len(accepted)]),
        model=model,
        metrics=_metrics(outcome.train_metrics),
        rejected={names(int(m)): str(r) for m, r in outcome.rejected.items()},
        dropouts={names(int(m)): str(r) for m, r in outcome.dropouts.items()},
    )
    after: list[Body] = [aggregate]
    if outcome.central is not None:
        central = _metrics({"loss": outcome.central.loss, **dict(outcome.central.metrics)})
        after.append(EvaluationReported(rnd, model, "central", 0, central))
    evaluation = outcome.members_eval
    if evaluation is not None:
        summary = _metrics(
            {
                "accuracy": evaluation.accuracy_mean,
                "accuracy_worst10": evaluation.accuracy_worst10,
                "loss": evaluation.loss_mean,
            }
        )
        after.append(EvaluationReported(rnd, model, "members", int(evaluation.members), summary))
    annotations = outcome.annotations if isinstance(outcome.annotations, Mapping) else {}
    after.extend(_anomalies(annotations.get("anomalies"), rnd))
    after.extend(_privacy(annotations.get("privacy"), rnd))
    return opened, after


def member_order(names: Iterable[str], member_id: Callable[[str], int]) -> list[str]:
    """``names`` in member-id order (unknown names last, by name)."""

    def key(name: str) -> tuple[int, str]:
        try:
            return member_id(name), name
        except (KeyError, ValueError):
            return 1 << 62, name

    return sorted(names, key=key)
