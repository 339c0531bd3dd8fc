"""The PKI's value objects: P-256 TLS keys, X.509 certificates, CSRs and CRLs, compared by their encodings.

They wrap the ``cryptography`` objects and parse PEM with errors that name the file
(:class:`~fedswarm.crypto.files.KeyMaterialError`). Issuing and verifying live in :mod:`fedswarm.crypto.pki`,
which re-exports these classes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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

__all__ = ["CURVE", "Certificate", "CertificateRequest", "RevocationList", "TlsPrivateKey", "TlsPublicKey"]

CURVE = ec.SECP256R1


# --------------------------------------------------------------------------------------------- keys


class TlsPublicKey:
    """An ECDSA P-256 public key, compared by its DER SubjectPublicKeyInfo."""

    __slots__ = ("_der", "_key")

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        self._key = key
        self._der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def fingerprint(self) -> str:
        """Lowercase hex SHA-256 of the DER SubjectPublicKeyInfo."""
        return hashlib.sha256(self._der).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TlsPublicKey) and other._der == self._der

    def __hash__(self) -> int:
        return hash(self._der)

    def __repr__(self) -> str:
        return f"TlsPublicKey({self.fingerprint[:16]})"


class TlsPrivateKey:
    """An ECDSA P-256 private key (a TLS key, or the CA key)."""

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> TlsPrivateKey:
        """A fresh P-256 key."""
        return cls(ec.generate_private_key(CURVE()))

    @classmethod
    def from_pem(cls, data: bytes, *, password: bytes | None = None, source: str = "<TLS key>") -> TlsPrivateKey:
        """Parse a PKCS #8 PEM P-256 key; errors name ``source`` (see ``files.parse_private_key``)."""
        key = parse_private_key(data, password=password, source=source)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, CURVE):
            raise KeyMaterialError(source, "wrong type", "expected an ECDSA P-256 key")
        return cls(key)

    @classmethod
    def load(cls, path: Path, *, password: bytes | None = None) -> TlsPrivateKey:
        """Read a PEM key from ``path``."""
        return cls.from_pem(read_material(path), password=password, source=str(path))

    def to_pem(self, *, password: bytes | None = None) -> bytes:
        """PKCS #8 PEM, encrypted with ``password`` when given."""
        return private_key_pem(self._key, password=password)

    def save(self, path: Path, *, password: bytes | None = None) -> None:
        """Write the PEM atomically with mode ``0600``."""
        write_private(path, self.to_pem(password=password))

    def public_key(self) -> TlsPublicKey:
        """The matching public key."""
        return TlsPublicKey(self._key.public_key())

    def __repr__(self) -> str:
        return f"TlsPrivateKey(public={self.public_key().fingerprint[:16]})"


# ------------------------------------------------------------------------------------- containers


