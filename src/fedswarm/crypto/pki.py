"""The federation's X.509 PKI (RFC 5280): a CA, member TLS certificates, CSRs, a CRL, CA-signed documents.

Every key here is ECDSA P-256 with SHA-256 signatures. gRPC's TLS stack (BoringSSL, checked with grpcio
1.85) completes mutual TLS with P-256 leaf certificates but fails the handshake with Ed25519 leaf
certificates (``NO_COMMON_SIGNATURE_ALGORITHMS``), so TLS uses P-256 and Ed25519 is kept for message
signatures (:mod:`fedswarm.crypto.signing`). The CA is P-256 too, which every TLS stack can verify.

A member certificate has CN = member name, SANs for its DNS names and IP addresses, ``serverAuth`` and
``clientAuth`` extended key usages (in a swarm every node is both), ``CA:FALSE`` and a random 159-bit
serial. Its validity starts :data:`CLOCK_SKEW` before issuance to tolerate unsynchronised clocks.

:func:`verify_certificate` and friends return ``None`` or raise
:class:`~fedswarm.core.errors.VerificationError` with the reason: wrong issuer, expired, not yet valid,
revoked (with the serial), missing usage, wrong name. A CRL is trusted only after its own CA signature
and freshness are checked, so an attacker cannot clear revocations by swapping the CRL file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedswarm.core.errors import ConfigurationError, VerificationError
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
    "CLOCK_SKEW",
    "Certificate",
    "CertificateAuthority",
    "CertificateRequest",
    "RevocationList",
    "TlsPrivateKey",
    "TlsPublicKey",
    "check_key_pair",
    "create_ca",
    "create_crl",
    "create_csr",
    "issue_certificate",
    "revoke_serial",
    "sign_csr",
    "sign_document",
    "verify_ca_certificate",
    "verify_certificate",
    "verify_crl",
    "verify_document",
]

CLOCK_SKEW = dt.timedelta(minutes=5)
_HASH = hashes.SHA256()
_CURVE = ec.SECP256R1
_MAX_CN = 64  # RFC 5280 upper bound ub-common-name
_DNS_NAME = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_CONTEXT = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,63}$")
_MEMBER_EKUS = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}


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
        return cls(ec.generate_private_key(_CURVE()))

    @classmethod
    def from_pem(cls, data: bytes, *, password: bytes | None = None, source: str = "<TLS key>") -> TlsPrivateKey:
        """Parse a PKCS #8 PEM P-256 key; errors name ``source`` (see ``files.parse_private_key``)."""
        key = parse_private_key(data, password=password, source=source)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, _CURVE):
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


@dataclass(frozen=True)
class CertificateAuthority:
    """The federation CA: its key (kept by the operator) and its self-signed certificate."""

    key: TlsPrivateKey
    certificate: Certificate

    @classmethod
    def load(cls, key_path: Path, cert_path: Path, *, password: bytes | None = None) -> CertificateAuthority:
        """Read the CA key and certificate, checking that they belong together."""
        ca = cls(TlsPrivateKey.load(key_path, password=password), Certificate.load(cert_path))
        check_key_pair(ca.certificate, ca.key)
        return ca

    def save(self, key_path: Path, cert_path: Path, *, password: bytes | None = None) -> None:
        """Write the key (mode ``0600``) and the certificate (``0644``) atomically."""
        self.key.save(key_path, password=password)
        self.certificate.save(cert_path)


# ---------------------------------------------------------------------------------------- issuing


def create_ca(name: str, *, validity_days: int, now: dt.datetime | None = None) -> CertificateAuthority:
    """Create a self-signed federation CA (P-256, ``CA:TRUE, pathlen:0``).

    Parameters
    ----------
    name
        Common name of the CA, usually ``"<federation> CA"``.
    validity_days
        Lifetime of the CA certificate.
    now
        Issuance time (defaults to the current time); tests pass a fixed instant.
    """
    _check_common_name(name, "CA name")
    start, end = _window(now, validity_days)
    key = TlsPrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    public = key._key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key._key, _HASH)
    )
    return CertificateAuthority(key, Certificate(cert))


