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
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias, get_args

from fedswarm.crypto.signing import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, SigningKey

__all__ = [
    "FORMAT_VERSION",
    "AggregateCommitted",
    "AnomalyAction",
    "AnomalyFlagged",
    "Body",
    "Entry",
    "EntryError",
    "EntryKind",
    "EvaluationReported",
    "EvaluationScope",
    "FederationCreated",
    "KeyOrigin",
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

EntryKind: TypeAlias = Literal[
    "federation_created",
    "member_admitted",
    "member_removed",
    "round_opened",
    "update_submitted",
    "aggregate_committed",
    "evaluation_reported",
    "privacy_spent",
    "anomaly_flagged",
]
KeyOrigin: TypeAlias = Literal["simulated", "provisioned"]
EvaluationScope: TypeAlias = Literal["central", "members"]
AnomalyAction: TypeAlias = Literal["flagged", "excluded", "downweighted"]
Metrics: TypeAlias = Mapping[str, float | None]

_DIGEST = re.compile(r"[0-9a-f]{64}\Z")
_ENVELOPE_KEYS = frozenset({"author", "body", "federation", "key", "kind", "seq", "v"})


class EntryError(ValueError):
    """Bytes or values that do not form a valid entry; the message names the field."""


# --------------------------------------------------------------------------------------------------
# field helpers: each returns the JSON-ready form when encoding and checks the type when decoding
# --------------------------------------------------------------------------------------------------


def _fail(path: str, message: str) -> EntryError:
    return EntryError(f"{path}: {message}")


def _text(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, f"expected a string, got {type(value).__name__}")
    return value


def _name(value: Any, path: str) -> str:
    text = _text(value, path)
    if not text or len(text) > 256 or not text.isprintable():
        raise _fail(path, f"{text[:40]!r} is not a printable name of 1 to 256 characters")
    return text


def _integer(value: Any, path: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected an int, got {type(value).__name__}")
    if value < minimum:
        raise _fail(path, f"{value} is below {minimum}")
    return int(value)


def _to_real(value: Any, path: str) -> float:
    """Accept any real number when building an entry (numpy scalars included), refuse non-finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(path, f"expected a number, got {type(value).__name__}") from None
    if not math.isfinite(number):
        raise _fail(path, f"{number!r} is not finite")
    return number + 0.0


def _digest(value: Any, path: str) -> str:
    text = _text(value, path)
    if not _DIGEST.match(text):
        raise _fail(path, f"{text[:80]!r} is not 64 lowercase hex digits")
    return text


def _key_bytes(value: Any, path: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, dict) and len(value) == 1 and isinstance(value.get("$b"), str):
        text = value["$b"]
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise _fail(path, "bytes are not hex") from None
        if data.hex() != text:
            raise _fail(path, "bytes are not lowercase hex")
    else:
        raise _fail(path, f"expected bytes, got {type(value).__name__}")
    if len(data) != PUBLIC_KEY_SIZE:
        raise _fail(path, f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(data)}")
    return data


def _literal(value: Any, path: str, allowed: tuple[str, ...]) -> str:
    text = _text(value, path)
    if text not in allowed:
        raise _fail(path, f"{text!r} is not one of {list(allowed)}")
    return text


def _sequence(value: Any, path: str) -> Sequence[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _fail(path, f"expected a list, got {type(value).__name__}")
    return value


def _names(value: Any, path: str) -> tuple[str, ...]:
    return tuple(_name(item, f"{path}[{i}]") for i, item in enumerate(_sequence(value, path)))


def _digests(value: Any, path: str) -> tuple[str, ...]:
    return tuple(_digest(item, f"{path}[{i}]") for i, item in enumerate(_sequence(value, path)))


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(path, f"expected an object, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str):
            raise _fail(path, f"object key {key!r} is not a string")
    if "$b" in value:
        raise _fail(path, "the key '$b' is reserved for bytes")
    return value


def _metrics_in(value: Any, path: str) -> dict[str, float | None]:
    """Metrics when building an entry: numbers, non-finite ones and ``None`` become ``None``."""
    out: dict[str, float | None] = {}
    for key, number in _object(value, path).items():
        if number is None:
            out[key] = None
            continue
        try:
            as_float = float(number)
        except (TypeError, ValueError):
            raise _fail(f"{path}.{key}", f"expected a number, got {type(number).__name__}") from None
        out[key] = as_float + 0.0 if math.isfinite(as_float) else None
    return dict(sorted(out.items()))


def _reasons(value: Any, path: str) -> dict[str, str]:
    return {_name(k, path): _text(v, f"{path}.{k}") for k, v in _object(value, path).items()}


def _fields(data: Mapping[str, Any], path: str, expected: frozenset[str]) -> None:
    keys = set(data)
    if keys != expected:
        missing, extra = sorted(expected - keys), sorted(keys - expected)
        parts = [f"missing {missing}"] if missing else []
        parts += [f"unexpected {extra}"] if extra else []
        raise _fail(path, "; ".join(parts))


# --------------------------------------------------------------------------------------------------
# bodies
# --------------------------------------------------------------------------------------------------


def _rebuild(cls: type[Any], values: tuple[Any, ...]) -> Any:
    """Unpickle without re-validating: the pickling side built (and so validated) the object."""
    obj = object.__new__(cls)
    for name, value in zip(cls.__match_args__, values, strict=True):
        object.__setattr__(obj, name, value)
    return obj


class _FastPickle:
    """Pickle frozen dataclasses as ``(class, field values)``: about ten times faster than the default."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), tuple(getattr(self, name) for name in self.__match_args__))  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class MemberKey(_FastPickle):
    """A member's name and its 32-byte Ed25519 public key."""

    name: str
    key: bytes

    def __post_init__(self) -> None:
        _name(self.name, "member.name")
        object.__setattr__(self, "key", _key_bytes(self.key, f"member {self.name}.key"))


class _Body(_FastPickle):
    """Shared behaviour of entry bodies: JSON-ready form and strict parsing."""

    __slots__ = ()
    kind: ClassVar[EntryKind]
    _keys: ClassVar[frozenset[str]]

    def to_json(self) -> dict[str, Any]:
        """The body as JSON-ready values (bytes as ``{"$b": hex}``)."""
        raise NotImplementedError

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Body:
        """Build the body from decoded JSON, refusing missing, extra or mistyped fields.

        The constructor checks the values; whatever it converts (an int where a float belongs, say) makes
        the re-encoded bytes differ, which :meth:`Entry.decode` refuses.
        """
        _fields(data, "body", cls._keys)
        return cls(**data)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class FederationCreated(_Body):
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
        _digest(self.spec_digest, "spec_digest")
        _integer(self.population, "population")
        object.__setattr__(self, "members", tuple(self.members))
        _name(self.strategy, "strategy")
        _digest(self.initial_model, "initial_model")
        num = _integer(self.quorum[0], "quorum[0]")
        den = _integer(self.quorum[1], "quorum[1]", minimum=1)
        if not num < den:
            raise _fail("quorum", f"{self.quorum!r} is not a fraction numerator/denominator with 0 <= n < d")
        _literal(self.keys, "keys", get_args(KeyOrigin))
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise _fail("members", "a member is listed twice")

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
        _fields(data, "body", cls._keys)
        members = []
        for i, item in enumerate(_sequence(data["members"], "members")):
            item = _object(item, f"members[{i}]")
            _fields(item, f"members[{i}]", frozenset({"name", "key"}))
            members.append(MemberKey(item["name"], item["key"]))
        quorum = _sequence(data["quorum"], "quorum")
        if len(quorum) != 2:
            raise _fail("quorum", "expected [numerator, denominator]")
        fields = dict(data)
        fields["members"] = tuple(members)
        fields["quorum"] = (quorum[0], quorum[1])
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class MemberAdmitted(_Body):
    """A member joins (or is registered late) with its public key."""

    kind: ClassVar[EntryKind] = "member_admitted"
    _keys: ClassVar[frozenset[str]] = frozenset({"member", "key", "reason"})
    member: str
    key: bytes
    reason: str = ""

    def __post_init__(self) -> None:
        _name(self.member, "member")
        object.__setattr__(self, "key", _key_bytes(self.key, "key"))
        _text(self.reason, "reason")

    def to_json(self) -> dict[str, Any]:
        return {"member": self.member, "key": {"$b": self.key.hex()}, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class MemberRemoved(_Body):
    """A member leaves or is expelled; its later entries are refused."""

    kind: ClassVar[EntryKind] = "member_removed"
    _keys: ClassVar[frozenset[str]] = frozenset({"member", "reason"})
    member: str
    reason: str

    def __post_init__(self) -> None:
        _name(self.member, "member")
        _text(self.reason, "reason")

    def to_json(self) -> dict[str, Any]:
        return {"member": self.member, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class RoundOpened(_Body):
    """A round starts: its leader (the author), the selected members, the configuration and the base model."""

    kind: ClassVar[EntryKind] = "round_opened"
    _keys: ClassVar[frozenset[str]] = frozenset({"round", "leader", "selected", "config_digest", "base_model"})
    round: int
    leader: str
    selected: tuple[str, ...]
    config_digest: str
    base_model: str

    def __post_init__(self) -> None:
        _integer(self.round, "round", minimum=1)
        _name(self.leader, "leader")
        object.__setattr__(self, "selected", _names(self.selected, "selected"))
        _digest(self.config_digest, "config_digest")
        _digest(self.base_model, "base_model")

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "leader": self.leader,
            "selected": list(self.selected),
            "config_digest": self.config_digest,
            "base_model": self.base_model,
        }


@dataclass(frozen=True, slots=True)
class UpdateSubmitted(_Body):
    """A member's update for a round: its digest, examples, L2 norm and size (the author is the member)."""

    kind: ClassVar[EntryKind] = "update_submitted"
    _keys: ClassVar[frozenset[str]] = frozenset({"round", "update", "examples", "norm", "bytes"})
    round: int
    update: str
    examples: int
    norm: float
    bytes: int

    def __post_init__(self) -> None:
        _integer(self.round, "round", minimum=1)
        _digest(self.update, "update")
        _integer(self.examples, "examples")
        object.__setattr__(self, "norm", _to_real(self.norm, "norm"))
        _integer(self.bytes, "bytes")

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "update": self.update,
            "examples": self.examples,
            "norm": self.norm,
            "bytes": self.bytes,
        }


@dataclass(frozen=True, slots=True)
class AggregateCommitted(_Body):
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
        _integer(self.round, "round", minimum=1)
        _name(self.strategy, "strategy")
        _digest(self.base_model, "base_model")
        object.__setattr__(self, "inputs", _digests(self.inputs, "inputs"))
        object.__setattr__(self, "contributors", _names(self.contributors, "contributors"))
        object.__setattr__(
            self,
            "weights",
            tuple(_to_real(w, f"weights[{i}]") for i, w in enumerate(_sequence(self.weights, "weights"))),
        )
        if len(self.contributors) != len(self.weights) or len(self.inputs) not in (0, len(self.contributors)):
            raise _fail(
                "inputs",
                "contributors and weights must have the same length, and inputs the same length or none (secure sum)",
            )
        _digest(self.model, "model")
        object.__setattr__(self, "metrics", _metrics_in(self.metrics, "metrics"))
        object.__setattr__(self, "rejected", dict(sorted(_reasons(self.rejected, "rejected").items())))
        object.__setattr__(self, "dropouts", dict(sorted(_reasons(self.dropouts, "dropouts").items())))

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
class EvaluationReported(_Body):
    """Metrics of a model: on the held-out set (``central``) or summarized over members' test splits."""

    kind: ClassVar[EntryKind] = "evaluation_reported"
    _keys: ClassVar[frozenset[str]] = frozenset({"round", "model", "scope", "members", "metrics"})
    round: int
    model: str
    scope: EvaluationScope
    members: int
    metrics: Metrics

    def __post_init__(self) -> None:
        _integer(self.round, "round")
        _digest(self.model, "model")
        _literal(self.scope, "scope", get_args(EvaluationScope))
        _integer(self.members, "members")
        object.__setattr__(self, "metrics", _metrics_in(self.metrics, "metrics"))

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "model": self.model,
            "scope": self.scope,
            "members": self.members,
            "metrics": dict(self.metrics),
        }


@dataclass(frozen=True, slots=True)
class PrivacySpent(_Body):
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
        _integer(self.round, "round", minimum=1)
        object.__setattr__(self, "epsilon", _to_real(self.epsilon, "epsilon"))
        object.__setattr__(self, "delta", _to_real(self.delta, "delta"))
        if self.epsilon < 0 or not 0 <= self.delta < 1:
            raise _fail("epsilon", f"({self.epsilon}, {self.delta}) is not a valid (epsilon >= 0, 0 <= delta < 1)")
        _name(self.accountant, "accountant")
        if self.member is not None:
            _name(self.member, "member")

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "member": self.member,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
        }


