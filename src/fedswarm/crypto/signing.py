"""Ed25519 message signatures (RFC 8032, Josefsson and Liusvaara, 2017).

Every member holds one :class:`SigningKey` and publishes its :class:`VerifyKey` (32 raw bytes, shown as
hex) in the federation manifest; updates, votes and ledger entries are signed with it. Ed25519 is
deterministic, so a signature is a pure function of key and message and the RFC 8032 section 7.1 test
vectors pin the implementation. TLS certificates use ECDSA P-256 instead (see :mod:`fedswarm.crypto.pki`).

:meth:`VerifyKey.verify` returns ``None`` or raises :class:`~fedswarm.core.errors.VerificationError`; there
is no boolean to forget to check.

Signing runs in libsodium (through PyNaCl) for messages up to :data:`SODIUM_SIGN_LIMIT` bytes and in
OpenSSL (through ``cryptography``) above it. Ed25519 signatures are deterministic, so both produce the same
64 bytes for the same key and message (the RFC 8032 vectors and a property test pin that); libsodium signs
short messages about 1.7 times faster on the machines measured (BENCHMARKS.md, ledger section), which is
what a ledger that signs every entry and cosigns every checkpoint spends most of its time on. libsodium's
one-shot call copies the message into its output, hence the limit: long messages take OpenSSL's
detached call. Verification always runs in OpenSSL, so every verifier in a federation applies the same
acceptance rules to edge-case encodings.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from nacl.bindings import crypto_sign

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.files import (
    KeyMaterialError,
    check_pem,
    parse_private_key,
    private_key_pem,
    read_material,
    write_private,
    write_public,
)

__all__ = ["PUBLIC_KEY_SIZE", "SIGNATURE_SIZE", "SODIUM_SIGN_LIMIT", "SigningKey", "VerifyKey"]

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
_SEED_SIZE = 32
SODIUM_SIGN_LIMIT = 64 * 1024
"""Longest message (bytes) signed by libsodium; longer ones are signed by OpenSSL (same signature)."""


class VerifyKey:
    """An Ed25519 public key: checks signatures made by the matching :class:`SigningKey`."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: ed25519.Ed25519PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_raw(cls, data: bytes) -> VerifyKey:
        """Build a key from its 32 raw bytes (RFC 8032 encoding).

        Raises
        ------
        KeyMaterialError
            ``data`` is not 32 bytes.
        """
        if len(data) != PUBLIC_KEY_SIZE:
            raise KeyMaterialError(
                "Ed25519 public key", "wrong format", f"expected {PUBLIC_KEY_SIZE} bytes, got {len(data)}"
            )
        return cls(ed25519.Ed25519PublicKey.from_public_bytes(bytes(data)))

    @classmethod
    def from_hex(cls, text: str) -> VerifyKey:
        """Build a key from the 64 hex digits of its raw bytes (as stored in manifests)."""
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise KeyMaterialError("Ed25519 public key", "wrong format", f"not hex: {text[:80]!r}") from None
        return cls.from_raw(data)

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "<Ed25519 public key>") -> VerifyKey:
        """Parse a SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``).

        Raises
        ------
        KeyMaterialError
            Not PEM, truncated, not decodable, or a public key of another algorithm (``wrong type``).
        """
        check_pem(data, labels=("PUBLIC KEY",), source=source)
        try:
            key = serialization.load_pem_public_key(data)
        except Exception:
            raise KeyMaterialError(source, "wrong format", "the PEM block does not decode to a key") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise KeyMaterialError(source, "wrong type", f"expected an Ed25519 key, got {_algorithm(key)}")
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> VerifyKey:
        """Read a PEM public key from ``path`` (errors name the file)."""
        return cls.from_pem(read_material(path), source=str(path))

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM encoding."""
        return self._key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def save(self, path: Path) -> None:
        """Write the PEM encoding to ``path`` atomically (mode ``0644``)."""
        write_public(path, self.to_pem())

    @property
    def raw(self) -> bytes:
        """The 32 raw bytes of the key."""
        return self._raw

    @property
    def hex(self) -> str:
        """The raw bytes as 64 lowercase hex digits."""
        return self._raw.hex()

    @property
    def fingerprint(self) -> str:
        """Lowercase hex SHA-256 of the raw key bytes."""
        return hashlib.sha256(self._raw).hexdigest()

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check that ``signature`` is this key's Ed25519 signature of ``message``.

        Raises
        ------
        VerificationError
            The signature has the wrong length or does not verify; the message names the key by
            the first 16 hex digits of its fingerprint.
        """
        if len(signature) != SIGNATURE_SIZE:
            raise VerificationError(
                f"Ed25519 signature must be {SIGNATURE_SIZE} bytes, got {len(signature)} (key {self.fingerprint[:16]})"
            )
        try:
            self._key.verify(bytes(signature), bytes(message))
        except InvalidSignature:
            raise VerificationError(f"Ed25519 signature does not verify under key {self.fingerprint[:16]}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"VerifyKey({self.hex})"


class SigningKey:
    """An Ed25519 private key. Its ``repr`` shows only the public half."""

    __slots__ = ("_key", "_public", "_sodium")

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        self._public = VerifyKey(key.public_key())
        # libsodium's 64-byte secret key: the RFC 8032 seed followed by the public key
        self._sodium = key.private_bytes_raw() + self._public.raw

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key from the operating system's random source."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """The key whose 32-byte RFC 8032 secret ("SECRET KEY" in the test vectors) is ``seed``."""
        if len(seed) != _SEED_SIZE:
            raise KeyMaterialError(
                "Ed25519 private key", "wrong format", f"expected a {_SEED_SIZE}-byte seed, got {len(seed)}"
            )
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @classmethod
    def from_pem(
        cls, data: bytes, *, password: bytes | None = None, source: str = "<Ed25519 private key>"
    ) -> SigningKey:
        """Parse a PKCS #8 PEM private key, decrypting it with ``password`` when it is encrypted.

        Raises
        ------
        KeyMaterialError
            Not PEM, truncated, wrong password, password required or unexpected, or a key of another
            algorithm (``wrong type``). The message names ``source``.
        """
        key = parse_private_key(data, password=password, source=source)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise KeyMaterialError(source, "wrong type", f"expected an Ed25519 key, got {_algorithm(key)}")
        return cls(key)

    @classmethod
    def load(cls, path: Path, *, password: bytes | None = None) -> SigningKey:
        """Read a PEM private key from ``path`` (errors name the file)."""
        return cls.from_pem(read_material(path), password=password, source=str(path))

    def to_pem(self, *, password: bytes | None = None) -> bytes:
        """PKCS #8 PEM encoding, encrypted with ``password`` when given."""
        return private_key_pem(self._key, password=password)

    def save(self, path: Path, *, password: bytes | None = None) -> None:
        """Write the PEM encoding to ``path`` atomically with mode ``0600``."""
        write_private(path, self.to_pem(password=password))

    def public_key(self) -> VerifyKey:
        """The matching public key."""
        return self._public

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        if len(message) <= SODIUM_SIGN_LIMIT:
            return crypto_sign(bytes(message), self._sodium)[:SIGNATURE_SIZE]
        return self._key.sign(bytes(message))

    def __repr__(self) -> str:
        return f"SigningKey(public={self._public.hex})"


def _algorithm(key: object) -> str:
    return type(key).__name__.removeprefix("_").replace("PrivateKey", "").replace("PublicKey", "") or "unknown"
