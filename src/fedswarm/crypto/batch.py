"""Check many Ed25519 signatures in one call (RFC 8032, Josefsson and Liusvaara, 2017), strictly.

:func:`verify_signatures` checks a sequence of ``(public key, message, signature)`` triples, each on its
own, exactly as :meth:`fedswarm.crypto.signing.VerifyKey.verify` would, but without a Python object per
key and per call: each distinct public key is checked once (:func:`fedswarm.crypto.signing.check_public_key`)
and the loop calls libsodium directly. It is what a verifier of a long signed log runs over each chunk of
records.

The rules are libsodium's strict ones, the same as :class:`~fedswarm.crypto.signing.VerifyKey`'s (see
:mod:`fedswarm.crypto.signing` and Chalkias, Garillot and Nikolaenko, "Taming the many EdDSAs", 2020): a key
must be a canonical encoding of a point of prime order, ``S`` must be reduced and ``R`` must not be of
small order. A key of small order, under which a forged signature verifies for every message in OpenSSL,
is refused before any of its signatures is looked at.

This is *not* batch verification in the sense of Bernstein et al., "High-speed high-security signatures"
(2012): equations that combine signatures accept some signatures that single verification refuses
(small-order components), so a log checked that way could pass here and fail at a replica. Every signature
is verified individually.

Like every check in :mod:`fedswarm.crypto`, it returns ``None`` or raises; the error names the position
of the first signature that does not verify.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.files import KeyMaterialError
from fedswarm.crypto.signing import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, check_public_key

__all__ = ["BatchVerificationError", "verify_signatures"]

SignedItem = tuple[bytes, bytes, bytes]
"""``(32-byte Ed25519 public key, message, 64-byte signature)``."""


class BatchVerificationError(VerificationError):
    """A signature of a batch does not verify; ``index`` is its position in the batch."""

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(message)
        self.index = index


def verify_signatures(items: Sequence[SignedItem]) -> None:
    """Check every ``(public key, message, signature)`` in ``items``, in order.

    Parameters
    ----------
    items
        Raw 32-byte public keys, messages and 64-byte signatures.

    Raises
    ------
    BatchVerificationError
        At the first item whose key is malformed or refused (wrong length, not a canonical encoding of a
        point of prime order), whose signature has the wrong length or does not verify; ``index`` is its
        position and the message says why.
    """
    checked: set[bytes] = set()
    index = 0
    try:
        for index, (public, message, signature) in enumerate(items):
            if public not in checked:
                if len(public) != PUBLIC_KEY_SIZE:
                    raise BatchVerificationError(
                        f"Ed25519 public key must be {PUBLIC_KEY_SIZE} bytes, got {len(public)}", index=index
                    )
                try:
                    check_public_key(public, source=f"Ed25519 public key of signature {index}")
                except KeyMaterialError as exc:
                    raise BatchVerificationError(str(exc), index=index) from None
                checked.add(public)
            if len(signature) != SIGNATURE_SIZE:
                raise BatchVerificationError(
                    f"Ed25519 signature must be {SIGNATURE_SIZE} bytes, got {len(signature)}", index=index
                )
            crypto_sign_open(b"".join((signature, message)), public)
    except BadSignatureError:
        raise BatchVerificationError(
            f"Ed25519 signature does not verify under key {_fingerprint(items[index][0])}", index=index
        ) from None


def _fingerprint(public: bytes) -> str:
    """First 16 hex digits of SHA-256 of the key, as :attr:`VerifyKey.fingerprint` shows them."""
    return hashlib.sha256(public).hexdigest()[:16]