def issue_certificate(
    ca: CertificateAuthority,
    public_key: TlsPublicKey,
    *,
    name: str,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    validity_days: int,
    now: dt.datetime | None = None,
) -> Certificate:
    """Issue a member TLS certificate for ``public_key``.

    The certificate carries CN = ``name``, the given SANs, ``serverAuth`` + ``clientAuth``, ``CA:FALSE``
    and a validity that never outlives the CA's.

    Raises
    ------
    ConfigurationError
        An invalid name, DNS name or IP address, or a validity ending after the CA's.
    """
    _check_common_name(name, "member name")
    sans = _san_extension(dns_names, ip_addresses)
    start, end = _window(now, validity_days)
    if end > ca.certificate.not_after:
        raise ConfigurationError(
            f"validity_days: certificate for {name!r} would end {end:%Y-%m-%d}, after the CA "
            f"certificate ({ca.certificate.not_after:%Y-%m-%d})"
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate._cert.subject)
        .public_key(public_key._key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(_MEMBER_EKUS)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key._key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key._key.public_key()), critical=False)
    )
    if sans is not None:
        builder = builder.add_extension(sans, critical=False)
    return Certificate(builder.sign(ca.key._key, _HASH))


def create_csr(
    key: TlsPrivateKey, *, name: str, dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = ()
) -> CertificateRequest:
    """Create a CSR for a new member, self-signed with its TLS ``key`` (which never leaves the member)."""
    _check_common_name(name, "member name")
    sans = _san_extension(dns_names, ip_addresses)
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    if sans is not None:
        builder = builder.add_extension(sans, critical=False)
    return CertificateRequest(builder.sign(key._key, _HASH))


def sign_csr(
    ca: CertificateAuthority,
    csr: CertificateRequest,
    *,
    validity_days: int,
    taken_names: Collection[str] = frozenset(),
    now: dt.datetime | None = None,
) -> Certificate:
    """Issue a member certificate for a CSR.

    Only the common name and the subject alternative names are taken from the request; every other
    extension (basic constraints, usages) is set by the CA, so a CSR cannot ask to become a CA.

    Raises
    ------
    VerificationError
        The CSR's self-signature does not verify (it was altered, or not made with the key it carries).
    ConfigurationError
        The requested name is already in ``taken_names`` (names are identities: never reused), the
        key is not P-256, or the name or SANs are invalid.
    """
    if not csr._csr.is_signature_valid:
        raise VerificationError(f"certificate request for {csr.name!r}: its signature does not verify")
    name = csr.name
    if name in taken_names:
        raise ConfigurationError(f"certificate request: member name {name!r} is already taken")
    key = csr._csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _CURVE):
        raise ConfigurationError(f"certificate request for {name!r}: the key must be ECDSA P-256")
    return issue_certificate(
        ca,
        TlsPublicKey(key),
        name=name,
        dns_names=csr.dns_names,
        ip_addresses=csr.ip_addresses,
        validity_days=validity_days,
        now=now,
    )


def create_crl(
    ca: CertificateAuthority,
    *,
    revoked: Iterable[int] = (),
    number: int = 1,
    next_update: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> RevocationList:
    """Create a CRL signed by the CA listing the ``revoked`` serials.

    Parameters
    ----------
    revoked
        Serial numbers to list.
    number
        The CRL number; a newer list must carry a larger one.
    next_update
        When a newer list is due; past it :func:`verify_crl` refuses the list as stale. Defaults to the
        end of the CA certificate's validity (no freshness requirement beyond the CA's life).
    now
        Issuance time (defaults to the current time).
    """
    if number < 1:
        raise ConfigurationError(f"number: a CRL number must be positive, got {number}")
    start = _now(now).replace(microsecond=0) - CLOCK_SKEW
    end = ca.certificate.not_after if next_update is None else next_update
    if end <= start:
        raise ConfigurationError(f"next_update: {end:%Y-%m-%d %H:%M}Z is not after the issuance time")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.certificate._cert.subject)
        .last_update(start)
        .next_update(end)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key._key.public_key()), critical=False)
    )
    for serial in sorted(set(revoked)):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(start).build()
        builder = builder.add_revoked_certificate(entry)
    return RevocationList(builder.sign(ca.key._key, _HASH))


