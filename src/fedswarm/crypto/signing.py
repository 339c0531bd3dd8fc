"""Ed25519 message signatures (RFC 8032, Josefsson and Liusvaara, 2017), verified strictly.

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
detached call.

Verification is strict and always runs in libsodium, following the rules that Chalkias, Garillot and
Nikolaenko, "Taming the many EdDSAs" (2020), and Brendel, Cremers, Jackson and Zhao, "The provable
security of Ed25519: theory and practice" (IEEE S&P 2021), show are needed for a signature to bind its
signer (strong unforgeability and non-repudiation):

* a public key must be the canonical encoding of a point of the prime-order subgroup
  (:func:`check_public_key`, libsodium's ``crypto_core_ed25519_is_valid_point``): small-order, mixed-order,
  non-canonical and off-curve encodings are refused when the key is built, with a :class:`WeakKeyError`;
* a signature's ``S`` must be reduced (``S < L``) and its ``R`` must not be a small-order point
  (libsodium's ``crypto_sign_open``).

OpenSSL, which ``cryptography`` uses, checks neither the key rule nor the order of ``R``: with the identity point as public key
(``01 00..00``), the 64 bytes ``01 00..00 || 00..00`` verify as a signature of *every* message. A member
registering such a key could deny anything signed in its name, and anyone could sign in its name. Honest
keys and signatures satisfy all the rules, so they verify exactly as under OpenSSL; libsodium also verifies
about 1.9 times as fast (median of both libraries alternating in one process, 256-byte messages, on a
loaded 2-core machine). Checking a key costs about one verification
(``is_valid_point`` multiplies by the group order); results are cached per key bytes
(:data:`_CHECKED_KEYS` entries), so a ledger's few member keys are checked once per process.
:func:`fedswarm.crypto.batch.verify_signatures` applies the same rules, so every verifier of a federation
accepts exactly the same signatures. PyNaCl exposes libsodium's verification only as the one-shot
``crypto_sign_open``, which takes ``signature || message`` and copies the message out: two copies of each
message, negligible next to the curve arithmetic for the short messages fedswarm signs.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from nacl.bindings import crypto_core_ed25519_is_valid_point, crypto_sign, crypto_sign_open
from nacl.exceptions import BadSignatureError

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

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "SODIUM_SIGN_LIMIT",
    "SigningKey",
    "VerifyKey",
    "WeakKeyError",
    "check_public_key",
]

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
_SEED_SIZE = 32
SODIUM_SIGN_LIMIT = 64 * 1024
"""Longest message (bytes) signed by libsodium; longer ones are signed by OpenSSL (same signature)."""
_CHECKED_KEYS = 4096
"""How many distinct public keys' validity :func:`check_public_key` remembers."""


class WeakKeyError(KeyMaterialError, VerificationError):
    """A 32-byte Ed25519 public key that is not a canonical encoding of a point of prime order.

    It is both a :class:`~fedswarm.crypto.files.KeyMaterialError` (``problem`` is ``"wrong format"``) and a
    :class:`~fedswarm.core.errors.VerificationError`, so code that checks a signature under a key it has
    just read refuses such a key the way it refuses a bad signature.
    """


def check_public_key(data: bytes, *, source: str = "Ed25519 public key") -> None:
    """Refuse ``data`` unless it is a canonical encoding of a point of the prime-order subgroup.

    Parameters
    ----------
    data
        The 32 raw bytes of an Ed25519 public key (RFC 8032 section 5.1.2).
    source
        Where the key comes from (a file, a manifest entry, ...), named in the error.

    Raises
    ------
    KeyMaterialError
        ``data`` is not 32 bytes.
    WeakKeyError
        ``data`` encodes a small-order point (under which a forged signature verifies for every message),
        a point with a small-order component, a point off the curve, or uses a non-canonical encoding.
    """
    if len(data) != PUBLIC_KEY_SIZE:
        raise KeyMaterialError(source, "wrong format", f"expected {PUBLIC_KEY_SIZE} bytes, got {len(data)}")
    if not _is_prime_order_point(bytes(data)):
        raise WeakKeyError(
            source,
            "wrong format",
            f"key {bytes(data).hex()} is not a canonical encoding of a point of prime order "
            "(small-order, mixed-order, non-canonical and off-curve keys are refused)",
        )


