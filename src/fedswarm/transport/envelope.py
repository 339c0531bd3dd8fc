"""Signed envelopes: every request that carries a decision is bound to a federation, round, sender and nonce.

An :class:`~fedswarm.transport._generated.fedswarm.v1.federation_pb2.Envelope` wraps a serialized body
message. Its signature is Ed25519 over ``CONTEXT`` followed by the canonical encoding
(:mod:`fedswarm.codec.canonical`) of the object ``{"body", "federation_id", "kind", "nonce", "protocol",
"round", "sender", "timestamp_ms"}``: the body is signed as the exact bytes that travel, so protobuf's
non-canonical serialization does not matter.

:class:`EnvelopeVerifier` checks, in this order, and raises :class:`MessageRefused` naming the reason:

1. ``unsigned``: no signature; ``malformed``: wrong protocol version, empty nonce or kind;
2. ``wrong-federation``: the federation id is not ours;
3. ``wrong-sender``: the sender is not a current member, or is not the TLS peer that sent it;
4. ``bad-signature``: the signature does not verify under the sender's manifest key (tampered);
5. ``stale``: the timestamp is outside ``max_skew`` of our clock;
6. ``replayed``: the nonce was already seen from this sender within the replay window;
7. ``wrong-round``: the caller's round check says so.

The nonce is recorded only after the signature verified, so forged messages cannot fill the cache.
Records relayed from a third party (a leader's commit handed on by a peer during catch-up) are checked
with :meth:`EnvelopeVerifier.verify_record`: signature, federation and sender only, since they are old.

A node also receives envelopes it sealed itself (a coordinator's calls to its own member role go through
the loopback client). Re-checking its own signature in the same process proves nothing, so a verifier
may be given ``vouched``: a test that the envelope is byte for byte one this process sealed (its
signature and a SHA-256 of its signed bytes, as :class:`SealedHere` remembers them); for those the
Ed25519 check is skipped, every other check still applies.
"""

from __future__ import annotations

import collections
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring as _string
from typing import Literal, TypeVar

from google.protobuf.message import DecodeError, Message

from fedswarm.codec import canonical
from fedswarm.core.errors import VerificationError
from fedswarm.crypto.signing import SigningKey, VerifyKey
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.nonces import NonceCache

__all__ = [
    "CONTEXT",
    "PROTOCOL",
    "EnvelopeVerifier",
    "MessageRefused",
    "RefusalReason",
    "SealedHere",
    "Verified",
    "canonical_signed_bytes",
    "open_body",
    "seal",
    "signed_bytes",
]

PROTOCOL = 1
CONTEXT = b"fedswarm.envelope.v1\x00"
NONCE_BYTES = 16

RefusalReason = Literal[
    "unsigned",
    "malformed",
    "wrong-federation",
    "wrong-sender",
    "bad-signature",
    "stale",
    "replayed",
    "wrong-round",
    "oversized",
    "digest-mismatch",
    "unexpected",
    "unauthenticated",
]

M = TypeVar("M", bound=Message)


