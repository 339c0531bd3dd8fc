"""The federation PKI: CA, member certificates, CSRs, CRLs, CA-signed documents, and every rejection."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.crypto import pki
from fedswarm.crypto.files import KeyMaterialError

NOW = dt.datetime(2030, 1, 15, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def ca() -> pki.CertificateAuthority:
    return pki.create_ca("Test Federation CA", validity_days=3650, now=NOW)


@pytest.fixture(scope="module")
def other_ca() -> pki.CertificateAuthority:
    return pki.create_ca("Test Federation CA", validity_days=3650, now=NOW)  # same name, other key


@pytest.fixture(scope="module")
def member_key() -> pki.TlsPrivateKey:
    return pki.TlsPrivateKey.generate()


@pytest.fixture(scope="module")
def member_cert(ca: pki.CertificateAuthority, member_key: pki.TlsPrivateKey) -> pki.Certificate:
    return pki.issue_certificate(
        ca,
        member_key.public_key(),
        name="bank-a",
        dns_names=("bank-a.example", "localhost"),
        ip_addresses=("127.0.0.1", "::1"),
        validity_days=30,
        now=NOW,
    )


def _x509(cert: pki.Certificate) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert.pem)


# ------------------------------------------------------------------------------------------- CA


def test_ca_is_a_self_signed_p256_ca(ca: pki.CertificateAuthority) -> None:
    raw = _x509(ca.certificate)
    assert raw.subject == raw.issuer
    assert raw.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test Federation CA"
    constraints = raw.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = raw.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    key = raw.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert isinstance(raw.signature_hash_algorithm, hashes.SHA256)
    assert raw.not_valid_after_utc - NOW == dt.timedelta(days=3650)
    pki.verify_ca_certificate(ca.certificate, now=NOW)


def test_member_certificate_is_not_a_ca(member_cert: pki.Certificate) -> None:
    with pytest.raises(VerificationError, match="do not mark it as a CA"):
        pki.verify_ca_certificate(member_cert, now=NOW)


def test_expired_ca_is_refused(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(VerificationError, match=r"CA certificate .* expired"):
        pki.verify_ca_certificate(ca.certificate, now=NOW + dt.timedelta(days=3651))


def test_ca_key_and_certificate_round_trip(tmp_path: Path, ca: pki.CertificateAuthority) -> None:
    ca.save(tmp_path / "ca-key.pem", tmp_path / "ca.pem", password=b"operator")
    assert (tmp_path / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    loaded = pki.CertificateAuthority.load(tmp_path / "ca-key.pem", tmp_path / "ca.pem", password=b"operator")
    assert loaded.certificate == ca.certificate
    assert loaded.key.public_key() == ca.key.public_key()


def test_ca_load_refuses_a_key_of_another_ca(
    tmp_path: Path, ca: pki.CertificateAuthority, other_ca: pki.CertificateAuthority
) -> None:
    other_ca.key.save(tmp_path / "ca-key.pem")
    ca.certificate.save(tmp_path / "ca.pem")
    with pytest.raises(VerificationError, match="private key does not match"):
        pki.CertificateAuthority.load(tmp_path / "ca-key.pem", tmp_path / "ca.pem")


# -------------------------------------------------------------------------------- member certs


def test_member_certificate_contents(
    ca: pki.CertificateAuthority, member_cert: pki.Certificate, member_key: pki.TlsPrivateKey
) -> None:
    raw = _x509(member_cert)
    assert member_cert.name == "bank-a"
    assert raw.issuer == _x509(ca.certificate).subject
    assert member_cert.dns_names == ("bank-a.example", "localhost")
    assert member_cert.ip_addresses == ("127.0.0.1", "::1")
    eku = raw.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert raw.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert raw.not_valid_after_utc == NOW + dt.timedelta(days=30)
    assert raw.not_valid_before_utc == NOW - pki.CLOCK_SKEW
    assert member_cert.serial > 0 and member_cert.serial.bit_length() <= 159
    assert member_cert.fingerprint == raw.fingerprint(hashes.SHA256()).hex()
    pki.check_key_pair(member_cert, member_key)
    pki.verify_certificate(member_cert, ca=ca.certificate, now=NOW, expected_name="bank-a")


def test_certificates_get_distinct_serials(ca: pki.CertificateAuthority, member_key: pki.TlsPrivateKey) -> None:
    serials = {
        pki.issue_certificate(ca, member_key.public_key(), name=f"m{i}", validity_days=1, now=NOW).serial
        for i in range(5)
    }
    assert len(serials) == 5


def test_wrong_issuer_is_refused(other_ca: pki.CertificateAuthority, member_cert: pki.Certificate) -> None:
    with pytest.raises(VerificationError, match="wrong issuer"):
        pki.verify_certificate(member_cert, ca=other_ca.certificate, now=NOW)


def test_expired_certificate_is_refused(ca: pki.CertificateAuthority, member_cert: pki.Certificate) -> None:
    with pytest.raises(VerificationError, match="expired on 2030-02-14"):
        pki.verify_certificate(member_cert, ca=ca.certificate, now=NOW + dt.timedelta(days=30, seconds=1))


def test_not_yet_valid_certificate_is_refused(ca: pki.CertificateAuthority, member_key: pki.TlsPrivateKey) -> None:
    later = NOW + dt.timedelta(days=1)
    cert = pki.issue_certificate(ca, member_key.public_key(), name="late", validity_days=5, now=later)
    with pytest.raises(VerificationError, match=r"certificate 'late' .*not yet valid until 2030-01-16 11:55Z"):
        pki.verify_certificate(cert, ca=ca.certificate, now=later - dt.timedelta(minutes=6))
    pki.verify_certificate(cert, ca=ca.certificate, now=later - dt.timedelta(minutes=4))


def test_member_certificate_checked_against_an_invalid_ca_is_refused(
    ca: pki.CertificateAuthority, member_cert: pki.Certificate
) -> None:
    with pytest.raises(VerificationError, match="CA certificate .* not yet valid"):
        pki.verify_certificate(member_cert, ca=ca.certificate, now=NOW - dt.timedelta(days=1))


def test_wrong_name_is_refused(ca: pki.CertificateAuthority, member_cert: pki.Certificate) -> None:
    with pytest.raises(VerificationError, match="wrong name, expected 'bank-b'"):
        pki.verify_certificate(member_cert, ca=ca.certificate, now=NOW, expected_name="bank-b")


def test_ca_certificate_is_not_accepted_as_member(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(VerificationError, match="is a CA certificate"):
        pki.verify_certificate(ca.certificate, ca=ca.certificate, now=NOW)


def test_certificate_without_client_auth_is_refused(ca: pki.CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server-only")]))
        .issuer_name(_x509(ca.certificate).subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key._key, hashes.SHA256())
    )
    cert = pki.Certificate.from_pem(raw.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(VerificationError, match="missing extended key usage clientAuth"):
        pki.verify_certificate(cert, ca=ca.certificate, now=NOW)


def test_key_mismatch_is_refused(member_cert: pki.Certificate) -> None:
    with pytest.raises(VerificationError, match="private key does not match"):
        pki.check_key_pair(member_cert, pki.TlsPrivateKey.generate())


def test_certificate_cannot_outlive_the_ca(ca: pki.CertificateAuthority, member_key: pki.TlsPrivateKey) -> None:
    with pytest.raises(ConfigurationError, match="after the CA certificate"):
        pki.issue_certificate(ca, member_key.public_key(), name="x", validity_days=3651, now=NOW)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "member name"),
        ({"name": "x" * 65}, "member name"),
        ({"name": "a", "dns_names": ("bad name",)}, "not a valid DNS name"),
        ({"name": "a", "ip_addresses": ("300.1.1.1",)}, "not an IP address"),
        ({"name": "a", "validity_days": 0}, "at least 1"),
    ],
)
def test_invalid_issue_arguments_are_refused(
    ca: pki.CertificateAuthority, member_key: pki.TlsPrivateKey, kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"validity_days": 1, **kwargs}
    with pytest.raises(ConfigurationError, match=message):
        pki.issue_certificate(ca, member_key.public_key(), now=NOW, **arguments)  # type: ignore[arg-type]


def test_naive_time_is_refused(ca: pki.CertificateAuthority, member_cert: pki.Certificate) -> None:
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        pki.verify_certificate(member_cert, ca=ca.certificate, now=dt.datetime(2030, 1, 15))


# ------------------------------------------------------------------------------------------ CSR


def test_csr_is_signed_with_requested_sans(ca: pki.CertificateAuthority) -> None:
    key = pki.TlsPrivateKey.generate()
    csr = pki.create_csr(key, name="hospital-7", dns_names=("h7.example",), ip_addresses=("10.0.0.7",))
    parsed = pki.CertificateRequest.from_pem(csr.pem)
    assert (parsed.name, parsed.dns_names, parsed.ip_addresses) == ("hospital-7", ("h7.example",), ("10.0.0.7",))
    cert = pki.sign_csr(ca, parsed, validity_days=10, taken_names={"bank-a"}, now=NOW)
    assert (cert.name, cert.dns_names, cert.ip_addresses) == ("hospital-7", ("h7.example",), ("10.0.0.7",))
    pki.check_key_pair(cert, key)
    pki.verify_certificate(cert, ca=ca.certificate, now=NOW, expected_name="hospital-7")


def test_csr_with_bad_signature_is_refused(ca: pki.CertificateAuthority) -> None:
    csr = pki.create_csr(pki.TlsPrivateKey.generate(), name="mallory")
    der = bytearray(x509.load_pem_x509_csr(csr.pem).public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the ECDSA signature value
    tampered = pki.CertificateRequest(x509.load_der_x509_csr(bytes(der)))
    with pytest.raises(VerificationError, match="'mallory': its signature does not verify"):
        pki.sign_csr(ca, tampered, validity_days=10, now=NOW)


def test_csr_with_colliding_name_is_refused(ca: pki.CertificateAuthority) -> None:
    csr = pki.create_csr(pki.TlsPrivateKey.generate(), name="bank-a")
    with pytest.raises(ConfigurationError, match="'bank-a' is already taken"):
        pki.sign_csr(ca, csr, validity_days=10, taken_names={"bank-a"}, now=NOW)


def test_csr_cannot_request_to_be_a_ca(ca: pki.CertificateAuthority) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sneaky")]))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert = pki.sign_csr(ca, pki.CertificateRequest(raw), validity_days=10, now=NOW)
    assert not cert.is_ca
    pki.verify_certificate(cert, ca=ca.certificate, now=NOW)


def test_csr_with_non_p256_key_is_refused(ca: pki.CertificateAuthority) -> None:
    raw = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edwards")]))
        .sign(ed25519.Ed25519PrivateKey.generate(), None)
    )
    with pytest.raises(ConfigurationError, match="must be ECDSA P-256"):
        pki.sign_csr(ca, pki.CertificateRequest(raw), validity_days=10, now=NOW)


# ------------------------------------------------------------------------------------------ CRL


def test_crl_create_revoke_and_load(ca: pki.CertificateAuthority, member_cert: pki.Certificate) -> None:
    empty = pki.create_crl(ca, now=NOW)
    assert empty.number == 1 and empty.revoked_serials == frozenset()
    assert empty.next_update == ca.certificate.not_after
    pki.verify_certificate(member_cert, ca=ca.certificate, crl=empty, now=NOW)
    revoked = pki.revoke_serial(ca, empty, member_cert.serial, now=NOW)
    loaded = pki.RevocationList.from_pem(revoked.pem)
    assert loaded == revoked
    assert loaded.number == 2
    assert loaded.revoked_serials == {member_cert.serial}
    raw = x509.load_pem_x509_crl(loaded.pem)
    assert raw.get_revoked_certificate_by_serial_number(member_cert.serial) is not None
    pki.verify_crl(loaded, ca=ca.certificate, now=NOW)


def test_revoked_certificate_is_refused_with_its_serial(
    ca: pki.CertificateAuthority, member_cert: pki.Certificate
) -> None:
    crl = pki.create_crl(ca, revoked=[member_cert.serial, 12345], number=7, now=NOW)
    with pytest.raises(VerificationError, match=f"revoked \\(serial {member_cert.serial:x}\\) by CRL number 7"):
        pki.verify_certificate(member_cert, ca=ca.certificate, crl=crl, now=NOW)


def test_crl_from_another_ca_is_refused(
    ca: pki.CertificateAuthority, other_ca: pki.CertificateAuthority, member_cert: pki.Certificate
) -> None:
    forged = pki.create_crl(other_ca, now=NOW)  # same issuer name, wrong key: an attacker's empty list
    with pytest.raises(VerificationError, match="CRL number 1: not signed by the CA"):
        pki.verify_certificate(member_cert, ca=ca.certificate, crl=forged, now=NOW)


def test_stale_crl_is_refused(ca: pki.CertificateAuthority, member_cert: pki.Certificate) -> None:
    crl = pki.create_crl(ca, next_update=NOW + dt.timedelta(days=1), now=NOW)
    with pytest.raises(VerificationError, match="stale"):
        pki.verify_certificate(member_cert, ca=ca.certificate, crl=crl, now=NOW + dt.timedelta(days=2))


def test_crl_numbers_must_be_positive(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(ConfigurationError, match="positive"):
        pki.create_crl(ca, number=0, now=NOW)


# -------------------------------------------------------------------------------------- PEM I/O


def test_pem_round_trips(
    tmp_path: Path, ca: pki.CertificateAuthority, member_cert: pki.Certificate, member_key: pki.TlsPrivateKey
) -> None:
    member_cert.save(tmp_path / "tls.pem")
    assert pki.Certificate.load(tmp_path / "tls.pem") == member_cert
    member_key.save(tmp_path / "tls-key.pem", password=b"pw")
    assert (tmp_path / "tls-key.pem").stat().st_mode & 0o777 == 0o600
    assert pki.TlsPrivateKey.load(tmp_path / "tls-key.pem", password=b"pw").public_key() == member_key.public_key()
    crl = pki.create_crl(ca, now=NOW)
    crl.save(tmp_path / "crl.pem")
    assert pki.RevocationList.load(tmp_path / "crl.pem") == crl


def test_wrong_pem_type_is_named(tmp_path: Path, member_cert: pki.Certificate) -> None:
    member_cert.save(tmp_path / "crl.pem")
    with pytest.raises(KeyMaterialError, match=r"crl\.pem: wrong type .*'CERTIFICATE'"):
        pki.RevocationList.load(tmp_path / "crl.pem")


def test_tls_key_of_wrong_curve_is_refused() -> None:
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyMaterialError, match="P-256"):
        pki.TlsPrivateKey.from_pem(pem)


def test_truncated_certificate_is_named(tmp_path: Path, member_cert: pki.Certificate) -> None:
    (tmp_path / "tls.pem").write_bytes(member_cert.pem[:200])
    with pytest.raises(KeyMaterialError, match="truncated"):
        pki.Certificate.load(tmp_path / "tls.pem")


def test_garbled_certificate_body_is_wrong_format() -> None:
    with pytest.raises(KeyMaterialError, match="not a valid certificate"):
        pki.Certificate.from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


# ------------------------------------------------------------------------------------ documents


def test_document_signature_round_trip(ca: pki.CertificateAuthority) -> None:
    signature = pki.sign_document(ca, b"manifest bytes", context="fedswarm.test.v1")
    pki.verify_document(b"manifest bytes", signature, ca=ca.certificate, context="fedswarm.test.v1")


@pytest.mark.parametrize(
    ("document", "context"),
    [(b"manifest bytez", "fedswarm.test.v1"), (b"manifest bytes", "fedswarm.other.v1")],
)
def test_document_signature_is_bound_to_document_and_context(
    ca: pki.CertificateAuthority, document: bytes, context: str
) -> None:
    signature = pki.sign_document(ca, b"manifest bytes", context="fedswarm.test.v1")
    with pytest.raises(VerificationError, match="CA signature does not verify"):
        pki.verify_document(document, signature, ca=ca.certificate, context=context)


def test_document_signed_by_another_ca_is_refused(
    ca: pki.CertificateAuthority, other_ca: pki.CertificateAuthority
) -> None:
    signature = pki.sign_document(other_ca, b"doc", context="fedswarm.test.v1")
    with pytest.raises(VerificationError, match="signed by a CA other than"):
        pki.verify_document(b"doc", signature, ca=ca.certificate, context="fedswarm.test.v1")


def test_invalid_context_is_refused(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(ConfigurationError, match="context"):
        pki.sign_document(ca, b"doc", context="has\x00nul")


# ------------------------------------------------------------------------- independent check


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_openssl_agrees(tmp_path: Path, ca: pki.CertificateAuthority, member_cert: pki.Certificate) -> None:
    """OpenSSL's own path validation accepts the chain for both TLS roles and honours the CRL."""
    ca.certificate.save(tmp_path / "ca.pem")
    member_cert.save(tmp_path / "member.pem")
    pki.revoke_serial(ca, pki.create_crl(ca, now=NOW), member_cert.serial, now=NOW).save(tmp_path / "crl.pem")
    at = ["-attime", str(int(NOW.timestamp()))]
    for purpose in ("sslclient", "sslserver"):
        ok = subprocess.run(
            ["openssl", "verify", "-x509_strict", "-purpose", purpose, *at, "-CAfile", "ca.pem", "member.pem"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert ok.returncode == 0, ok.stdout + ok.stderr
    revoked = subprocess.run(
        ["openssl", "verify", "-crl_check", *at, "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "member.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert revoked.returncode != 0
    assert "revoked" in (revoked.stdout + revoked.stderr)