class Certificate:
    """An X.509 certificate, compared by its DER bytes."""

    __slots__ = ("_cert",)

    def __init__(self, cert: x509.Certificate) -> None:
        self._cert = cert

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "<certificate>") -> Certificate:
        """Parse a PEM certificate.

        Raises
        ------
        KeyMaterialError
            Not PEM, truncated, not a certificate, or undecodable DER.
        """
        check_pem(data, labels=("CERTIFICATE",), source=source)
        try:
            return cls(x509.load_pem_x509_certificate(data))
        except ValueError:
            raise KeyMaterialError(source, "wrong format", "the PEM block is not a valid certificate") from None

    @classmethod
    def load(cls, path: Path) -> Certificate:
        """Read a PEM certificate from ``path``."""
        return cls.from_pem(read_material(path), source=str(path))

    @property
    def pem(self) -> bytes:
        """PEM encoding."""
        return self._cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        """DER encoding."""
        return self._cert.public_bytes(serialization.Encoding.DER)

    def save(self, path: Path) -> None:
        """Write the PEM atomically with mode ``0644``."""
        write_public(path, self.pem)

    @property
    def fingerprint(self) -> str:
        """Lowercase hex SHA-256 of the DER encoding (what ``openssl x509 -fingerprint -sha256`` shows)."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def name(self) -> str:
        """The subject common name."""
        return _common_name(self._cert.subject, "certificate")

    @property
    def issuer_name(self) -> str:
        """The issuer common name."""
        return _common_name(self._cert.issuer, "certificate issuer")

    @property
    def serial(self) -> int:
        """The serial number."""
        return int(self._cert.serial_number)

    @property
    def not_before(self) -> dt.datetime:
        """Start of validity (UTC)."""
        return self._cert.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        """End of validity (UTC)."""
        return self._cert.not_valid_after_utc

    @property
    def dns_names(self) -> tuple[str, ...]:
        """DNS subject alternative names."""
        return _sans(self._cert.extensions)[0]

    @property
    def ip_addresses(self) -> tuple[str, ...]:
        """IP address subject alternative names, as text."""
        return _sans(self._cert.extensions)[1]

    @property
    def is_ca(self) -> bool:
        """Whether basic constraints mark the certificate as a CA."""
        try:
            return bool(self._cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        except x509.ExtensionNotFound:
            return False

    def public_key(self) -> TlsPublicKey:
        """The certified public key (P-256)."""
        key = self._cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise VerificationError(f"certificate {self.name!r}: public key is not ECDSA")
        return TlsPublicKey(key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Certificate) and other.der == self.der

    def __hash__(self) -> int:
        return hash(self.der)

    def __repr__(self) -> str:
        return f"Certificate(name={self.name!r}, serial={self.serial:x}, fingerprint={self.fingerprint[:16]})"


class CertificateRequest:
    """A PKCS #10 certificate signing request (RFC 2986)."""

    __slots__ = ("_csr",)

    def __init__(self, csr: x509.CertificateSigningRequest) -> None:
        self._csr = csr

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "<certificate request>") -> CertificateRequest:
        """Parse a PEM CSR (``-----BEGIN CERTIFICATE REQUEST-----``)."""
        check_pem(data, labels=("CERTIFICATE REQUEST",), source=source)
        try:
            return cls(x509.load_pem_x509_csr(data))
        except ValueError:
            raise KeyMaterialError(source, "wrong format", "the PEM block is not a valid CSR") from None

    @property
    def pem(self) -> bytes:
        """PEM encoding."""
        return self._csr.public_bytes(serialization.Encoding.PEM)

    @property
    def name(self) -> str:
        """The requested common name."""
        return _common_name(self._csr.subject, "certificate request")

    @property
    def dns_names(self) -> tuple[str, ...]:
        """Requested DNS subject alternative names."""
        return _sans(self._csr.extensions)[0]

    @property
    def ip_addresses(self) -> tuple[str, ...]:
        """Requested IP address subject alternative names."""
        return _sans(self._csr.extensions)[1]

    def __repr__(self) -> str:
        return f"CertificateRequest(name={self.name!r})"


class RevocationList:
    """An X.509 certificate revocation list (RFC 5280 section 5)."""

    __slots__ = ("_crl",)

    def __init__(self, crl: x509.CertificateRevocationList) -> None:
        self._crl = crl

    @classmethod
    def from_pem(cls, data: bytes, *, source: str = "<CRL>") -> RevocationList:
        """Parse a PEM CRL (``-----BEGIN X509 CRL-----``)."""
        check_pem(data, labels=("X509 CRL",), source=source)
        try:
            return cls(x509.load_pem_x509_crl(data))
        except ValueError:
            raise KeyMaterialError(source, "wrong format", "the PEM block is not a valid CRL") from None

    @classmethod
    def load(cls, path: Path) -> RevocationList:
        """Read a PEM CRL from ``path``."""
        return cls.from_pem(read_material(path), source=str(path))

    @property
    def pem(self) -> bytes:
        """PEM encoding."""
        return self._crl.public_bytes(serialization.Encoding.PEM)

    def save(self, path: Path) -> None:
        """Write the PEM atomically with mode ``0644``."""
        write_public(path, self.pem)

    @property
    def number(self) -> int:
        """The CRL number (increases with every new list)."""
        try:
            return int(self._crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        except x509.ExtensionNotFound:
            return 0

    @property
    def revoked_serials(self) -> frozenset[int]:
        """Serial numbers of revoked certificates."""
        return frozenset(int(entry.serial_number) for entry in self._crl)

    @property
    def last_update(self) -> dt.datetime:
        """When the list was issued (UTC)."""
        return self._crl.last_update_utc

    @property
    def next_update(self) -> dt.datetime | None:
        """When a newer list is due (UTC); past it, the list is stale."""
        return self._crl.next_update_utc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RevocationList) and other.pem == self.pem

    def __hash__(self) -> int:
        return hash(self.pem)

    def __repr__(self) -> str:
        return f"RevocationList(number={self.number}, revoked={len(self.revoked_serials)})"


def _sans(extensions: x509.Extensions) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    dns = tuple(san.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return dns, ips


def _common_name(name: x509.Name, what: str) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) != 1:
        raise VerificationError(f"{what}: expected exactly one common name, found {len(values)}")
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