class MessageRefused(VerificationError):
    """A message was refused; ``reason`` is the machine-readable kind, the message says the rest."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: RefusalReason = reason
        self.detail = message


def signed_bytes(envelope: pb.Envelope) -> bytes:
    """The bytes the envelope's signature covers.

    ``CONTEXT`` followed by :func:`fedswarm.codec.canonical.encode` of the envelope's fields 1-8 as an
    object. Every envelope sent or received goes through here, so the encoding of this one fixed shape is
    written out (keys in their sorted order, bytes as ``{"$b": hex}``, strings with JSON escapes for
    control characters only); a test checks it against the general encoder.
    """
    text = "".join(
        (
            '{"body":{"$b":"',
            envelope.body.hex(),
            '"},"federation_id":',
            _string(envelope.federation_id),
            ',"kind":',
            _string(envelope.kind),
            ',"nonce":{"$b":"',
            envelope.nonce.hex(),
            '"},"protocol":',
            str(envelope.protocol),
            ',"round":',
            str(envelope.round),
            ',"sender":',
            _string(envelope.sender),
            ',"timestamp_ms":',
            str(envelope.timestamp_ms),
            "}",
        )
    )
    return CONTEXT + text.encode("utf-8")


def canonical_signed_bytes(envelope: pb.Envelope) -> bytes:
    """:func:`signed_bytes` through the general canonical encoder (the reference it must equal)."""
    return CONTEXT + canonical.encode(
        {
            "body": envelope.body,
            "federation_id": envelope.federation_id,
            "kind": envelope.kind,
            "nonce": envelope.nonce,
            "protocol": envelope.protocol,
            "round": envelope.round,
            "sender": envelope.sender,
            "timestamp_ms": envelope.timestamp_ms,
        }
    )


def seal(
    body: Message,
    *,
    key: SigningKey,
    sender: str,
    federation_id: str,
    round: int,
    now_ms: int | None = None,
    nonce: bytes | None = None,
) -> pb.Envelope:
    """Wrap ``body`` in an envelope signed by ``key``.

    Parameters
    ----------
    body
        Any message of the ``fedswarm.v1`` package.
    key
        The sender's Ed25519 signing key.
    sender, federation_id, round
        What the envelope is bound to.
    now_ms, nonce
        Timestamp and nonce (defaults: the current time and 16 fresh random bytes).
    """
    envelope = pb.Envelope(
        protocol=PROTOCOL,
        federation_id=federation_id,
        round=round,
        sender=sender,
        nonce=nonce if nonce is not None else secrets.token_bytes(NONCE_BYTES),
        timestamp_ms=int(time.time() * 1000) if now_ms is None else now_ms,
        kind=body.DESCRIPTOR.full_name,
        body=body.SerializeToString(),
    )
    envelope.signature = key.sign(signed_bytes(envelope))
    return envelope


def open_body(envelope: pb.Envelope, cls: type[M]) -> M:
    """Parse the body of an envelope as ``cls``, refusing another kind of message.

    Raises
    ------
    MessageRefused
        ``malformed``: the envelope announces another kind, or the body does not parse.
    """
    expected = cls.DESCRIPTOR.full_name
    if envelope.kind != expected:
        raise MessageRefused("malformed", f"expected a {expected} body, the envelope carries {envelope.kind!r}")
    body = cls()
    try:
        body.ParseFromString(envelope.body)
    except DecodeError as exc:
        raise MessageRefused("malformed", f"{expected} body does not parse: {exc}") from None
    return body


@dataclass(frozen=True, slots=True)
class Verified:
    """An envelope that passed every check."""

    sender: str
    round: int
    kind: str
    timestamp_ms: int
    envelope: pb.Envelope


RoundCheck = Callable[[int], str | None]


class EnvelopeVerifier:
    """Checks envelopes addressed to one node.

    Parameters
    ----------
    federation_id
        The manifest's federation id.
    keys
        Returns the Ed25519 key of a current member, or ``None`` for anyone else (revoked, unknown);
        called on every message so a reloaded manifest takes effect at once.
    max_skew
        Largest accepted difference between the sender's timestamp and our clock, in seconds; nonces are
        remembered for twice as long, after which the timestamp check alone refuses a replay.
    clock
        Seconds since the epoch (tests pass a fake clock).
    vouched
        ``True`` for an envelope this process sealed itself, byte for byte (:meth:`SealedHere.vouches`):
        its signature is not checked again.
    """

    def __init__(
        self,
        federation_id: str,
        *,
        keys: Callable[[str], VerifyKey | None],
        max_skew: float = 300.0,
        clock: Callable[[], float] = time.time,
        vouched: Callable[[pb.Envelope], bool] | None = None,
    ) -> None:
        self.federation_id = federation_id
        self._keys = keys
        self.max_skew = float(max_skew)
        self._clock = clock
        self._vouched = vouched
        self._nonces = NonceCache(window=2 * self.max_skew, clock=clock)

    def verify_record(self, envelope: pb.Envelope) -> Verified:
        """Check an envelope's origin only (federation, sender, signature): for relayed, old records."""
        if not envelope.signature:
            raise MessageRefused("unsigned", f"{envelope.kind or 'message'} from {envelope.sender!r} has no signature")
        if envelope.protocol != PROTOCOL or not envelope.nonce or not envelope.kind:
            raise MessageRefused(
                "malformed", f"protocol {envelope.protocol} (expected {PROTOCOL}), nonce and kind are required"
            )
        if envelope.federation_id != self.federation_id:
            raise MessageRefused(
                "wrong-federation",
                f"{envelope.kind} from {envelope.sender!r} is for federation {envelope.federation_id!r}, "
                f"this is {self.federation_id!r}",
            )
        key = self._keys(envelope.sender)
        if key is None:
            raise MessageRefused("wrong-sender", f"{envelope.sender!r} is not a current member of the federation")
        try:
            if self._vouched is None or not self._vouched(envelope):
                key.verify(signed_bytes(envelope), envelope.signature)
        except VerificationError as exc:
            raise MessageRefused(
                "bad-signature", f"{envelope.kind} from {envelope.sender!r} (tampered or forged): {exc}"
            ) from None
        return Verified(envelope.sender, envelope.round, envelope.kind, envelope.timestamp_ms, envelope)

    def verify(self, envelope: pb.Envelope, *, peer: str | None, round_check: RoundCheck | None = None) -> Verified:
        """Check a fresh envelope received directly from ``peer`` (its TLS identity).

        Raises
        ------
        MessageRefused
            With the first reason that applies (see the module docstring).
        """
        if peer is not None and envelope.sender != peer:
            if not envelope.signature:
                raise MessageRefused("unsigned", f"{envelope.kind or 'message'} from {peer!r} has no signature")
            raise MessageRefused(
                "wrong-sender", f"envelope names sender {envelope.sender!r} but the TLS peer is {peer!r}"
            )
        verified = self.verify_record(envelope)
        now = self._clock()
        skew = envelope.timestamp_ms / 1000.0 - now
        if abs(skew) > self.max_skew:
            raise MessageRefused(
                "stale",
                f"{envelope.kind} from {envelope.sender!r} is timestamped {skew:+.0f} s from this node's clock "
                f"(limit ±{self.max_skew:g} s)",
            )
        if not self._nonces.add(envelope.sender, bytes(envelope.nonce), timestamp=envelope.timestamp_ms / 1000.0):
            raise MessageRefused(
                "replayed", f"{envelope.kind} from {envelope.sender!r} reuses nonce {bytes(envelope.nonce).hex()[:16]}"
            )
        if round_check is not None:
            problem = round_check(envelope.round)
            if problem is not None:
                raise MessageRefused("wrong-round", f"{envelope.kind} from {envelope.sender!r}: {problem}")
        return verified


class SealedHere:
    """Remembers the last ``capacity`` envelopes this process sealed: signature -> SHA-256 of the signed bytes."""

    def __init__(self, *, capacity: int = 1024) -> None:
        self._capacity = capacity
        self._seen: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def remember(self, envelope: pb.Envelope) -> pb.Envelope:
        """Note ``envelope`` (just sealed here); returns it."""
        digest = hashlib.sha256(signed_bytes(envelope)).digest()
        with self._lock:
            self._seen[bytes(envelope.signature)] = digest
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
        return envelope

    def vouches(self, envelope: pb.Envelope) -> bool:
        """Whether ``envelope`` is exactly one this process sealed (same signature over the same bytes)."""
        with self._lock:
            digest = self._seen.get(bytes(envelope.signature))
        return digest is not None and digest == hashlib.sha256(signed_bytes(envelope)).digest()
