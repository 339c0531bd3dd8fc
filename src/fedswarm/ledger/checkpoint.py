"""Signed tree heads (checkpoints), their cosignatures by members, and quorum finality.

A tree head states "the log of federation F had ``size`` entries with Merkle root ``root`` at ``time``";
its bytes are the canonical encoding (:mod:`fedswarm.codec.canonical`) of::

    {"federation": F, "root": <32 bytes>, "size": n, "time": <ms since the Unix epoch>,
     "type": "fedswarm/tree-head", "v": 1}

The log's operator (the coordinator or the round's leader) signs it; members that checked the head
against their own replica (a consistency proof from the last head they accepted, see
:mod:`fedswarm.ledger.replica`) cosign the same bytes. A checkpoint is *final* when strictly more than a
fraction (``quorum``, default 2/3) of the registered members cosigned it: then no party can later show a
different history of that size without a quorum having signed two conflicting heads. This is the
witness-cosigning idea of Syta et al., "Keeping Authorities 'Honest or Bust' with Decentralized Witness
Cosigning" (IEEE S&P 2016), applied to RFC 9162 signed tree heads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fedswarm.core.errors import FedswarmError, VerificationError
from fedswarm.crypto.signing import SigningKey, VerifyKey
from fedswarm.ledger.merkle import HASH_SIZE

__all__ = [
    "HEAD_TYPE",
    "Checkpoint",
    "Cosignature",
    "CosignedHead",
    "TreeHead",
    "cosign",
    "cosign_head",
    "cosign_many",
    "quorum_size",
    "sign_tree_head",
    "verify_cosignatures",
    "verify_final",
]

HEAD_TYPE = "fedswarm/tree-head"
_CHECKPOINT_TYPE = "fedswarm/checkpoint"
_COSIGNED_TYPE = "fedswarm/cosigned-head"
_VERSION = 1


_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")).encode


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$b": value.hex()}
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$b"), str):
            return bytes.fromhex(value["$b"])
        return {key: _revive(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_revive(item) for item in value]
    return value


def _encode(value: dict[str, Any]) -> bytes:
    """:func:`fedswarm.codec.canonical.encode` of an object of ASCII keys, strings, ints, bytes and lists of
    such objects, written by the C JSON encoder (the same bytes, several times faster)."""
    return _dumps(_jsonable(value)).encode("utf-8")


def _decode(data: bytes) -> Any:
    """Inverse of :func:`_encode`; refuses bytes that are not exactly what it writes.

    Raises
    ------
    ValueError
        Not JSON, or not in canonical form.
    """
    try:
        value = _revive(json.loads(data))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not canonical JSON: {exc}") from None
    if not isinstance(value, dict) or _encode(value) != data:
        raise ValueError("bytes are not in canonical form")
    return value


def _decode_object(data: bytes, kind: str, keys: frozenset[str]) -> dict[str, Any]:
    """Decode canonical bytes of an object of ``type`` ``kind`` with exactly ``keys``.

    Raises
    ------
    VerificationError
        If the bytes are not canonical, or not such an object.
    """
    try:
        value = _decode(bytes(data))
    except (ValueError, TypeError) as exc:
        raise VerificationError(f"{kind} does not parse: {exc}") from None
    if not isinstance(value, dict) or set(value) != keys | {"type", "v"}:
        raise VerificationError(f"{kind} does not parse: expected the fields {sorted(keys)}")
    if value["type"] != kind or value["v"] != _VERSION:
        raise VerificationError(f"{kind} does not parse: type {value['type']!r} v{value['v']!r} is not supported")
    return value


def _bytes_field(value: Any, kind: str, name: str) -> bytes:
    if not isinstance(value, bytes):
        raise VerificationError(f"{kind} does not parse: {name} is not bytes")
    return value


def _text_field(value: Any, kind: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise VerificationError(f"{kind} does not parse: {name} is not a non-empty string")
    return value


@dataclass(frozen=True, slots=True)
class TreeHead:
    """``size`` entries of ``federation`` hash to ``root``; ``time`` in milliseconds since the epoch."""

    federation: str
    size: int
    root: bytes
    time: int
    _bytes: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"tree head size {self.size!r} is not a non-negative int")
        if len(self.root) != HASH_SIZE:
            raise ValueError(f"tree head root is {len(self.root)} bytes, expected {HASH_SIZE}")
        object.__setattr__(self, "root", bytes(self.root))
        value = {"federation": self.federation, "root": self.root, "size": self.size, "time": self.time}
        object.__setattr__(self, "_bytes", _encode({**value, "type": HEAD_TYPE, "v": _VERSION}))

    def encode(self) -> bytes:
        """The canonical bytes that are signed (computed once, when the head is made)."""
        return self._bytes

    @classmethod
    def decode(cls, data: bytes) -> TreeHead:
        """Parse tree-head bytes.

        Raises
        ------
        VerificationError
            If they are not the canonical bytes of a tree head.
        """
        try:
            value = _revive(json.loads(data))
            if not isinstance(value, dict) or set(value) != {"federation", "root", "size", "time", "type", "v"}:
                raise ValueError("not a tree head object")
            if value["type"] != HEAD_TYPE or value["v"] != _VERSION:
                raise ValueError(f"type {value['type']!r} v{value['v']!r} is not a supported tree head")
            head = cls(value["federation"], value["size"], value["root"], value["time"])
            if not isinstance(head.federation, str) or not isinstance(head.time, int):
                raise ValueError("federation or time has the wrong type")
            if head.encode() != data:
                raise ValueError("bytes are not in canonical form")
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise VerificationError(f"tree head does not parse: {exc}") from None
        return head


@dataclass(frozen=True, slots=True)
class Cosignature:
    """``member``'s signature (with its public ``key``) over a tree head's bytes."""

    member: str
    key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head signed by ``signer`` and cosigned by members."""

    head: TreeHead
    signer: str
    key: bytes
    signature: bytes
    cosignatures: tuple[Cosignature, ...] = field(default=())

    def verify_signature(self, *, signer_key: bytes | None = None) -> None:
        """Check the signer's signature, and that the signer's key is ``signer_key`` when given.

        Raises
        ------
        VerificationError
            Naming the checkpoint's size and signer.
        """
        if signer_key is not None and bytes(signer_key) != self.key:
            raise VerificationError(
                f"checkpoint of size {self.head.size}: signed with a key that is not {self.signer}'s registered key"
            )
        try:
            VerifyKey.from_raw(self.key).verify(self.head.encode(), self.signature)
        except FedswarmError as exc:
            raise VerificationError(f"checkpoint of size {self.head.size} by {self.signer}: {exc}") from None

    def with_cosignatures(self, cosignatures: Sequence[Cosignature]) -> Checkpoint:
        """A copy with ``cosignatures`` added (one per member; later ones replace earlier ones)."""
        merged = {c.member: c for c in self.cosignatures}
        merged.update({c.member: c for c in cosignatures})
        return replace(self, cosignatures=tuple(merged[m] for m in sorted(merged)))

    def to_json(self) -> dict[str, Any]:
        """JSON form (hex for bytes) for files and the wire."""
        return {
            "federation": self.head.federation,
            "size": self.head.size,
            "root": self.head.root.hex(),
            "time": self.head.time,
            "signer": self.signer,
            "key": self.key.hex(),
            "signature": self.signature.hex(),
            "cosignatures": [
                {"member": c.member, "key": c.key.hex(), "signature": c.signature.hex()} for c in self.cosignatures
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Inverse of :meth:`to_json`.

        Raises
        ------
        VerificationError
            If a field is missing or malformed.
        """
        try:
            head = TreeHead(str(data["federation"]), int(data["size"]), bytes.fromhex(data["root"]), int(data["time"]))
            cosignatures = tuple(
                Cosignature(str(c["member"]), bytes.fromhex(c["key"]), bytes.fromhex(c["signature"]))
                for c in data.get("cosignatures", [])
            )
            return cls(
                head, str(data["signer"]), bytes.fromhex(data["key"]), bytes.fromhex(data["signature"]), cosignatures
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VerificationError(f"checkpoint JSON is malformed: {exc!r}") from None

    def encode(self) -> bytes:
        """Canonical bytes of the checkpoint with its cosignatures: how it travels between nodes.

        The tree head is embedded as its own signed bytes, so decoding gives back exactly what was signed.
        """
        return _encode(
            {
                "cosignatures": [
                    {"key": c.key, "member": c.member, "signature": c.signature} for c in self.cosignatures
                ],
                "head": self.head.encode(),
                "key": self.key,
                "signature": self.signature,
                "signer": self.signer,
                "type": _CHECKPOINT_TYPE,
                "v": _VERSION,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        """Parse :meth:`encode`'s bytes (signatures are *not* checked here).

        Raises
        ------
        VerificationError
            If the bytes are not a canonical checkpoint.
        """
        kind = _CHECKPOINT_TYPE
        value = _decode_object(data, kind, frozenset({"cosignatures", "head", "key", "signature", "signer"}))
        head = TreeHead.decode(_bytes_field(value["head"], kind, "head"))
        raw = value["cosignatures"]
        if not isinstance(raw, list):
            raise VerificationError(f"{kind} does not parse: cosignatures is not a list")
        cosignatures = []
        for item in raw:
            if not isinstance(item, dict) or set(item) != {"key", "member", "signature"}:
                raise VerificationError(f"{kind} does not parse: a cosignature is not {{key, member, signature}}")
            cosignatures.append(
                Cosignature(
                    _text_field(item["member"], kind, "cosignature member"),
                    _bytes_field(item["key"], kind, "cosignature key"),
                    _bytes_field(item["signature"], kind, "cosignature signature"),
                )
            )
        names = [c.member for c in cosignatures]
        if names != sorted(set(names)):
            raise VerificationError(f"{kind} does not parse: cosignatures are not one per member in name order")
        return cls(
            head,
            _text_field(value["signer"], kind, "signer"),
            _bytes_field(value["key"], kind, "key"),
            _bytes_field(value["signature"], kind, "signature"),
            tuple(cosignatures),
        )


@dataclass(frozen=True, slots=True)
class CosignedHead:
    """One member's cosignature together with the tree head it signed: what a member sends its leader.

    Members cosign the head of their own replica after appending a round's entries; a leader collects
    these from members' messages and, once a quorum cosigned the same head, has a final checkpoint.
    """

    head: TreeHead
    cosignature: Cosignature

    def encode(self) -> bytes:
        """Canonical bytes (the head embedded as its signed bytes)."""
        c = self.cosignature
        return _encode(
            {
                "head": self.head.encode(),
                "key": c.key,
                "member": c.member,
                "signature": c.signature,
                "type": _COSIGNED_TYPE,
                "v": _VERSION,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> CosignedHead:
        """Parse :meth:`encode`'s bytes (the signature is *not* checked here).

        Raises
        ------
        VerificationError
            If the bytes are not a canonical cosigned head.
        """
        kind = _COSIGNED_TYPE
        value = _decode_object(data, kind, frozenset({"head", "key", "member", "signature"}))
        head = TreeHead.decode(_bytes_field(value["head"], kind, "head"))
        cosignature = Cosignature(
            _text_field(value["member"], kind, "member"),
            _bytes_field(value["key"], kind, "key"),
            _bytes_field(value["signature"], kind, "signature"),
        )
        return cls(head, cosignature)

    def verify(self, registered_key: bytes) -> None:
        """Check that the cosignature is by ``registered_key`` and valid over the head.

        Raises
        ------
        VerificationError
            Naming the member and the head's size.
        """
        c = self.cosignature
        where = f"cosignature by {c.member} of the head of size {self.head.size}"
        if bytes(registered_key) != c.key:
            raise VerificationError(f"{where}: the key is not the member's registered key")
        try:
            VerifyKey.from_raw(c.key).verify(self.head.encode(), c.signature)
        except FedswarmError as exc:
            raise VerificationError(f"{where}: {exc}") from None


def cosign_head(head: TreeHead, *, member: str, key: SigningKey) -> CosignedHead:
    """``member``'s cosignature of ``head`` (its own replica's head), ready to send."""
    return CosignedHead(head, Cosignature(member, key.public_key().raw, key.sign(head.encode())))


def sign_tree_head(head: TreeHead, *, signer: str, key: SigningKey) -> Checkpoint:
    """Sign ``head`` as ``signer``."""
    return Checkpoint(head, signer, key.public_key().raw, key.sign(head.encode()))


def cosign(checkpoint: Checkpoint, *, member: str, key: SigningKey) -> Cosignature:
    """``member``'s cosignature of the checkpoint's tree head."""
    return Cosignature(member, key.public_key().raw, key.sign(checkpoint.head.encode()))


def cosign_many(checkpoint: Checkpoint, signers: Iterable[tuple[str, SigningKey]]) -> list[Cosignature]:
    """Cosignatures of the checkpoint's tree head by several ``(member, key)`` (the head is encoded once)."""
    message = checkpoint.head.encode()
    return [Cosignature(member, key.public_key().raw, key.sign(message)) for member, key in signers]


def quorum_size(members: int, *, quorum: tuple[int, int] = (2, 3)) -> int:
    """Smallest number of cosigners that is strictly more than ``quorum`` of ``members`` (at least 1)."""
    numerator, denominator = quorum
    return max(1, members * numerator // denominator + 1)


def verify_cosignatures(checkpoint: Checkpoint, registry: Mapping[str, bytes]) -> frozenset[str]:
    """Check every cosignature against the registered keys; return the names of the valid cosigners.

    Raises
    ------
    VerificationError
        If a cosigner is not registered, uses another key than its registered one, or its signature does
        not verify. A bad cosignature is an error, never silently skipped.
    """
    message = checkpoint.head.encode()
    names: set[str] = set()
    for cosignature in checkpoint.cosignatures:
        registered = registry.get(cosignature.member)
        where = f"checkpoint of size {checkpoint.head.size}: cosignature by {cosignature.member}"
        if registered is None:
            raise VerificationError(f"{where}: not a registered member at that size")
        if bytes(registered) != cosignature.key:
            raise VerificationError(f"{where}: the key is not the member's registered key")
        try:
            VerifyKey.from_raw(cosignature.key).verify(message, cosignature.signature)
        except FedswarmError as exc:
            raise VerificationError(f"{where}: {exc}") from None
        names.add(cosignature.member)
    return frozenset(names)


def verify_final(checkpoint: Checkpoint, registry: Mapping[str, bytes], *, quorum: tuple[int, int] = (2, 3)) -> None:
    """Check that strictly more than ``quorum`` of the ``registry``'s members validly cosigned.

    Raises
    ------
    VerificationError
        If a cosignature is bad or there are too few.
    """
    cosigners = verify_cosignatures(checkpoint, registry)
    need = quorum_size(len(registry), quorum=quorum)
    if len(cosigners) < need:
        raise VerificationError(
            f"checkpoint of size {checkpoint.head.size} is not final: {len(cosigners)} of {len(registry)} members "
            f"cosigned, more than {quorum[0]}/{quorum[1]} ({need}) are needed"
        )
