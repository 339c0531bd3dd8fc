"""Startup kits: what provisioning hands each member, and the checks a node runs before it starts.

Provisioning (:func:`provision`) creates the federation CA and one kit per member::

    OUT/ca/            kept by the operator: ca-key.pem (0600), ca.pem, crl.pem, manifest.json,
                       manifest.sig, issued/<member>.pem
    OUT/<member>/      the member's kit: ca.pem, crl.pem, manifest.json, manifest.sig, tls.pem,
                       tls-key.pem (0600), signing-key.pem (0600)

The **manifest** lists the federation (id, name, creation time, revision ``version``, CA fingerprint) and
every member (name, role, ``host:port`` address, TLS certificate fingerprint, Ed25519 public key). The CA
signs its canonical encoding (:mod:`fedswarm.codec.canonical`) under the context ``fedswarm.manifest.v1``.

How an edited manifest is named, honestly. A signature can only say "these bytes were not signed". So
``manifest.sig`` is a *signed envelope* that embeds the CA-signed copy of the manifest next to the
signature, and ``manifest.json`` is a readable copy for people. :func:`load_kit` first checks the
envelope's signature; if it fails, nothing in the envelope is trusted and the error says so (it cannot
say which field changed, only that the envelope or its CA changed). If it holds, the signed copy is
authoritative: ``manifest.json`` is compared with it value by value and any difference is reported by
field (``members[bob].address: signed '10.0.0.2:7000', manifest.json has '10.6.6.6:7000'``), and the
kit is refused. The node never reads ``manifest.json`` otherwise, so editing it cannot change behaviour.

:func:`load_kit` checks at start, failing closed with a :class:`~fedswarm.core.errors.VerificationError`
that names the file: the CA certificate (self-signed, valid, optionally pinned by fingerprint), the
manifest signature and its CA fingerprint, the edits above, the CRL (CA signature, freshness), the
member's TLS certificate (issuer, validity, usages, not revoked), that the certificate, TLS key and
Ed25519 key match the member's manifest entry. Unreadable files raise
:class:`~fedswarm.crypto.files.KeyMaterialError` (missing, truncated, wrong password, ...).

New members join without their keys ever leaving them: :func:`create_join_request` (member side: keys,
CSR, a request signed with the new Ed25519 key) then :func:`add_member` (operator: signs the CSR, bumps
the manifest) then :func:`complete_join` (member: installs certificate and manifest). :func:`revoke_member`
adds the member's serial to the CRL and drops it from the manifest; :func:`update_kit` installs such a
publication in every kit, refusing a rollback to an older manifest or CRL.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from fedswarm.codec import canonical
from fedswarm.core.errors import ConfigurationError, SpecError, VerificationError
from fedswarm.crypto import pki
from fedswarm.crypto.files import KeyMaterialError, read_material, write_public
from fedswarm.crypto.signing import SigningKey, VerifyKey

__all__ = [
    "Admission",
    "JoinRequest",
    "Kit",
    "Manifest",
    "MemberEntry",
    "MemberSpec",
    "Provisioned",
    "Publication",
    "Role",
    "SignedManifest",
    "add_member",
    "complete_join",
    "create_join_request",
    "load_kit",
    "provision",
    "revoke_member",
    "update_kit",
    "write_kit",
]

Role = Literal["member", "aggregator"]

MANIFEST_CONTEXT = "fedswarm.manifest.v1"
JOIN_CONTEXT = b"fedswarm.join-request.v1\x00"
_MANIFEST_FORMAT = "fedswarm.manifest/1"
_ENVELOPE_FORMAT = "fedswarm.signed-manifest/1"
_JOIN_FORMAT = "fedswarm.join-request/1"
_ADMISSION_FORMAT = "fedswarm.admission/1"

CA_FILE, CRL_FILE, MANIFEST_FILE, SIGNATURE_FILE = "ca.pem", "crl.pem", "manifest.json", "manifest.sig"
TLS_CERT_FILE, TLS_KEY_FILE, SIGNING_KEY_FILE = "tls.pem", "tls-key.pem", "signing-key.pem"
CA_KEY_FILE, ISSUED_DIR, CA_DIR = "ca-key.pem", "issued", "ca"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FEDERATION_ID = re.compile(r"^[0-9a-f]{32}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# ------------------------------------------------------------------------------------ validation


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str) or not _NAME.match(name):
        return f"{name!r} must be 1-63 characters of letters, digits, '.', '_', '-', starting alphanumeric"
    if name.lower() == CA_DIR:
        return f"{name!r} is reserved for the operator's CA directory"
    return None


def _split_address(address: object) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets) to ``(host, port)``; ``ValueError`` with the reason."""
    if not isinstance(address, str):
        raise ValueError(f"{address!r} is not a string")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{address!r} must be host:port with a port in 1..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not isinstance(_ip(host), ipaddress.IPv6Address):
            raise ValueError(f"{address!r}: only IPv6 addresses go in brackets")
    elif ":" in host:
        raise ValueError(f"{address!r}: write IPv6 hosts in brackets, e.g. [::1]:7000")
    if not host:
        raise ValueError(f"{address!r} has no host")
    return host, int(port)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now(now: dt.datetime | None) -> dt.datetime:
    return dt.datetime.now(dt.UTC) if now is None else now


