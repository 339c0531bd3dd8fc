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
import ipaddress
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.crypto.x509_objects import (
    CURVE,
    Certificate,
    CertificateRequest,
    RevocationList,
    TlsPrivateKey,
    TlsPublicKey,
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
_MAX_CN = 64  # RFC 5280 upper bound ub-common-name
_DNS_NAME = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_CONTEXT = re.compile(r"^[a-z0-9][a-z0-9._/-]{0,63}$")
_MEMBER_EKUS = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}


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
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, CURVE):
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
