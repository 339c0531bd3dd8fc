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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from fedswarm.codec import canonical
from fedswarm.core.errors import FedswarmError, VerificationError
from fedswarm.crypto.signing import SigningKey, VerifyKey
from fedswarm.ledger.merkle import HASH_SIZE

__all__ = [
    "HEAD_TYPE",
    "Checkpoint",
    "Cosignature",
    "TreeHead",
    "cosign",
    "cosign_many",
    "quorum_size",
    "sign_tree_head",
    "verify_cosignatures",
    "verify_final",
]

HEAD_TYPE = "fedswarm/tree-head"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class TreeHead:
    """``size`` entries of ``federation`` hash to ``root``; ``time`` in milliseconds since the epoch."""

    federation: str
    size: int
    root: bytes
    time: int

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise ValueError(f"tree head size {self.size!r} is not a non-negative int")
        if len(self.root) != HASH_SIZE:
            raise ValueError(f"tree head root is {len(self.root)} bytes, expected {HASH_SIZE}")
        object.__setattr__(self, "root", bytes(self.root))

    def encode(self) -> bytes:
        """The canonical bytes that are signed."""
        return canonical.encode(
            {
                "federation": self.federation,
                "root": self.root,
                "size": self.size,
                "time": self.time,
                "type": HEAD_TYPE,
                "v": _VERSION,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> TreeHead:
        """Parse tree-head bytes.

        Raises
        ------
        VerificationError
            If they are not the canonical bytes of a tree head.
        """
        try:
            value = canonical.decode(data)
            if not isinstance(value, dict) or set(value) != {"federation", "root", "size", "time", "type", "v"}:
                raise ValueError("not a tree head object")
            if value["type"] != HEAD_TYPE or value["v"] != _VERSION:
                raise ValueError(f"type {value['type']!r} v{value['v']!r} is not a supported tree head")
            head = cls(value["federation"], value["size"], value["root"], value["time"])
            if not isinstance(head.federation, str) or not isinstance(head.time, int):
                raise ValueError("federation or time has the wrong type")
        except (ValueError, TypeError) as exc:
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