def revoke_serial(
    ca: CertificateAuthority,
    crl: RevocationList,
    serial: int,
    *,
    next_update: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> RevocationList:
    """A new CRL with ``serial`` added to ``crl``'s entries and the CRL number incremented.

    Raises
    ------
    VerificationError
        ``crl`` itself was not issued by ``ca`` or is stale.
    """
    verify_crl(crl, ca=ca.certificate, now=now)
    return create_crl(
        ca, revoked=crl.revoked_serials | {serial}, number=crl.number + 1, next_update=next_update, now=now
    )


# ----------------------------------------------------------------------------------- verification


def verify_ca_certificate(ca: Certificate, *, now: dt.datetime | None = None) -> None:
    """Check that ``ca`` is a self-signed CA certificate, valid at ``now``.

    Raises
    ------
    VerificationError
        Not a CA, not self-signed, expired or not yet valid.
    """
    if not ca.is_ca:
        raise VerificationError(f"CA certificate {ca.name!r}: basic constraints do not mark it as a CA")
    try:
        ca._cert.verify_directly_issued_by(ca._cert)
    except (ValueError, TypeError, InvalidSignature):
        raise VerificationError(f"CA certificate {ca.name!r}: it is not self-signed") from None
    _check_window(ca, _now(now), "CA certificate")


def verify_crl(crl: RevocationList, *, ca: Certificate, now: dt.datetime | None = None) -> None:
    """Check that ``crl`` was signed by ``ca`` and is not stale at ``now``.

    Raises
    ------
    VerificationError
        Wrong issuer or bad signature, issued in the future, or past its ``nextUpdate``.
    """
    key = ca._cert.public_key()
    if (
        crl._crl.issuer != ca._cert.subject
        or not isinstance(key, ec.EllipticCurvePublicKey)
        or not crl._crl.is_signature_valid(key)
    ):
        raise VerificationError(f"CRL number {crl.number}: not signed by the CA {ca.name!r} (wrong issuer)")
    moment = _now(now)
    if crl.last_update > moment + CLOCK_SKEW:
        raise VerificationError(f"CRL number {crl.number}: issued in the future ({crl.last_update:%Y-%m-%d %H:%M}Z)")
    if crl.next_update is not None and crl.next_update < moment:
        raise VerificationError(
            f"CRL number {crl.number}: stale, a newer list was due {crl.next_update:%Y-%m-%d %H:%M}Z"
        )


def verify_certificate(
    cert: Certificate,
    *,
    ca: Certificate,
    crl: RevocationList | None = None,
    now: dt.datetime | None = None,
    expected_name: str | None = None,
) -> None:
    """Check a member certificate against the federation CA.

    Checks, in order: ``ca`` is a valid self-signed CA (:func:`verify_ca_certificate`); ``cert`` was
    issued by it (issuer name and signature), is within its validity window at ``now``, is not a CA,
    has both ``serverAuth`` and ``clientAuth`` usages, has the common name ``expected_name`` when given,
    and is absent from ``crl`` (whose own signature and freshness are checked first).

    Raises
    ------
    VerificationError
        The message gives the reason: ``wrong issuer``, ``expired``, ``not yet valid``, ``is a CA``,
        ``missing extended key usage``, ``wrong name`` or ``revoked (serial ...)``.
    """
    moment = _now(now)
    verify_ca_certificate(ca, now=moment)
    label = f"certificate {cert.name!r} (serial {cert.serial:x})"
    try:
        cert._cert.verify_directly_issued_by(ca._cert)
    except (ValueError, TypeError, InvalidSignature):
        raise VerificationError(
            f"{label}: wrong issuer, not signed by the CA {ca.name!r} (issuer is {cert.issuer_name!r})"
        ) from None
    _check_window(cert, moment, "certificate")
    if cert.is_ca:
        raise VerificationError(f"{label}: is a CA certificate, not a member certificate")
    try:
        usages = set(cert._cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    missing = [label for oid, label in _MEMBER_EKUS.items() if oid not in usages]
    if missing:
        raise VerificationError(f"{label}: missing extended key usage {', '.join(missing)}")
    if expected_name is not None and cert.name != expected_name:
        raise VerificationError(f"{label}: wrong name, expected {expected_name!r}")
    if crl is not None:
        verify_crl(crl, ca=ca, now=moment)
        if cert.serial in crl.revoked_serials:
            raise VerificationError(f"{label}: revoked (serial {cert.serial:x}) by CRL number {crl.number}")


def check_key_pair(cert: Certificate, key: TlsPrivateKey) -> None:
    """Check that ``key`` is the private key of ``cert``.

    Raises
    ------
    VerificationError
        The public halves differ.
    """
    if cert.public_key() != key.public_key():
        raise VerificationError(
            f"certificate {cert.name!r}: the private key does not match the certificate's public key"
        )


def sign_document(ca: CertificateAuthority, document: bytes, *, context: str) -> bytes:
    """Sign ``document`` with the CA key (ECDSA P-256, SHA-256, DER signature).

    ``context`` (e.g. ``"fedswarm.manifest.v1"``) is bound into the signed bytes, so a signature made for
    one kind of document is never valid for another.
    """
    return ca.key._key.sign(_framed(context, document), ec.ECDSA(_HASH))


def verify_document(document: bytes, signature: bytes, *, ca: Certificate, context: str) -> None:
    """Check a :func:`sign_document` signature against the CA certificate.

    Raises
    ------
    VerificationError
        The signature does not verify for this CA, document and context.
    """
    key = ca._cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError(f"CA certificate {ca.name!r}: key is not ECDSA, cannot verify documents")
    try:
        key.verify(bytes(signature), _framed(context, document), ec.ECDSA(_HASH))
    except InvalidSignature:
        raise VerificationError(
            f"{context}: CA signature does not verify (document altered, or signed by a CA other than "
            f"{ca.name!r} {ca.fingerprint[:16]})"
        ) from None


# ---------------------------------------------------------------------------------------- helpers


def _framed(context: str, document: bytes) -> bytes:
    if not _CONTEXT.match(context):
        raise ConfigurationError(f"context: {context!r} must match {_CONTEXT.pattern}")
    return b"fedswarm-ca-document\x00" + context.encode("ascii") + b"\x00" + bytes(document)


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ConfigurationError("now: a timezone-aware datetime is required")
    return now


def _window(now: dt.datetime | None, validity_days: int) -> tuple[dt.datetime, dt.datetime]:
    if validity_days < 1:
        raise ConfigurationError(f"validity_days: must be at least 1, got {validity_days}")
    moment = _now(now).replace(microsecond=0)
    return moment - CLOCK_SKEW, moment + dt.timedelta(days=validity_days)


def _check_window(cert: Certificate, moment: dt.datetime, what: str) -> None:
    label = f"{what} {cert.name!r} (serial {cert.serial:x})"
    if moment > cert.not_after:
        raise VerificationError(f"{label}: expired on {cert.not_after:%Y-%m-%d %H:%M}Z")
    if moment < cert.not_before:
        raise VerificationError(f"{label}: not yet valid until {cert.not_before:%Y-%m-%d %H:%M}Z")


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _check_common_name(name: str, what: str) -> None:
    if not 1 <= len(name) <= _MAX_CN or not name.isprintable() or name != name.strip():
        raise ConfigurationError(
            f"{what}: {name!r} must be 1 to {_MAX_CN} printable characters without surrounding spaces"
        )


def _san_extension(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> x509.SubjectAlternativeName | None:
    entries: list[x509.GeneralName] = []
    for dns in dns_names:
        if not isinstance(dns, str) or not _DNS_NAME.match(dns) or len(dns) > 253:
            raise ConfigurationError(f"dns_names: {dns!r} is not a valid DNS name")
        entries.append(x509.DNSName(dns))
    for text in ip_addresses:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            raise ConfigurationError(f"ip_addresses: {text!r} is not an IP address") from None
    return x509.SubjectAlternativeName(entries) if entries else None


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