@dataclass(frozen=True, slots=True)
class AnomalyFlagged(_Body):
    """A detector flagged a member's update in a round, with its scores and what was done about it."""

    kind: ClassVar[EntryKind] = "anomaly_flagged"
    _keys: ClassVar[frozenset[str]] = frozenset({"round", "member", "scores", "reason", "action"})
    round: int
    member: str
    scores: Metrics
    reason: str
    action: AnomalyAction = "flagged"

    def __post_init__(self) -> None:
        _integer(self.round, "round", minimum=1)
        _name(self.member, "member")
        object.__setattr__(self, "scores", _metrics_in(self.scores, "scores"))
        _text(self.reason, "reason")
        _literal(self.action, "action", get_args(AnomalyAction))

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "member": self.member,
            "scores": dict(self.scores),
            "reason": self.reason,
            "action": self.action,
        }


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
        If ``kind`` is not one of :data:`EntryKind`.
    """
    try:
        return _BODIES[kind]
    except KeyError:
        raise _fail("kind", f"{kind!r} is not one of {sorted(_BODIES)}") from None


# --------------------------------------------------------------------------------------------------
# envelope
# --------------------------------------------------------------------------------------------------

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class Entry(_FastPickle):
    """One log entry: who (``author`` with public ``key``) said what (``body``) as entry ``seq``."""

    federation: str
    seq: int
    author: str
    key: bytes
    body: Body

    def __post_init__(self) -> None:
        _name(self.federation, "federation")
        _integer(self.seq, "seq")
        _name(self.author, "author")
        object.__setattr__(self, "key", _key_bytes(self.key, "key"))
        if type(self.body) not in _BODIES.values():
            raise _fail("body", f"{type(self.body).__name__} is not an entry body")

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
        _fields(raw, "entry", _ENVELOPE_KEYS)
        if raw["v"] != FORMAT_VERSION or isinstance(raw["v"], bool):
            raise _fail("v", f"unsupported entry format {raw['v']!r}, expected {FORMAT_VERSION}")
        body = body_class(_text(raw["kind"], "kind")).parse(_object(raw["body"], "body"))
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
