"""The bodies of ledger entries about a federation's membership: its creation, admissions and removals.

:class:`FederationCreated` is the first entry (the spec, the coordinator, the initial members and the quorum
of cosignatures that makes a checkpoint final); :class:`MemberAdmitted` and :class:`MemberRemoved` change the
registered members afterwards; :class:`MemberKey` is a member's name and public key. The envelope around a body is :class:`~fedswarm.ledger.entries.Entry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias, get_args

from fedswarm.ledger.entry_base import (
    BodyBase,
    EntryKind,
    FastPickle,
    as_digest,
    as_int,
    as_key,
    as_list,
    as_literal,
    as_name,
    as_object,
    as_text,
    check_keys,
    field_error,
)

__all__ = ["FederationCreated", "KeyOrigin", "MemberAdmitted", "MemberKey", "MemberRemoved"]

KeyOrigin: TypeAlias = Literal["simulated", "provisioned"]


@dataclass(frozen=True, slots=True)
class MemberKey(FastPickle):
    """A member's name and its 32-byte Ed25519 public key."""

    name: str
    key: bytes

    def __post_init__(self) -> None:
        as_name(self.name, "member.name")
        object.__setattr__(self, "key", as_key(self.key, f"member {self.name}.key"))


@dataclass(frozen=True, slots=True)
class FederationCreated(BodyBase):
    """The first entry: the federation's spec, its coordinator (the author) and its initial members.

    ``members`` may be empty when members are admitted later (large simulations admit each member when
    it first appears). ``quorum`` is the fraction ``(numerator, denominator)`` of registered members whose
    cosignatures make a checkpoint final: strictly more than that fraction must cosign.
    """

    kind: ClassVar[EntryKind] = "federation_created"
    _keys: ClassVar[frozenset[str]] = frozenset(
        {"spec_digest", "population", "members", "strategy", "initial_model", "quorum", "keys"}
    )
    spec_digest: str
    population: int
    members: tuple[MemberKey, ...]
    strategy: str
    initial_model: str
    quorum: tuple[int, int] = (2, 3)
    keys: KeyOrigin = "provisioned"

    def __post_init__(self) -> None:
        as_digest(self.spec_digest, "spec_digest")
        as_int(self.population, "population")
        object.__setattr__(self, "members", tuple(self.members))
        as_name(self.strategy, "strategy")
        as_digest(self.initial_model, "initial_model")
        num = as_int(self.quorum[0], "quorum[0]")
        den = as_int(self.quorum[1], "quorum[1]", minimum=1)
        if not num < den:
            raise field_error("quorum", f"{self.quorum!r} is not a fraction numerator/denominator with 0 <= n < d")
        as_literal(self.keys, "keys", get_args(KeyOrigin))
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise field_error("members", "a member is listed twice")

    def to_json(self) -> dict[str, Any]:
        return {
            "spec_digest": self.spec_digest,
            "population": self.population,
            "members": [{"name": m.name, "key": {"$b": m.key.hex()}} for m in self.members],
            "strategy": self.strategy,
            "initial_model": self.initial_model,
            "quorum": [self.quorum[0], self.quorum[1]],
            "keys": self.keys,
        }

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> FederationCreated:
        check_keys(data, "body", cls._keys)
        members = []
        for i, item in enumerate(as_list(data["members"], "members")):
            item = as_object(item, f"members[{i}]")
            check_keys(item, f"members[{i}]", frozenset({"name", "key"}))
            members.append(MemberKey(item["name"], item["key"]))
        quorum = as_list(data["quorum"], "quorum")
        if len(quorum) != 2:
            raise field_error("quorum", "expected [numerator, denominator]")
        fields = dict(data)
        fields["members"] = tuple(members)
        fields["quorum"] = (quorum[0], quorum[1])
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class MemberAdmitted(BodyBase):
    """A member joins (or is registered late) with its public key."""

    kind: ClassVar[EntryKind] = "member_admitted"
    _keys: ClassVar[frozenset[str]] = frozenset({"member", "key", "reason"})
    member: str
    key: bytes
    reason: str = ""

    def __post_init__(self) -> None:
        as_name(self.member, "member")
        object.__setattr__(self, "key", as_key(self.key, "key"))
        as_text(self.reason, "reason")

    def to_json(self) -> dict[str, Any]:
        return {"member": self.member, "key": {"$b": self.key.hex()}, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class MemberRemoved(BodyBase):
    """A member leaves or is expelled; its later entries are refused."""

    kind: ClassVar[EntryKind] = "member_removed"
    _keys: ClassVar[frozenset[str]] = frozenset({"member", "reason"})
    member: str
    reason: str

    def __post_init__(self) -> None:
        as_name(self.member, "member")
        as_text(self.reason, "reason")

    def to_json(self) -> dict[str, Any]:
        return {"member": self.member, "reason": self.reason}
