"""Typed ledger entries, their canonical bytes and their signatures.

An entry is an envelope (federation id, sequence number, author, author's Ed25519 public key, kind) around
a typed body. Its bytes are the canonical encoding of :mod:`fedswarm.codec.canonical` of::

    {"author": ..., "body": {...}, "federation": ..., "key": {"$b": "<hex>"}, "kind": ..., "seq": ..., "v": 1}

A *record* is those bytes followed by the author's 64-byte Ed25519 signature over them. The record is what
the store keeps and what the Merkle tree hashes (``leaf_hash(record)``), so the log commits to the
signatures too, and the signed bytes are exactly ``record[:-64]``.

Encoding and decoding use the C JSON codec with sorted keys and no whitespace, which produces the same
bytes as :func:`fedswarm.codec.canonical.encode` for the values entries hold (tests check it on every
kind); decoding re-encodes the typed entry and refuses bytes that differ, so only canonical bytes parse.

This module holds the envelope (:class:`Entry`, :class:`SignedEntry`, :func:`sign_entry`) and the set of
body types (:data:`Body`, :func:`body_class`); it is where other code imports entry types from. The bodies
are defined in :mod:`fedswarm.ledger.member_bodies` and :mod:`fedswarm.ledger.round_bodies`, the field
checks and :class:`EntryError` in :mod:`fedswarm.ledger.entry_base`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeAlias

from fedswarm.crypto.signing import SIGNATURE_SIZE, SigningKey
from fedswarm.ledger.entry_base import (
    EntryError,
    EntryKind,
    FastPickle,
    as_int,
    as_key,
    as_name,
    as_object,
    as_text,
    check_keys,
    field_error,
)
from fedswarm.ledger.member_bodies import FederationCreated, MemberAdmitted, MemberKey, MemberRemoved
from fedswarm.ledger.round_bodies import (
    AggregateCommitted,
    AnomalyFlagged,
    EvaluationReported,
    Metrics,
    PrivacySpent,
    RoundOpened,
    UpdateSubmitted,
)

__all__ = [
    "FORMAT_VERSION",
    "AggregateCommitted",
    "AnomalyFlagged",
    "Body",
    "Entry",
    "EntryError",
    "EvaluationReported",
    "FederationCreated",
    "MemberAdmitted",
    "MemberKey",
    "MemberRemoved",
    "Metrics",
    "PrivacySpent",
    "RoundOpened",
    "SignedEntry",
    "UpdateSubmitted",
    "body_class",
    "sign_entry",
]

FORMAT_VERSION = 1
"""Version of the entry envelope (the ``"v"`` field)."""

_ENVELOPE_KEYS = frozenset({"author", "body", "federation", "key", "kind", "seq", "v"})


Body: TypeAlias = (
    FederationCreated
    | MemberAdmitted
    | MemberRemoved
    | RoundOpened
    | UpdateSubmitted
    | AggregateCommitted
    | EvaluationReported
    | PrivacySpent
    | AnomalyFlagged
)

_BODIES: dict[str, type[Body]] = {
    cls.kind: cls
    for cls in (
        FederationCreated,
        MemberAdmitted,
        MemberRemoved,
        RoundOpened,
        UpdateSubmitted,
        AggregateCommitted,
        EvaluationReported,
        PrivacySpent,
        AnomalyFlagged,
    )
}


def body_class(kind: str) -> type[Body]:
    """The body dataclass of an entry kind.

    Raises
    ------
    EntryError
        If ``kind`` is not one of :data:`~fedswarm.ledger.entry_base.EntryKind`.
    """
    try:
        return _BODIES[kind]
    except KeyError:
        raise field_error("kind", f"{kind!r} is not one of {sorted(_BODIES)}") from None


# --------------------------------------------------------------------------------------------------
# envelope
# --------------------------------------------------------------------------------------------------

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class Entry(FastPickle):
    """One log entry: who (``author`` with public ``key``) said what (``body``) as entry ``seq``."""

    federation: str
    seq: int
    author: str
    key: bytes
    body: Body

    def __post_init__(self) -> None:
        as_name(self.federation, "federation")
        as_int(self.seq, "seq")
        as_name(self.author, "author")
        object.__setattr__(self, "key", as_key(self.key, "key"))
        if type(self.body) not in _BODIES.values():
            raise field_error("body", f"{type(self.body).__name__} is not an entry body")

    @property
    def kind(self) -> EntryKind:
        """The body's kind."""
        return self.body.kind

    @property
    def round(self) -> int | None:
        """The round the entry belongs to, when its body names one."""
        value = getattr(self.body, "round", None)
        return value if isinstance(value, int) else None

    def to_json(self) -> dict[str, Any]:
        """The envelope as JSON-ready values."""
        return {
            "author": self.author,
            "body": self.body.to_json(),
            "federation": self.federation,
            "key": {"$b": self.key.hex()},
            "kind": self.body.kind,
            "seq": self.seq,
            "v": FORMAT_VERSION,
        }

    def encode(self) -> bytes:
        """The canonical bytes (those that are signed)."""
        return _dumps(self.to_json()).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        """Parse canonical entry bytes.

        Raises
        ------
        EntryError
            Not JSON, not an entry, a field missing, extra or mistyped, or bytes that are not the canonical
            encoding of the entry they describe.
        """
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EntryError(f"not canonical JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise EntryError("not an entry: expected a JSON object")
        check_keys(raw, "entry", _ENVELOPE_KEYS)
        if raw["v"] != FORMAT_VERSION or isinstance(raw["v"], bool):
            raise field_error("v", f"unsupported entry format {raw['v']!r}, expected {FORMAT_VERSION}")
        body = body_class(as_text(raw["kind"], "kind")).parse(as_object(raw["body"], "body"))
        entry = cls(federation=raw["federation"], seq=raw["seq"], author=raw["author"], key=raw["key"], body=body)
        if entry.encode() != data:
            raise EntryError("bytes are not in canonical form")
        return entry


@dataclass(frozen=True, slots=True)
class SignedEntry:
    """An entry with its author's signature; :attr:`record` is what is stored and hashed into the tree."""

    entry: Entry
    signature: bytes
    record: bytes

    @classmethod
    def from_record(cls, record: bytes) -> SignedEntry:
        """Split a stored record into entry and signature (the signature is *not* checked here).

        Raises
        ------
        EntryError
            If the record is too short or its entry bytes do not parse.
        """
        record = bytes(record)
        if len(record) <= SIGNATURE_SIZE:
            raise EntryError(f"record of {len(record)} bytes is too short to hold an entry and a signature")
        return cls(Entry.decode(record[:-SIGNATURE_SIZE]), record[-SIGNATURE_SIZE:], record)

    @property
    def message(self) -> bytes:
        """The signed bytes: the record without its signature."""
        return self.record[:-SIGNATURE_SIZE]


def sign_entry(entry: Entry, key: SigningKey) -> SignedEntry:
    """Sign ``entry`` with its author's key.

    Raises
    ------
    EntryError
        If ``key`` is not the key named in the entry.
    """
    if key.public_key().raw != entry.key:
        raise EntryError(f"entry {entry.seq}: the signing key does not match the entry's key for {entry.author}")
    message = entry.encode()
    signature = key.sign(message)
    return SignedEntry(entry, signature, message + signature)
