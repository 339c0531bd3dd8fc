"""A member's startup kit on disk: writing it, loading and verifying it, installing new publications.

:func:`load_kit` checks at start, failing closed with a :class:`~fedswarm.core.errors.VerificationError`
that names the file: the CA certificate (self-signed, valid, optionally pinned by fingerprint), the
manifest signature and its CA fingerprint, edits of ``manifest.json``, the CRL (CA signature,
freshness), the member's TLS certificate (issuer, validity, usages, not revoked), that the certificate,
TLS key and Ed25519 key match the member's manifest entry, and the CKKS contexts against the manifest's
digests (:mod:`fedswarm.node.ckks_keys`). Unreadable files raise
:class:`~fedswarm.crypto.files.KeyMaterialError` (missing, truncated, wrong password, ...).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fedswarm.core.errors import VerificationError
from fedswarm.crypto import pki
from fedswarm.crypto.files import check_pem, read_material, write_public
from fedswarm.crypto.signing import SigningKey
from fedswarm.node.ckks_keys import CKKSMaterial, check_ckks_material, read_ckks_files, write_ckks_files
from fedswarm.node.manifest import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    Manifest,
    MemberEntry,
    utc_now,
)
from fedswarm.node.signed_manifest import SignedManifest, check_manifest_copy, manifest_json

__all__ = [
    "CA_FILE",
    "CRL_FILE",
    "SIGNING_KEY_FILE",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "Kit",
    "Publication",
    "ckks_material",
    "kit_is_encrypted",
    "load_kit",
    "reload_kit",
    "update_kit",
    "write_kit",
    "write_publication",
]

CA_FILE, CRL_FILE = "ca.pem", "crl.pem"
TLS_CERT_FILE, TLS_KEY_FILE, SIGNING_KEY_FILE = "tls.pem", "tls-key.pem", "signing-key.pem"


@dataclass(frozen=True)
class Kit:
    """A verified startup kit: everything a node needs to join the federation.

    ``ckks`` holds the federation's CKKS contexts when it was provisioned with them (the secret context
    only in members' kits, never in a star topology's aggregator's).
    """

    directory: Path
    name: str
    signed_manifest: SignedManifest
    ca_certificate: pki.Certificate
    crl: pki.RevocationList
    tls_certificate: pki.Certificate
    tls_key: pki.TlsPrivateKey
    signing_key: SigningKey = field(repr=False)
    ckks: CKKSMaterial | None = field(default=None, repr=False)

    @property
    def manifest(self) -> Manifest:
        """The CA-signed manifest."""
        return self.signed_manifest.manifest

    @property
    def entry(self) -> MemberEntry:
        """This member's manifest entry."""
        return self.manifest.member(self.name)


@contextmanager
def _about(filename: str) -> Iterator[None]:
    """Prefix the message of a :class:`VerificationError` raised inside the block with ``filename``."""
    try:
        yield
    except VerificationError as exc:
        raise VerificationError(f"{filename}: {exc}") from None


def _verify_kit(
    *,
    name: str,
    signed: SignedManifest,
    ca_cert: pki.Certificate,
    crl: pki.RevocationList,
    tls_cert: pki.Certificate,
    tls_key: pki.TlsPrivateKey,
    signing_key: SigningKey,
    now: dt.datetime,
) -> None:
    with _about(CRL_FILE):
        pki.verify_crl(crl, ca=ca_cert, now=now)
    with _about(TLS_CERT_FILE):
        pki.verify_certificate(tls_cert, ca=ca_cert, crl=crl, now=now, expected_name=name)
    entry = signed.manifest.member(name)
    if entry.tls_fingerprint != tls_cert.fingerprint:
        raise VerificationError(
            f"{TLS_CERT_FILE}: fingerprint {tls_cert.fingerprint[:16]} does not match the manifest entry of "
            f"{name!r} (tls_fingerprint {entry.tls_fingerprint[:16]})"
        )
    with _about(TLS_KEY_FILE):
        pki.check_key_pair(tls_cert, tls_key)
    public = signing_key.public_key().hex
    if public != entry.signing_key:
        raise VerificationError(
            f"{SIGNING_KEY_FILE}: public key {public[:16]} does not match the manifest entry of {name!r} "
            f"(signing_key {entry.signing_key[:16]})"
        )


