"""Joining a running federation without the newcomer's private keys ever leaving it.

1. :func:`create_join_request` (newcomer): TLS and Ed25519 keys, an X25519 *join key* for receiving
   secrets, a CSR, and a request signed with the new Ed25519 key;
2. :func:`fedswarm.node.ca_operator.add_member` (operator): signs the CSR and bumps the manifest; the
   :class:`Admission` carries the certificate, the new publication and, in a CKKS federation, the public
   context and the secret context sealed to the join key (:func:`fedswarm.node.ckks_keys.seal_for_member`);
3. :func:`complete_join` (newcomer): installs all of it as a kit and deletes the join key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fedswarm.codec import canonical
from fedswarm.codec.canonical import CanonicalValue
from fedswarm.core.errors import VerificationError
from fedswarm.crypto import pki
from fedswarm.crypto.agreement import X25519_KEY_BYTES, generate_x25519
from fedswarm.crypto.files import KeyMaterialError, read_secret, write_secret
from fedswarm.crypto.signing import SigningKey, VerifyKey
from fedswarm.node.ckks_keys import CKKSMaterial, open_as_member
from fedswarm.node.manifest import MemberSpec, Role
from fedswarm.node.signed_manifest import SignedManifest
from fedswarm.node.startup_kit import (
    SIGNING_KEY_FILE,
    TLS_KEY_FILE,
    Kit,
    Publication,
    load_kit,
    write_kit,
)

__all__ = [
    "JOIN_CONTEXT",
    "JOIN_KEY_FILE",
    "Admission",
    "AdmittedCKKS",
    "JoinRequest",
    "admission_context",
    "complete_join",
    "create_join_request",
]

JOIN_CONTEXT = b"fedswarm.join-request.v1\x00"
JOIN_KEY_FILE = "join-key.secret"
_JOIN_KEY_LABEL = "fedswarm.join-key.v1"
_JOIN_FORMAT = "fedswarm.join-request/1"
_ADMISSION_FORMAT = "fedswarm.admission/1"


@dataclass(frozen=True)
class JoinRequest:
    """A prospective member's request: a CSR, its Ed25519 key, its X25519 join key, and where it will listen.

    The whole request is signed with the new Ed25519 key (proof that the requester holds it), and the
    CSR is self-signed with the TLS key; the private keys never leave the member.
    """

    csr: pki.CertificateRequest
    role: Role
    address: str
    signing_key: VerifyKey
    join_key: bytes
    signature: bytes

    def _signed_value(self) -> dict[str, str]:
        return {
            "format": _JOIN_FORMAT,
            "csr": self.csr.pem.decode("ascii"),
            "role": self.role,
            "address": self.address,
            "signing_key": self.signing_key.hex,
            "join_key": self.join_key.hex(),
        }

    def signed_bytes(self) -> bytes:
        """The bytes covered by :attr:`signature`."""
        return JOIN_CONTEXT + canonical.encode(self._signed_value())

    def verify(self) -> None:
        """Check the Ed25519 signature (raises :class:`VerificationError`)."""
        try:
            self.signing_key.verify(self.signed_bytes(), self.signature)
        except VerificationError as exc:
            raise VerificationError(f"join request for {self.csr.name!r}: {exc}") from None

    def to_bytes(self) -> bytes:
        """Canonical encoding, to send to the operator."""
        return canonical.encode({**self._signed_value(), "signature": self.signature})

    @classmethod
    def from_bytes(cls, data: bytes) -> JoinRequest:
        """Parse (not verify) an encoded request."""
        try:
            raw = canonical.decode(data)
            if raw.get("format") != _JOIN_FORMAT or not isinstance(raw.get("signature"), bytes):
                raise ValueError(f"not a {_JOIN_FORMAT} document")
            join_key = bytes.fromhex(raw["join_key"])
            if len(join_key) != X25519_KEY_BYTES:
                raise ValueError(f"join_key: {len(join_key)} bytes, expected {X25519_KEY_BYTES}")
            return cls(
                pki.CertificateRequest.from_pem(raw["csr"].encode("ascii"), source="join request csr"),
                raw["role"],
                raw["address"],
                VerifyKey.from_hex(raw["signing_key"]),
                join_key,
                raw["signature"],
            )
        except (ValueError, KeyError, AttributeError, TypeError, KeyMaterialError) as exc:
            raise VerificationError(f"join request: malformed ({exc})") from None


def create_join_request(
    directory: Path,
    *,
    name: str,
    role: Role,
    address: str,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    password: bytes | None = None,
) -> JoinRequest:
    """Member side of joining: create keys in ``directory`` (mode ``0600``) and a signed request.

    The certificate's SANs are the address host plus ``dns_names`` and ``ip_addresses``. The private
    keys, and the join key that will open the CKKS secret context of the admission, are encrypted with
    ``password`` when given.
    """
    spec = MemberSpec(name, role, address, tuple(dns_names), tuple(ip_addresses))
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tls_key = pki.TlsPrivateKey.generate()
    signing_key = SigningKey.generate()
    join_key = generate_x25519()
    dns, ips = spec.subject_names()
    csr = pki.create_csr(tls_key, name=name, dns_names=dns, ip_addresses=ips)
    unsigned = JoinRequest(csr, role, address, signing_key.public_key(), join_key.public, b"")
    request = replace(unsigned, signature=signing_key.sign(unsigned.signed_bytes()))
    tls_key.save(directory / TLS_KEY_FILE, password=password)
    signing_key.save(directory / SIGNING_KEY_FILE, password=password)
    write_secret(directory / JOIN_KEY_FILE, join_key.private, password=password, label=_JOIN_KEY_LABEL)
    return request


def admission_context(federation_id: str, member: str) -> bytes:
    """What a sealed CKKS secret context is bound to: this federation and this member."""
    return canonical.encode({"federation_id": federation_id, "member": member, "purpose": "fedswarm.ckks-admission"})


@dataclass(frozen=True, repr=False)
class AdmittedCKKS:
    """CKKS contexts for a newcomer: the public context, and the secret one sealed to its join key
    (empty for an aggregator, which never holds it)."""

    public: bytes
    sealed_secret: bytes

    def __repr__(self) -> str:
        return f"AdmittedCKKS({len(self.public)} public bytes, {len(self.sealed_secret)} sealed bytes)"


@dataclass(frozen=True)
class Admission:
    """The operator's answer to a :class:`JoinRequest`: the new certificate, the updated publication and,
    in a CKKS federation, the contexts."""

    certificate: pki.Certificate
    publication: Publication
    ckks: AdmittedCKKS | None = None

    def to_bytes(self) -> bytes:
        """Canonical encoding, to send back to the member (the CKKS secret inside opens for it only)."""
        value: dict[str, CanonicalValue] = {
            "format": _ADMISSION_FORMAT,
            "certificate": self.certificate.pem.decode("ascii"),
            "ca_certificate": self.publication.ca_certificate.pem.decode("ascii"),
            "crl": self.publication.crl.pem.decode("ascii"),
            "manifest": self.publication.manifest.to_bytes(),
        }
        if self.ckks is not None:
            value["ckks"] = {"public_context": self.ckks.public, "sealed_secret_context": self.ckks.sealed_secret}
        return canonical.encode(value)

    @classmethod
    def from_bytes(cls, data: bytes, *, expected_ca_fingerprint: str | None = None) -> Admission:
        """Parse an admission and verify its manifest signature against the CA it carries.

        The CA in an admission is trusted on first use unless ``expected_ca_fingerprint`` pins it.
        """
        try:
            raw = canonical.decode(data)
            if raw.get("format") != _ADMISSION_FORMAT:
                raise ValueError(f"not a {_ADMISSION_FORMAT} document")
            ca_cert = pki.Certificate.from_pem(raw["ca_certificate"].encode("ascii"), source="admission CA")
            cert = pki.Certificate.from_pem(raw["certificate"].encode("ascii"), source="admission certificate")
            crl = pki.RevocationList.from_pem(raw["crl"].encode("ascii"), source="admission CRL")
            ckks = None
            if "ckks" in raw:
                public, sealed = raw["ckks"]["public_context"], raw["ckks"]["sealed_secret_context"]
                if not isinstance(public, bytes) or not isinstance(sealed, bytes):
                    raise ValueError("ckks: the contexts must be byte strings")
                ckks = AdmittedCKKS(public, sealed)
        except (ValueError, KeyError, AttributeError, TypeError, KeyMaterialError) as exc:
            raise VerificationError(f"admission: malformed ({exc})") from None
        if expected_ca_fingerprint is not None and ca_cert.fingerprint != expected_ca_fingerprint.lower():
            raise VerificationError(f"admission: CA {ca_cert.fingerprint[:16]} is not the pinned CA (wrong CA)")
        manifest = SignedManifest.from_bytes(raw["manifest"], ca=ca_cert, source="admission manifest")
        return cls(cert, Publication(ca_cert, manifest, crl), ckks)


def complete_join(
    directory: Path,
    admission: Admission,
    *,
    password: bytes | None = None,
    now: dt.datetime | None = None,
) -> Kit:
    """Member side, last step: install the admission next to the keys from :func:`create_join_request`.

    In a CKKS federation the secret context is opened with the join key (unless this member is an
    aggregator) and written sealed with ``password``; the join key is deleted once the kit verifies.

    Raises
    ------
    VerificationError
        The admission does not fit the keys in ``directory`` (see :func:`~fedswarm.node.startup_kit.write_kit`),
        or its sealed CKKS secret context does not open with this member's join key.
    """
    directory = Path(directory)
    tls_key = pki.TlsPrivateKey.load(directory / TLS_KEY_FILE, password=password)
    signing_key = SigningKey.load(directory / SIGNING_KEY_FILE, password=password)
    name = admission.certificate.name
    manifest = admission.publication.manifest
    material = None
    if admission.ckks is not None:
        secret = None
        if admission.ckks.sealed_secret:
            join_key = read_secret(directory / JOIN_KEY_FILE, password=password, label=_JOIN_KEY_LABEL)
            secret = open_as_member(
                admission.ckks.sealed_secret,
                join_key,
                context=admission_context(manifest.manifest.federation_id, name),
                source="admission ckks.sealed_secret_context",
            )
        material = CKKSMaterial(admission.ckks.public, secret)
    write_kit(
        directory,
        member=name,
        manifest=manifest,
        ca_cert=admission.publication.ca_certificate,
        tls_cert=admission.certificate,
        tls_key=tls_key,
        signing_key=signing_key,
        crl=admission.publication.crl,
        ckks=material,
        password=password,
        now=now,
    )
    kit = load_kit(directory, password=password, now=now)
    (directory / JOIN_KEY_FILE).unlink(missing_ok=True)
    return kit