@functools.lru_cache(maxsize=_CHECKED_KEYS)
def _is_prime_order_point(data: bytes) -> bool:
    """libsodium's check: canonical, on the curve, in the prime-order subgroup, not of small order."""
    return bool(crypto_core_ed25519_is_valid_point(data))


class VerifyKey:
    """An Ed25519 public key: checks signatures made by the matching :class:`SigningKey`.

    Building one checks the key (:func:`check_public_key`); :meth:`verify` applies libsodium's strict rules.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes, *, source: str = "Ed25519 public key") -> None:
        check_public_key(raw, source=source)
        self._raw = bytes(raw)

    @classmethod
    def from_raw(cls, data: bytes, *, source: str = "Ed25519 public key") -> VerifyKey:
        """Build a key from its 32 raw bytes (RFC 8032 encoding).

        Raises
        ------
        KeyMaterialError
            ``data`` is not 32 bytes.
        WeakKeyError
            ``data`` is not a canonical encoding of a point of prime order (:func:`check_public_key`).
        """
        return cls(data, source=source)

    @classmethod
    def from_hex(cls, text: str, *, source: str = "Ed25519 public key") -> VerifyKey:
        """Build a key from the 64 hex digits of its raw bytes (as stored in manifests).

        Raises
        ------
        KeyMaterialError
            Not hex, or not 32 bytes.
        WeakKeyError
            Not a canonical encoding of a point of prime order (:func:`check_public_key`).
        """
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise KeyMaterialError(source, "wrong format", f"not hex: {text[:80]!r}") from None
        return cls(data, source=source)

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "<Ed25519 public key>") -> VerifyKey:
        """Parse a SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``).

        Raises
        ------
        KeyMaterialError
            Not PEM, truncated, not decodable, or a public key of another algorithm (``wrong type``).
        WeakKeyError
            The key is not a canonical encoding of a point of prime order (:func:`check_public_key`).
        """
        check_pem(data, labels=("PUBLIC KEY",), source=source)
        try:
            key = serialization.load_pem_public_key(data)
        except Exception:
            raise KeyMaterialError(source, "wrong format", "the PEM block does not decode to a key") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise KeyMaterialError(source, "wrong type", f"expected an Ed25519 key, got {_algorithm(key)}")
        return cls(key.public_bytes_raw(), source=source)

    @classmethod
    def load(cls, path: Path) -> VerifyKey:
        """Read a PEM public key from ``path`` (errors name the file)."""
        return cls.from_pem(read_material(path), source=str(path))

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM encoding."""
        return ed25519.Ed25519PublicKey.from_public_bytes(self._raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

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
        """Check that ``signature`` is this key's Ed25519 signature of ``message``, strictly.

        libsodium's rules: ``S`` reduced modulo the group order, ``R`` not of small order, the recomputed
        ``R`` equal to the signature's byte for byte (so a non-canonical ``R`` fails too).

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
            crypto_sign_open(b"".join((signature, message)), self._raw)
        except BadSignatureError:
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
        self._public = VerifyKey(key.public_key().public_bytes_raw())
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

    def sign(self, message: bytes | bytearray) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        if len(message) <= SODIUM_SIGN_LIMIT:
            return crypto_sign(bytes(message), self._sodium)[:SIGNATURE_SIZE]
        return self._key.sign(bytes(message))

    def __repr__(self) -> str:
        return f"SigningKey(public={self._public.hex})"


def _algorithm(key: object) -> str:
    return type(key).__name__.removeprefix("_").replace("PrivateKey", "").replace("PublicKey", "") or "unknown"