def _holds_secret(manifest: Manifest, name: str) -> bool:
    """Whether ``name``'s kit holds the CKKS secret context: everyone but an aggregator does."""
    return manifest.member(name).role != "aggregator"


def write_kit(
    directory: Path,
    *,
    member: str,
    manifest: SignedManifest,
    ca_cert: pki.Certificate,
    tls_cert: pki.Certificate,
    tls_key: pki.TlsPrivateKey,
    signing_key: SigningKey,
    crl: pki.RevocationList,
    ckks: CKKSMaterial | None = None,
    password: bytes | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Write ``member``'s kit into ``directory`` after checking that it would load.

    Private keys and the CKKS secret context are written with mode ``0600`` (encrypted with ``password``
    when given), everything else ``0644``; each file is replaced atomically. ``ckks`` is required when
    the manifest lists CKKS keys, and must then hold the secret context unless ``member`` is an aggregator.

    Raises
    ------
    VerificationError
        The pieces do not belong together (same checks as :func:`load_kit`): nothing is written.
    """
    moment = utc_now(now)
    directory = Path(directory)
    with _about(CA_FILE):
        pki.verify_ca_certificate(ca_cert, now=moment)
    SignedManifest.from_bytes(manifest.to_bytes(), ca=ca_cert)
    _verify_kit(
        name=member,
        signed=manifest,
        ca_cert=ca_cert,
        crl=crl,
        tls_cert=tls_cert,
        tls_key=tls_key,
        signing_key=signing_key,
        now=moment,
    )
    holds_secret = _holds_secret(manifest.manifest, member)
    check_ckks_material(ckks, manifest.manifest.ckks, holds_secret=holds_secret, directory=directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tls_key.save(directory / TLS_KEY_FILE, password=password)
    signing_key.save(directory / SIGNING_KEY_FILE, password=password)
    tls_cert.save(directory / TLS_CERT_FILE)
    ca_cert.save(directory / CA_FILE)
    if ckks is not None:
        write_ckks_files(directory, ckks, password=password)
    write_publication(directory, manifest, crl)


def write_publication(directory: Path, manifest: SignedManifest, crl: pki.RevocationList) -> None:
    """Write ``manifest.sig``, its readable copy ``manifest.json`` and ``crl.pem`` into ``directory``."""
    write_public(directory / SIGNATURE_FILE, manifest.to_bytes())
    write_public(directory / MANIFEST_FILE, manifest_json(manifest.manifest))
    crl.save(directory / CRL_FILE)


@dataclass(frozen=True)
class _PublicPart:
    ca_cert: pki.Certificate
    signed: SignedManifest
    crl: pki.RevocationList
    tls_cert: pki.Certificate


def _load_public(directory: Path, moment: dt.datetime, expected_ca_fingerprint: str | None) -> _PublicPart:
    ca_cert = pki.Certificate.load(directory / CA_FILE)
    if expected_ca_fingerprint is not None and ca_cert.fingerprint != expected_ca_fingerprint.lower():
        raise VerificationError(
            f"{directory / CA_FILE}: fingerprint {ca_cert.fingerprint} is not the pinned CA "
            f"{expected_ca_fingerprint.lower()} (wrong CA)"
        )
    with _about(str(directory / CA_FILE)):
        pki.verify_ca_certificate(ca_cert, now=moment)
    signed = SignedManifest.from_bytes(
        read_material(directory / SIGNATURE_FILE), ca=ca_cert, source=str(directory / SIGNATURE_FILE)
    )
    check_manifest_copy(directory / MANIFEST_FILE, signed.manifest)
    crl = pki.RevocationList.load(directory / CRL_FILE)
    return _PublicPart(ca_cert, signed, crl, pki.Certificate.load(directory / TLS_CERT_FILE))


def _verified(
    directory: Path,
    part: _PublicPart,
    *,
    tls_key: pki.TlsPrivateKey,
    signing_key: SigningKey,
    ckks: CKKSMaterial | None,
    moment: dt.datetime,
) -> Kit:
    try:
        _verify_kit(
            name=part.tls_cert.name,
            signed=part.signed,
            ca_cert=part.ca_cert,
            crl=part.crl,
            tls_cert=part.tls_cert,
            tls_key=tls_key,
            signing_key=signing_key,
            now=moment,
        )
    except VerificationError as exc:
        raise VerificationError(f"kit {directory}: {exc}") from None
    holds_secret = _holds_secret(part.signed.manifest, part.tls_cert.name)
    check_ckks_material(ckks, part.signed.manifest.ckks, holds_secret=holds_secret, directory=directory)
    return Kit(
        directory, part.tls_cert.name, part.signed, part.ca_cert, part.crl, part.tls_cert, tls_key, signing_key, ckks
    )


def load_kit(
    directory: Path,
    *,
    password: bytes | None = None,
    now: dt.datetime | None = None,
    expected_ca_fingerprint: str | None = None,
) -> Kit:
    """Read and verify a startup kit.

    Parameters
    ----------
    directory
        The kit directory.
    password
        Decrypts the private keys (and the CKKS secret context) when they were written with one.
    now
        The time to check validity at (defaults to the current time).
    expected_ca_fingerprint
        Pins the CA: the SHA-256 fingerprint of ``ca.pem`` learned out of band. Without it the kit's
        own ``ca.pem`` is the trust anchor, so a wholesale replaced kit is not detected.

    Raises
    ------
    VerificationError
        Any check fails; the message names the file and the reason (see the module docstring).
    KeyMaterialError
        A file is missing, empty, truncated, not PEM, or a key has the wrong password.
    """
    directory = Path(directory)
    moment = utc_now(now)
    part = _load_public(directory, moment, expected_ca_fingerprint)
    tls_key = pki.TlsPrivateKey.load(directory / TLS_KEY_FILE, password=password)
    signing_key = SigningKey.load(directory / SIGNING_KEY_FILE, password=password)
    name = part.tls_cert.name
    keys = part.signed.manifest.ckks
    try:
        holds_secret = _holds_secret(part.signed.manifest, name)
    except VerificationError:
        holds_secret = True  # not in the manifest: _verified refuses the kit with the reason
    ckks = read_ckks_files(directory, keys, holds_secret=holds_secret, password=password)
    return _verified(directory, part, tls_key=tls_key, signing_key=signing_key, ckks=ckks, moment=moment)


def reload_kit(kit: Kit, *, now: dt.datetime | None = None) -> Kit:
    """Verify the kit's current public files (manifest, CRL, certificates) with the keys already in memory.

    A running node calls this when its kit's manifest or CRL changed (a member admitted or revoked): the
    private keys and CKKS contexts were read and verified at start, so no password is needed again.

    Raises
    ------
    VerificationError, KeyMaterialError
        As :func:`load_kit`; the CA must be the one ``kit`` was loaded with.
    """
    moment = utc_now(now)
    part = _load_public(kit.directory, moment, kit.ca_certificate.fingerprint)
    return _verified(
        kit.directory, part, tls_key=kit.tls_key, signing_key=kit.signing_key, ckks=kit.ckks, moment=moment
    )


def kit_is_encrypted(directory: Path) -> bool:
    """Whether the kit's private keys are encrypted with a password (judged by ``tls-key.pem``).

    Raises
    ------
    KeyMaterialError
        ``tls-key.pem`` is missing, unreadable or not a PEM private key.
    """
    path = Path(directory) / TLS_KEY_FILE
    label = check_pem(read_material(path), labels=("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"), source=str(path))
    return label == "ENCRYPTED PRIVATE KEY"


def ckks_material(kit_dir: Path, *, password: bytes | None = None) -> tuple[bytes, bytes | None] | None:
    """The federation's CKKS contexts from a kit, verified: ``(public, secret or None)``, or ``None``.

    The whole kit is verified first (:func:`load_kit`), then the contexts against the digests in its
    CA-signed manifest. The secret context is ``None`` in a star topology's aggregator's kit.

    Parameters
    ----------
    kit_dir
        The kit directory.
    password
        The kit password, when its keys were written with one.

    Returns
    -------
    tuple or None
        ``(public context bytes, secret context bytes or None)``; ``None`` when the federation was not
        provisioned with CKKS keys.

    Raises
    ------
    VerificationError, KeyMaterialError
        As :func:`load_kit`, naming the file (a substituted context, a wrong password, ...).
    """
    material = load_kit(Path(kit_dir), password=password).ckks
    return None if material is None else (material.public, material.secret)


# ------------------------------------------------------------------------------------ publication


@dataclass(frozen=True)
class Publication:
    """What the operator publishes to every member after a change: CA certificate, manifest, CRL."""

    ca_certificate: pki.Certificate
    manifest: SignedManifest
    crl: pki.RevocationList


def update_kit(directory: Path, publication: Publication, *, now: dt.datetime | None = None) -> None:
    """Install a newer manifest and CRL into an existing kit.

    Raises
    ------
    VerificationError
        The publication's CA differs from the kit's, its signatures do not verify, it is not newer than
        what is installed (a lower manifest version or CRL number: a rollback), it lists other CKKS
        keys than the installed manifest (the kit's contexts would no longer verify), or it rewrites the
        history of the members (see :func:`_check_members_kept`).
    """
    directory = Path(directory)
    moment = utc_now(now)
    ca_cert = pki.Certificate.load(directory / CA_FILE)
    if publication.ca_certificate != ca_cert:
        raise VerificationError(f"publication: issued by CA {publication.ca_certificate.fingerprint[:16]}, not ca.pem")
    incoming = SignedManifest.from_bytes(publication.manifest.to_bytes(), ca=ca_cert, source="publication")
    with _about("publication CRL"):
        pki.verify_crl(publication.crl, ca=ca_cert, now=moment)
    current = SignedManifest.from_bytes(read_material(directory / SIGNATURE_FILE), ca=ca_cert)
    installed_crl = pki.RevocationList.load(directory / CRL_FILE)
    if incoming.manifest.federation_id != current.manifest.federation_id:
        raise VerificationError(
            f"publication: federation {incoming.manifest.federation_id} is not this kit's "
            f"{current.manifest.federation_id}"
        )
    if incoming.manifest.version <= current.manifest.version:
        raise VerificationError(
            f"publication: manifest version {incoming.manifest.version} is not newer than the installed "
            f"version {current.manifest.version} (rollback refused)"
        )
    if publication.crl.number < installed_crl.number:
        raise VerificationError(
            f"publication: CRL number {publication.crl.number} is older than the installed "
            f"{installed_crl.number} (rollback refused)"
        )
    if incoming.manifest.ckks != current.manifest.ckks:
        raise VerificationError(
            "publication: its manifest lists other CKKS keys than the installed one (ckks changed); the kit's "
            "CKKS contexts would no longer verify"
        )
    _check_members_kept(current.manifest, incoming.manifest)
    write_publication(directory, incoming, publication.crl)


def _check_members_kept(current: Manifest, incoming: Manifest) -> None:
    """A newer manifest keeps every member of the installed one, current or revoked, with its signing key and
    ``since`` (so the founding members never change), and never lists a revoked member again."""
    listed = {e.name: e for e in (*incoming.members, *incoming.revoked)}
    for entry in (*current.members, *current.revoked):
        kept = listed.get(entry.name)
        if kept is None:
            raise VerificationError(
                f"publication: its manifest drops member {entry.name!r} (neither listed nor revoked)"
            )
        for attribute in ("signing_key", "since"):
            if getattr(kept, attribute) != getattr(entry, attribute):
                raise VerificationError(
                    f"publication: members[{entry.name}].{attribute} is {getattr(kept, attribute)!r}, the "
                    f"installed manifest has {getattr(entry, attribute)!r}"
                )
    revived = sorted(current.revoked_names & {e.name for e in incoming.members})
    if revived:
        raise VerificationError(f"publication: its manifest lists the revoked members {revived} again")