# -------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class MemberSpec:
    """One member to provision.

    Parameters
    ----------
    name
        The member's identity (certificate CN, directory name): letters, digits, ``._-``.
    role
        ``"member"`` or ``"aggregator"``.
    address
        Where peers reach it, ``host:port``; the host becomes a DNS or IP SAN of its certificate.
    dns_names, ip_addresses
        Extra subject alternative names.
    """

    name: str
    role: Role
    address: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = _name_problem(self.name)
        if problem:
            raise SpecError("members.name", problem)
        if self.role not in get_args(Role):
            raise SpecError(f"members.{self.name}.role", f"{self.role!r} is not one of {get_args(Role)}")
        try:
            _split_address(self.address)
        except ValueError as exc:
            raise SpecError(f"members.{self.name}.address", str(exc)) from None

    def subject_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(dns_names, ip_addresses)`` for the certificate: the address host plus the extras."""
        host, _ = _split_address(self.address)
        ip = _ip(host)
        dns = self.dns_names if ip is not None or host in self.dns_names else (host, *self.dns_names)
        ips = self.ip_addresses
        if ip is not None and str(ip) not in ips:
            ips = (str(ip), *ips)
        return dns, ips


@dataclass(frozen=True)
class MemberEntry:
    """A member as the manifest lists it."""

    name: str
    role: Role
    address: str
    tls_fingerprint: str
    signing_key: str

    def verify_key(self) -> VerifyKey:
        """The member's Ed25519 public key."""
        return VerifyKey.from_hex(self.signing_key)

    def to_value(self) -> dict[str, str]:
        """Canonical value (a JSON object)."""
        return {
            "address": self.address,
            "name": self.name,
            "role": self.role,
            "signing_key": self.signing_key,
            "tls_fingerprint": self.tls_fingerprint,
        }


@dataclass(frozen=True)
class Manifest:
    """The CA-signed description of the federation.

    ``version`` is the manifest's revision: provisioning writes 1 and every :func:`add_member` or
    :func:`revoke_member` increments it, so a node can refuse to roll back to an older manifest.
    ``revoked`` keeps the names of revoked members, which are never reused.
    """

    federation_id: str
    federation_name: str
    created: str
    version: int
    ca_fingerprint: str
    members: tuple[MemberEntry, ...]
    revoked: tuple[str, ...] = ()

    def member(self, name: str) -> MemberEntry:
        """The entry of ``name``.

        Raises
        ------
        VerificationError
            ``name`` is not a current member (the message says when it was revoked).
        """
        for entry in self.members:
            if entry.name == name:
                return entry
        if name in self.revoked:
            raise VerificationError(f"manifest version {self.version}: member {name!r} was revoked")
        raise VerificationError(f"manifest version {self.version}: {name!r} is not a member")

    @property
    def names(self) -> frozenset[str]:
        """Names of current and revoked members (none of them can be issued again)."""
        return frozenset(e.name for e in self.members) | frozenset(self.revoked)

    def to_value(self) -> dict[str, Any]:
        """Canonical value: what the CA signs."""
        return {
            "ca_fingerprint": self.ca_fingerprint,
            "created": self.created,
            "federation_id": self.federation_id,
            "federation_name": self.federation_name,
            "format": _MANIFEST_FORMAT,
            "members": [entry.to_value() for entry in self.members],
            "revoked": list(self.revoked),
            "version": self.version,
        }

    def canonical_bytes(self) -> bytes:
        """:func:`fedswarm.codec.canonical.encode` of :meth:`to_value`."""
        return canonical.encode(self.to_value())

    @classmethod
    def from_value(cls, value: object, *, source: str) -> Manifest:
        """Validate a decoded manifest value.

        Raises
        ------
        VerificationError
            A missing, extra or malformed field (named with its path), or a value not in normal form.
        """
        problems: list[str] = []
        manifest = _parse_manifest(value, problems)
        if manifest is None or problems:
            raise VerificationError(f"{source}: malformed manifest: {'; '.join(problems)}")
        if manifest.to_value() != value:  # pragma: no cover - _parse_manifest rebuilds exactly what it read
            raise VerificationError(f"{source}: manifest is not in normal form")
        return manifest


