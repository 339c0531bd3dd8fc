"""X25519 key agreement (RFC 7748, Langley, Hamburg and Turner, 2016).

Keys travel as raw 32-byte strings: a private scalar (as generated, before clamping) and a public
u-coordinate. :func:`x25519_shared` refuses the all-zero shared secret that a low-order peer key produces
(RFC 7748, section 6.1) by raising :class:`~fedswarm.core.errors.VerificationError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from fedswarm.core.errors import ParameterError, VerificationError

__all__ = [
    "X25519_KEY_BYTES",
    "X25519KeyPair",
    "generate_x25519",
    "x25519_public",
    "x25519_shared",
    "x25519_shared_many",
]

X25519_KEY_BYTES = 32


@dataclass(frozen=True, repr=False)
class X25519KeyPair:
    """An X25519 key pair as raw bytes. ``repr`` never shows the private key."""

    private: bytes
    public: bytes

    def __repr__(self) -> str:
        return f"X25519KeyPair(public={self.public.hex()})"


def _check_length(value: bytes, name: str) -> None:
    if len(value) != X25519_KEY_BYTES:
        raise ParameterError(f"{name}: expected {X25519_KEY_BYTES} bytes, got {len(value)}")


def generate_x25519() -> X25519KeyPair:
    """Generate a fresh X25519 key pair from the operating system's CSPRNG."""
    key = X25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return X25519KeyPair(private=private, public=public)


def x25519_public(private: bytes) -> bytes:
    """Return the raw public key of a raw 32-byte private key."""
    _check_length(private, "x25519 private key")
    key = X25519PrivateKey.from_private_bytes(bytes(private))
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519_shared(private: bytes, peer_public: bytes) -> bytes:
    """Compute the raw X25519 shared secret of ``private`` with ``peer_public``.

    The output is not a key: derive keys from it with :func:`fedswarm.crypto.kdf.hkdf_sha256`.

    Raises
    ------
    VerificationError
        If the peer key is a low-order point, so that the shared secret is all zeros.
    """
    return x25519_shared_many(private, [peer_public])[0]


def x25519_shared_many(private: bytes, peer_publics: Sequence[bytes]) -> list[bytes]:
    """:func:`x25519_shared` of one private key with each of several peers (loads the key once)."""
    _check_length(private, "x25519 private key")
    key = X25519PrivateKey.from_private_bytes(bytes(private))
    out = []
    for peer_public in peer_publics:
        _check_length(peer_public, "x25519 peer public key")
        try:
            out.append(key.exchange(X25519PublicKey.from_public_bytes(bytes(peer_public))))
        except ValueError as exc:
            raise VerificationError(
                f"x25519 peer public key {bytes(peer_public).hex()} gives the all-zero shared secret (low order)"
            ) from exc
    return out
