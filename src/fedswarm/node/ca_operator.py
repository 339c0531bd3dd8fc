"""The operator's side of a federation: provisioning it, admitting members, revoking them.

:func:`provision` creates the federation CA and one kit per member::

    OUT/ca/            kept by the operator: ca-key.pem (0600), ca.pem, crl.pem, manifest.json,
                       manifest.sig, issued/<member>.pem, and in a CKKS federation ckks-public.ctx and
                       ckks-secret.ctx (0600, sealed with the CA password when there is one)
    OUT/<member>/      the member's kit (:mod:`fedswarm.node.startup_kit`)

:func:`provision` lists every member with ``since = 1`` (the founding members); :func:`add_member` signs
a newcomer's request (:mod:`fedswarm.node.joining`) and publishes manifest version + 1, listing the newcomer
with ``since`` that version; :func:`revoke_member` adds a member's serial to the CRL and moves its manifest
entry, unchanged, under ``revoked``.
Install either publication in every kit with :func:`~fedswarm.node.startup_kit.update_kit`.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fedswarm.core.errors import ConfigurationError, SpecError, VerificationError
from fedswarm.crypto import pki
from fedswarm.crypto.files import read_material
from fedswarm.crypto.signing import SigningKey
from fedswarm.node.ckks_keys import CKKSMaterial, generate_ckks_keys, read_ckks_files, seal_for_member, write_ckks_files
from fedswarm.node.joining import Admission, AdmittedCKKS, JoinRequest, admission_context
from fedswarm.node.manifest import (
    CA_DIR,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    Manifest,
    MemberEntry,
    MemberSpec,
    parse_ip,
    split_address,
    timestamp,
    utc_now,
)
from fedswarm.node.signed_manifest import SignedManifest, check_manifest_copy
from fedswarm.node.startup_kit import CA_FILE, CRL_FILE, Publication, write_kit, write_publication

if TYPE_CHECKING:
    from fedswarm.privacy.he.ckks import CKKSParams

__all__ = ["CA_KEY_FILE", "ISSUED_DIR", "Provisioned", "add_member", "provision", "revoke_member"]

CA_KEY_FILE, ISSUED_DIR = "ca-key.pem", "issued"


@dataclass(frozen=True)
class Provisioned:
    """Result of :func:`provision`: where things were written and what was published."""

    ca_dir: Path
    kits: Mapping[str, Path]
    publication: Publication


@dataclass(frozen=True)
class _Operator:
    ca: pki.CertificateAuthority
    manifest: SignedManifest
    crl: pki.RevocationList
    directory: Path


def _load_operator(out_dir: Path, password: bytes | None, now: dt.datetime) -> _Operator:
    ca_dir = Path(out_dir) / CA_DIR
    ca = pki.CertificateAuthority.load(ca_dir / CA_KEY_FILE, ca_dir / CA_FILE, password=password)
    try:
        pki.verify_ca_certificate(ca.certificate, now=now)
    except VerificationError as exc:
        raise VerificationError(f"{ca_dir / CA_FILE}: {exc}") from None
    signed = SignedManifest.from_bytes(
        read_material(ca_dir / SIGNATURE_FILE), ca=ca.certificate, source=str(ca_dir / SIGNATURE_FILE)
    )
    check_manifest_copy(ca_dir / MANIFEST_FILE, signed.manifest)
    crl = pki.RevocationList.load(ca_dir / CRL_FILE)
    try:
        pki.verify_crl(crl, ca=ca.certificate, now=now)
    except VerificationError as exc:
        raise VerificationError(f"{ca_dir / CRL_FILE}: {exc}") from None
    return _Operator(ca, signed, crl, ca_dir)


def _publish(operator: _Operator, manifest: Manifest, crl: pki.RevocationList) -> Publication:
    signed = SignedManifest.sign(manifest, operator.ca)
    write_publication(operator.directory, signed, crl)
    return Publication(operator.ca.certificate, signed, crl)


def provision(
    members: Sequence[MemberSpec],
    *,
    federation_name: str,
    out_dir: Path,
    validity_days: int,
    ca_validity_days: int = 3650,
    ca_password: bytes | None = None,
    kit_passwords: Mapping[str, bytes] | None = None,
    ckks: CKKSParams | None = None,
    now: dt.datetime | None = None,
) -> Provisioned:
    """Create a federation: its CA in ``out_dir/ca`` and one kit per member in ``out_dir/<name>``.

    Parameters
    ----------
    members
        The initial members (unique names).
    federation_name
        Human name of the federation; the CA is called ``"<federation_name> CA"``.
    out_dir
        Output directory; refused if it already holds a ``ca`` directory.
    validity_days
        Lifetime of member certificates.
    ca_validity_days
        Lifetime of the CA certificate (and of the initial CRL); at least ``validity_days``.
    ca_password, kit_passwords
        Encrypt the CA key, and each member's private keys (by member name), when given; the CKKS
        secret context is sealed with the same passwords.
    ckks
        Generate the federation's CKKS contexts with these parameters (``privacy.secure_aggregation =
        "ckks"``): the public context goes into every kit, the secret context into every kit but an
        aggregator's, and both into ``out_dir/ca`` for members admitted later.
    now
        Issuance time (defaults to the current time).

    Raises
    ------
    SpecError
        No members, duplicate names, or a password for an unknown member.
    ConfigurationError
        ``out_dir`` already provisioned, ``validity_days`` exceeds ``ca_validity_days``, or ``ckks`` is
        given and TenSEAL is not installed.
    """
    out_dir = Path(out_dir)
    moment = utc_now(now)
    passwords = dict(kit_passwords or {})
    names = [spec.name for spec in members]
    if not names:
        raise SpecError("members", "at least one member is required")
    duplicates = sorted({n for n in names if names.count(n) > 1} | _case_clashes(names))
    if duplicates:
        raise SpecError("members.name", f"duplicate member names {duplicates}")
    if set(passwords) - set(names):
        raise SpecError("kit_passwords", f"passwords for unknown members {sorted(set(passwords) - set(names))}")
    if validity_days > ca_validity_days:
        raise ConfigurationError(f"validity_days: {validity_days} exceeds ca_validity_days {ca_validity_days}")
    if (out_dir / CA_DIR).exists():
        raise ConfigurationError(f"out_dir: {out_dir / CA_DIR} exists; refusing to overwrite a federation")

    ckks_keys, material = generate_ckks_keys(ckks) if ckks is not None else (None, None)
    ca = pki.create_ca(f"{federation_name} CA", validity_days=ca_validity_days, now=moment)
    crl = pki.create_crl(ca, number=1, now=moment)
    issued: dict[str, tuple[MemberSpec, pki.TlsPrivateKey, pki.Certificate, SigningKey]] = {}
    for spec in sorted(members, key=lambda s: s.name):
        tls_key = pki.TlsPrivateKey.generate()
        dns, ips = spec.subject_names()
        cert = pki.issue_certificate(
            ca,
            tls_key.public_key(),
            name=spec.name,
            dns_names=dns,
            ip_addresses=ips,
            validity_days=validity_days,
            now=moment,
        )
        issued[spec.name] = (spec, tls_key, cert, SigningKey.generate())
    manifest = Manifest(
        federation_id=secrets.token_hex(16),
        federation_name=federation_name,
        created=timestamp(moment),
        version=1,
        ca_fingerprint=ca.certificate.fingerprint,
        members=tuple(
            MemberEntry(spec.name, spec.role, spec.address, cert.fingerprint, signing.public_key().hex, since=1)
            for spec, _, cert, signing in issued.values()
        ),
        ckks=ckks_keys,
    )
    ca_dir = out_dir / CA_DIR
    (ca_dir / ISSUED_DIR).mkdir(mode=0o700, parents=True)
    ca.save(ca_dir / CA_KEY_FILE, ca_dir / CA_FILE, password=ca_password)
    if material is not None:
        write_ckks_files(ca_dir, material, password=ca_password)
    operator = _Operator(ca, SignedManifest.sign(manifest, ca), crl, ca_dir)
    publication = _publish(operator, manifest, crl)
    kits: dict[str, Path] = {}
    for name, (spec, tls_key, cert, signing) in issued.items():
        cert.save(ca_dir / ISSUED_DIR / f"{name}.pem")
        kits[name] = out_dir / name
        write_kit(
            kits[name],
            member=name,
            manifest=publication.manifest,
            ca_cert=ca.certificate,
            tls_cert=cert,
            tls_key=tls_key,
            signing_key=signing,
            crl=crl,
            ckks=_for_role(material, spec.role),
            password=passwords.get(name),
            now=moment,
        )
    return Provisioned(ca_dir, kits, publication)


def _for_role(material: CKKSMaterial | None, role: str) -> CKKSMaterial | None:
    """What a kit of ``role`` holds: an aggregator never gets the secret context."""
    if material is None or role != "aggregator":
        return material
    return CKKSMaterial(material.public, None)


def _case_clashes(names: Sequence[str]) -> set[str]:
    lowered = [n.lower() for n in names]
    return {n for n in names if lowered.count(n.lower()) > 1}


def add_member(
    out_dir: Path,
    request: JoinRequest,
    *,
    validity_days: int,
    ca_password: bytes | None = None,
    now: dt.datetime | None = None,
) -> Admission:
    """Operator side of joining: admit the member of ``request`` into the federation in ``out_dir``.

    Verifies the request's Ed25519 signature and the CSR's self-signature, refuses a name that is or
    was in use, checks that the address host is covered by the requested SANs, issues the certificate,
    records it in ``out_dir/ca/issued``, and publishes manifest version + 1 listing the newcomer with
    ``since`` = that version. In a CKKS federation the
    admission carries the public context and (unless the newcomer is an aggregator) the secret context
    sealed to the request's join key; ``ca_password`` also opens the operator's sealed copy of it.

    Raises
    ------
    VerificationError
        A signature of the request or CSR does not verify.
    ConfigurationError
        The name collides, the address is not covered by the certificate, or the request is invalid.
    """
    moment = utc_now(now)
    request.verify()
    operator = _load_operator(out_dir, ca_password, moment)
    current = operator.manifest.manifest
    spec = MemberSpec(request.csr.name, request.role, request.address)
    host, _ = split_address(request.address)
    covered = {d.lower() for d in request.csr.dns_names} | set(request.csr.ip_addresses)
    host_ip = parse_ip(host)
    if (str(host_ip) if host_ip is not None else host.lower()) not in covered:
        raise ConfigurationError(
            f"join request for {spec.name!r}: address host {host!r} is not among the requested SANs {sorted(covered)}"
        )
    if spec.name.lower() in {n.lower() for n in current.names}:
        raise ConfigurationError(f"join request: member name {spec.name!r} is already taken")
    cert = pki.sign_csr(operator.ca, request.csr, validity_days=validity_days, taken_names=current.names, now=moment)
    version = current.version + 1
    entry = MemberEntry(spec.name, spec.role, spec.address, cert.fingerprint, request.signing_key.hex, since=version)
    if any(e.signing_key == entry.signing_key for e in (*current.members, *current.revoked)):
        raise ConfigurationError(f"join request for {spec.name!r}: signing key already belongs to a member")
    manifest = replace(current, version=version, members=tuple(sorted((*current.members, entry), key=lambda e: e.name)))
    admitted = _admitted_ckks(operator, request, spec, ca_password)
    cert.save(operator.directory / ISSUED_DIR / f"{spec.name}.pem")
    return Admission(cert, _publish(operator, manifest, operator.crl), admitted)


def _admitted_ckks(
    operator: _Operator, request: JoinRequest, spec: MemberSpec, ca_password: bytes | None
) -> AdmittedCKKS | None:
    current = operator.manifest.manifest
    material = read_ckks_files(operator.directory, current.ckks, holds_secret=True, password=ca_password)
    if material is None:
        return None
    if spec.role == "aggregator" or material.secret is None:
        return AdmittedCKKS(material.public, b"")
    context = admission_context(current.federation_id, spec.name)
    return AdmittedCKKS(material.public, seal_for_member(material.secret, request.join_key, context=context))


def revoke_member(
    out_dir: Path,
    name: str,
    *,
    ca_password: bytes | None = None,
    now: dt.datetime | None = None,
) -> Publication:
    """Revoke ``name``: add its certificate serial to the CRL and move its manifest entry under ``revoked``.

    The new CRL (number + 1) and manifest (version + 1, ``name``'s entry, its ``since`` included, listed
    under ``revoked``) are written to
    ``out_dir/ca`` and returned; install them in every kit with :func:`~fedswarm.node.startup_kit.update_kit`.
    The CKKS keys are not rotated: the revoked member keeps the secret context it holds.

    Raises
    ------
    ConfigurationError
        ``name`` is not a current member.
    """
    moment = utc_now(now)
    operator = _load_operator(out_dir, ca_password, moment)
    current = operator.manifest.manifest
    entry = next((e for e in current.members if e.name == name), None)
    if entry is None:
        state = "was already revoked" if name in current.revoked_names else "is not a member"
        raise ConfigurationError(f"revoke_member: {name!r} {state}")
    cert = pki.Certificate.load(operator.directory / ISSUED_DIR / f"{name}.pem")
    crl = pki.revoke_serial(operator.ca, operator.crl, cert.serial, now=moment)
    manifest = replace(
        current,
        version=current.version + 1,
        members=tuple(e for e in current.members if e.name != name),
        revoked=tuple(sorted((*current.revoked, entry), key=lambda e: e.name)),
    )
    return _publish(operator, manifest, crl)