def _parse_manifest(value: object, problems: list[str]) -> Manifest | None:
    fields = {
        "ca_fingerprint",
        "created",
        "federation_id",
        "federation_name",
        "format",
        "members",
        "revoked",
        "version",
    }
    if not isinstance(value, dict):
        problems.append("not a JSON object")
        return None
    if set(value) != fields:
        missing, extra = sorted(fields - set(value)), sorted(set(value) - fields)
        problems.append(f"missing fields {missing}" if missing else f"unexpected fields {extra}")
        return None
    if value["format"] != _MANIFEST_FORMAT:
        problems.append(f"format: {value['format']!r}, expected {_MANIFEST_FORMAT!r}")
    _expect(value, "federation_id", _FEDERATION_ID, problems)
    _expect(value, "ca_fingerprint", _HEX64, problems)
    _expect(value, "created", _TIMESTAMP, problems)
    if not isinstance(value["federation_name"], str) or not value["federation_name"].strip():
        problems.append("federation_name: must be a non-empty string")
    version = value["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append(f"version: {version!r} must be a positive integer")
    members: list[MemberEntry] = []
    raw_members = value["members"]
    if not isinstance(raw_members, list):
        problems.append("members: must be a list")
        raw_members = []
    for i, raw in enumerate(raw_members):
        entry = _parse_entry(raw, f"members[{i}]", problems)
        if entry is not None:
            members.append(entry)
    revoked = value["revoked"]
    if not isinstance(revoked, list) or not all(isinstance(n, str) for n in revoked):
        problems.append("revoked: must be a list of names")
        revoked = []
    for attribute in ("name", "tls_fingerprint", "signing_key"):
        seen = [getattr(e, attribute) for e in members]
        if len(set(seen)) != len(seen):
            problems.append(f"members: duplicate {attribute}")
    if [e.name for e in members] != sorted(e.name for e in members) or revoked != sorted(revoked):
        problems.append("members and revoked must be sorted by name")
    if set(revoked) & {e.name for e in members}:
        problems.append(f"revoked: {sorted(set(revoked) & {e.name for e in members})} are also members")
    if problems:
        return None
    return Manifest(
        federation_id=value["federation_id"],
        federation_name=value["federation_name"],
        created=value["created"],
        version=version,
        ca_fingerprint=value["ca_fingerprint"],
        members=tuple(members),
        revoked=tuple(revoked),
    )


def _parse_entry(raw: object, path: str, problems: list[str]) -> MemberEntry | None:
    fields = {"address", "name", "role", "signing_key", "tls_fingerprint"}
    if not isinstance(raw, dict) or set(raw) != fields:
        problems.append(f"{path}: must be an object with exactly the fields {sorted(fields)}")
        return None
    before = len(problems)
    name_problem = _name_problem(raw["name"])
    if name_problem:
        problems.append(f"{path}.name: {name_problem}")
    if raw["role"] not in get_args(Role):
        problems.append(f"{path}.role: {raw['role']!r} is not one of {get_args(Role)}")
    try:
        _split_address(raw["address"])
    except ValueError as exc:
        problems.append(f"{path}.address: {exc}")
    _expect(raw, "tls_fingerprint", _HEX64, problems, path)
    _expect(raw, "signing_key", _HEX64, problems, path)
    if len(problems) > before:
        return None
    return MemberEntry(raw["name"], raw["role"], raw["address"], raw["tls_fingerprint"], raw["signing_key"])


def _expect(value: dict[str, Any], key: str, pattern: re.Pattern[str], problems: list[str], path: str = "") -> None:
    item = value[key]
    if not isinstance(item, str) or not pattern.match(item):
        problems.append(f"{path + '.' if path else ''}{key}: {item!r} does not match {pattern.pattern}")


@dataclass(frozen=True)
class SignedManifest:
    """A manifest with the CA's signature over its canonical bytes."""

    manifest: Manifest
    signature: bytes

    @classmethod
    def sign(cls, manifest: Manifest, ca: pki.CertificateAuthority) -> SignedManifest:
        """Sign ``manifest`` with the CA key."""
        if manifest.ca_fingerprint != ca.certificate.fingerprint:
            raise ConfigurationError("manifest.ca_fingerprint: does not match the signing CA's certificate")
        return cls(manifest, pki.sign_document(ca, manifest.canonical_bytes(), context=MANIFEST_CONTEXT))

    def to_bytes(self) -> bytes:
        """The signed envelope (canonical JSON) stored as ``manifest.sig``."""
        return canonical.encode(
            {
                "format": _ENVELOPE_FORMAT,
                "algorithm": "ecdsa-p256-sha256",
                "manifest": self.manifest.to_value(),
                "signature": self.signature,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, ca: pki.Certificate, source: str = SIGNATURE_FILE) -> SignedManifest:
        """Parse an envelope and verify its signature with ``ca`` before trusting any of its content.

        Raises
        ------
        VerificationError
            Not an envelope, the signature does not verify (the message says whether the envelope names
            another CA), or the signed manifest names a different CA.
        """
        raw = _decode_envelope(data, source)
        try:
            pki.verify_document(canonical.encode(raw["manifest"]), raw["signature"], ca=ca, context=MANIFEST_CONTEXT)
        except VerificationError as exc:
            named = raw["manifest"].get("ca_fingerprint") if isinstance(raw["manifest"], dict) else None
            hint = (
                f"; it names CA {str(named)[:16]} but ca.pem is {ca.fingerprint[:16]} (wrong CA)"
                if named != ca.fingerprint
                else "; the signed copy was altered, so which field changed cannot be told"
            )
            raise VerificationError(f"{source}: {exc}{hint}") from None
        manifest = Manifest.from_value(raw["manifest"], source=source)
        if manifest.ca_fingerprint != ca.fingerprint:
            raise VerificationError(f"{source}: the manifest names CA {manifest.ca_fingerprint[:16]}, not ca.pem")
        return cls(manifest, raw["signature"])


def _decode_envelope(data: bytes, source: str) -> dict[str, Any]:
    try:
        raw = canonical.decode(data)
    except ValueError as exc:
        raise VerificationError(f"{source}: not a signed manifest envelope ({exc})") from None
    keys = {"format", "algorithm", "manifest", "signature"}
    if (
        not isinstance(raw, dict)
        or set(raw) != keys
        or raw["format"] != _ENVELOPE_FORMAT
        or not isinstance(raw["signature"], bytes)
    ):
        raise VerificationError(f"{source}: not a {_ENVELOPE_FORMAT} envelope")
    return raw


# ---------------------------------------------------------------------------------- manifest diff


def _describe_changes(signed: Any, edited: Any, path: str = "") -> list[str]:
    """Field-level differences between the signed manifest value and an edited copy."""
    label = path or "<manifest>"
    if isinstance(signed, dict) and isinstance(edited, dict):
        changes: list[str] = []
        for key in sorted(set(signed) | set(edited)):
            sub = f"{path}.{key}" if path else key
            if key not in edited:
                changes.append(f"{sub}: removed (signed value {_short(signed[key])})")
            elif key not in signed:
                changes.append(f"{sub}: added ({_short(edited[key])}), not in the signed manifest")
            else:
                changes.extend(_describe_changes(signed[key], edited[key], sub))
        return changes
    if path == "members" and isinstance(signed, list) and isinstance(edited, list):
        by_name = {m["name"]: m for m in signed if isinstance(m, dict) and "name" in m}
        edited_by_name = {m.get("name"): m for m in edited if isinstance(m, dict)}
        changes = [f"members[{n}]: removed" for n in by_name if n not in edited_by_name]
        changes += [f"members[{n}]: added, not in the signed manifest" for n in edited_by_name if n not in by_name]
        for name, member in by_name.items():
            if name in edited_by_name:
                changes.extend(_describe_changes(member, edited_by_name[name], f"members[{name}]"))
        if not changes and signed != edited:
            changes.append("members: reordered")
        return changes
    if type(signed) is not type(edited) or signed != edited:
        return [f"{label}: signed {_short(signed)}, {MANIFEST_FILE} has {_short(edited)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _manifest_json(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.to_value(), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _check_manifest_copy(path: Path, signed: Manifest) -> None:
    data = read_material(path)
    try:
        edited = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError(f"{path}: not valid JSON ({exc}); the signed copy is in {SIGNATURE_FILE}") from None
    changes = _describe_changes(signed.to_value(), edited)
    if changes:
        raise VerificationError(
            f"{path}: edited after the CA signed it: {'; '.join(changes)} "
            f"(the CA-signed copy in {SIGNATURE_FILE} is authoritative)"
        )


# ------------------------------------------------------------------------------------------ kits


@dataclass(frozen=True)
class Kit:
    """A verified startup kit: everything a node needs to join the federation."""

    directory: Path
    name: str
    signed_manifest: SignedManifest
    ca_certificate: pki.Certificate
    crl: pki.RevocationList
    tls_certificate: pki.Certificate
    tls_key: pki.TlsPrivateKey
    signing_key: SigningKey = field(repr=False)

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
    password: bytes | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Write ``member``'s kit into ``directory`` after checking that it would load.

    Private keys are written with mode ``0600`` (encrypted with ``password`` when given), everything
    else ``0644``; each file is replaced atomically.

    Raises
    ------
    VerificationError
        The pieces do not belong together (same checks as :func:`load_kit`): nothing is written.
    """
    moment = _now(now)
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
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tls_key.save(directory / TLS_KEY_FILE, password=password)
    signing_key.save(directory / SIGNING_KEY_FILE, password=password)
    tls_cert.save(directory / TLS_CERT_FILE)
    ca_cert.save(directory / CA_FILE)
    _write_publication(directory, manifest, crl)


def _write_publication(directory: Path, manifest: SignedManifest, crl: pki.RevocationList) -> None:
    write_public(directory / SIGNATURE_FILE, manifest.to_bytes())
    write_public(directory / MANIFEST_FILE, _manifest_json(manifest.manifest))
    crl.save(directory / CRL_FILE)


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
        Decrypts the private keys when they were written with one.
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
    moment = _now(now)
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
    _check_manifest_copy(directory / MANIFEST_FILE, signed.manifest)
    crl = pki.RevocationList.load(directory / CRL_FILE)
    tls_cert = pki.Certificate.load(directory / TLS_CERT_FILE)
    tls_key = pki.TlsPrivateKey.load(directory / TLS_KEY_FILE, password=password)
    signing_key = SigningKey.load(directory / SIGNING_KEY_FILE, password=password)
    try:
        _verify_kit(
            name=tls_cert.name,
            signed=signed,
            ca_cert=ca_cert,
            crl=crl,
            tls_cert=tls_cert,
            tls_key=tls_key,
            signing_key=signing_key,
            now=moment,
        )
    except VerificationError as exc:
        raise VerificationError(f"kit {directory}: {exc}") from None
    return Kit(directory, tls_cert.name, signed, ca_cert, crl, tls_cert, tls_key, signing_key)


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
        The publication's CA differs from the kit's, its signatures do not verify, or it is not newer
        than what is installed (a lower manifest version or CRL number: a rollback).
    """
    directory = Path(directory)
    moment = _now(now)
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
    _write_publication(directory, incoming, publication.crl)


# ------------------------------------------------------------------------------------ provisioning


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
    with _about(str(ca_dir / CA_FILE)):
        pki.verify_ca_certificate(ca.certificate, now=now)
    signed = SignedManifest.from_bytes(
        read_material(ca_dir / SIGNATURE_FILE), ca=ca.certificate, source=str(ca_dir / SIGNATURE_FILE)
    )
    _check_manifest_copy(ca_dir / MANIFEST_FILE, signed.manifest)
    crl = pki.RevocationList.load(ca_dir / CRL_FILE)
    with _about(str(ca_dir / CRL_FILE)):
        pki.verify_crl(crl, ca=ca.certificate, now=now)
    return _Operator(ca, signed, crl, ca_dir)


def _publish(operator: _Operator, manifest: Manifest, crl: pki.RevocationList) -> Publication:
    signed = SignedManifest.sign(manifest, operator.ca)
    _write_publication(operator.directory, signed, crl)
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
        Encrypt the CA key, and each member's private keys (by member name), when given.
    now
        Issuance time (defaults to the current time).

    Raises
    ------
    SpecError
        No members, duplicate names, or a password for an unknown member.
    ConfigurationError
        ``out_dir`` already provisioned, or ``validity_days`` exceeds ``ca_validity_days``.
    """
    out_dir = Path(out_dir)
    moment = _now(now)
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
        created=_timestamp(moment),
        version=1,
        ca_fingerprint=ca.certificate.fingerprint,
        members=tuple(
            MemberEntry(spec.name, spec.role, spec.address, cert.fingerprint, signing.public_key().hex)
            for spec, _, cert, signing in issued.values()
        ),
    )
    ca_dir = out_dir / CA_DIR
    (ca_dir / ISSUED_DIR).mkdir(mode=0o700, parents=True)
    ca.save(ca_dir / CA_KEY_FILE, ca_dir / CA_FILE, password=ca_password)
    operator = _Operator(ca, SignedManifest.sign(manifest, ca), crl, ca_dir)
    publication = _publish(operator, manifest, crl)
    kits: dict[str, Path] = {}
    for name, (_, tls_key, cert, signing) in issued.items():
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
            password=passwords.get(name),
            now=moment,
        )
    return Provisioned(ca_dir, kits, publication)


def _case_clashes(names: Sequence[str]) -> set[str]:
    lowered = [n.lower() for n in names]
    return {n for n in names if lowered.count(n.lower()) > 1}


# ------------------------------------------------------------------------------------- membership


@dataclass(frozen=True)
class JoinRequest:
    """A prospective member's request: a CSR, its Ed25519 key, and where it will listen.

    The whole request is signed with the new Ed25519 key (proof that the requester holds it), and the
    CSR is self-signed with the TLS key; the private keys never leave the member.
    """

    csr: pki.CertificateRequest
    role: Role
    address: str
    signing_key: VerifyKey
    signature: bytes

    def _signed_value(self) -> dict[str, str]:
        return {
            "format": _JOIN_FORMAT,
            "csr": self.csr.pem.decode("ascii"),
            "role": self.role,
            "address": self.address,
            "signing_key": self.signing_key.hex,
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
            return cls(
                pki.CertificateRequest.from_pem(raw["csr"].encode("ascii"), source="join request csr"),
                raw["role"],
                raw["address"],
                VerifyKey.from_hex(raw["signing_key"]),
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

    The certificate's SANs are the address host plus ``dns_names`` and ``ip_addresses``.
    """
    spec = MemberSpec(name, role, address, tuple(dns_names), tuple(ip_addresses))
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tls_key = pki.TlsPrivateKey.generate()
    signing_key = SigningKey.generate()
    dns, ips = spec.subject_names()
    csr = pki.create_csr(tls_key, name=name, dns_names=dns, ip_addresses=ips)
    unsigned = JoinRequest(csr, role, address, signing_key.public_key(), b"")
    request = replace(unsigned, signature=signing_key.sign(unsigned.signed_bytes()))
    tls_key.save(directory / TLS_KEY_FILE, password=password)
    signing_key.save(directory / SIGNING_KEY_FILE, password=password)
    return request


@dataclass(frozen=True)
class Admission:
    """The operator's answer to a :class:`JoinRequest`: the new certificate and the updated publication."""

    certificate: pki.Certificate
    publication: Publication

    def to_bytes(self) -> bytes:
        """Canonical encoding, to send back to the member."""
        return canonical.encode(
            {
                "format": _ADMISSION_FORMAT,
                "certificate": self.certificate.pem.decode("ascii"),
                "ca_certificate": self.publication.ca_certificate.pem.decode("ascii"),
                "crl": self.publication.crl.pem.decode("ascii"),
                "manifest": self.publication.manifest.to_bytes(),
            }
        )

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
        except (ValueError, KeyError, AttributeError, TypeError, KeyMaterialError) as exc:
            raise VerificationError(f"admission: malformed ({exc})") from None
        if expected_ca_fingerprint is not None and ca_cert.fingerprint != expected_ca_fingerprint.lower():
            raise VerificationError(f"admission: CA {ca_cert.fingerprint[:16]} is not the pinned CA (wrong CA)")
        manifest = SignedManifest.from_bytes(raw["manifest"], ca=ca_cert, source="admission manifest")
        return cls(cert, Publication(ca_cert, manifest, crl))


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
    records it in ``out_dir/ca/issued``, and publishes manifest version + 1.

    Raises
    ------
    VerificationError
        A signature of the request or CSR does not verify.
    ConfigurationError
        The name collides, the address is not covered by the certificate, or the request is invalid.
    """
    moment = _now(now)
    request.verify()
    operator = _load_operator(out_dir, ca_password, moment)
    current = operator.manifest.manifest
    spec = MemberSpec(request.csr.name, request.role, request.address)
    host, _ = _split_address(request.address)
    covered = {d.lower() for d in request.csr.dns_names} | set(request.csr.ip_addresses)
    host_ip = _ip(host)
    if (str(host_ip) if host_ip is not None else host.lower()) not in covered:
        raise ConfigurationError(
            f"join request for {spec.name!r}: address host {host!r} is not among the requested SANs {sorted(covered)}"
        )
    if spec.name.lower() in {n.lower() for n in current.names}:
        raise ConfigurationError(f"join request: member name {spec.name!r} is already taken")
    cert = pki.sign_csr(operator.ca, request.csr, validity_days=validity_days, taken_names=current.names, now=moment)
    entry = MemberEntry(spec.name, spec.role, spec.address, cert.fingerprint, request.signing_key.hex)
    if any(e.signing_key == entry.signing_key for e in current.members):
        raise ConfigurationError(f"join request for {spec.name!r}: signing key already belongs to a member")
    manifest = replace(
        current, version=current.version + 1, members=tuple(sorted((*current.members, entry), key=lambda e: e.name))
    )
    cert.save(operator.directory / ISSUED_DIR / f"{spec.name}.pem")
    return Admission(cert, _publish(operator, manifest, operator.crl))


def complete_join(
    directory: Path,
    admission: Admission,
    *,
    password: bytes | None = None,
    now: dt.datetime | None = None,
) -> Kit:
    """Member side, last step: install the admission next to the keys from :func:`create_join_request`.

    Raises
    ------
    VerificationError
        The admission does not fit the keys in ``directory`` (see :func:`write_kit`).
    """
    directory = Path(directory)
    tls_key = pki.TlsPrivateKey.load(directory / TLS_KEY_FILE, password=password)
    signing_key = SigningKey.load(directory / SIGNING_KEY_FILE, password=password)
    write_kit(
        directory,
        member=admission.certificate.name,
        manifest=admission.publication.manifest,
        ca_cert=admission.publication.ca_certificate,
        tls_cert=admission.certificate,
        tls_key=tls_key,
        signing_key=signing_key,
        crl=admission.publication.crl,
        password=password,
        now=now,
    )
    return load_kit(directory, password=password, now=now)


def revoke_member(
    out_dir: Path,
    name: str,
    *,
    ca_password: bytes | None = None,
    now: dt.datetime | None = None,
) -> Publication:
    """Revoke ``name``: add its certificate serial to the CRL and drop it from the manifest.

    The new CRL (number + 1) and manifest (version + 1, ``name`` listed under ``revoked``) are written to
    ``out_dir/ca`` and returned; install them in every kit with :func:`update_kit`.

    Raises
    ------
    ConfigurationError
        ``name`` is not a current member.
    """
    moment = _now(now)
    operator = _load_operator(out_dir, ca_password, moment)
    current = operator.manifest.manifest
    if name not in {e.name for e in current.members}:
        state = "was already revoked" if name in current.revoked else "is not a member"
        raise ConfigurationError(f"revoke_member: {name!r} {state}")
    cert = pki.Certificate.load(operator.directory / ISSUED_DIR / f"{name}.pem")
    crl = pki.revoke_serial(operator.ca, operator.crl, cert.serial, now=moment)
    manifest = replace(
        current,
        version=current.version + 1,
        members=tuple(e for e in current.members if e.name != name),
        revoked=tuple(sorted((*current.revoked, name))),
    )
    return _publish(operator, manifest, crl)
