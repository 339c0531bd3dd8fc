"""The federation manifest: who the members are, how to reach them, and the CA's signature over it.

The **manifest** lists the federation (id, name, creation time, revision ``version``, CA fingerprint),
every member (name, role, ``host:port`` address, TLS certificate fingerprint, Ed25519 public key, and
``since``: the revision that added it), the revoked members (their entries as they were, ``since``
included) and, when the federation aggregates with CKKS, the CKKS parameters and the SHA-256 digests of
the public and secret contexts that provisioning generated (:class:`CKKSKeys`). The CA signs its
canonical encoding (:mod:`fedswarm.codec.canonical`) under the context ``fedswarm.manifest.v1``.

**Founding members.** Provisioning writes revision 1 with ``since = 1`` for every member; a member added
later gets the revision that adds it (``since > 1``), and a revoked member keeps its entry under
``revoked``. So every manifest, however late, names the founding members (:attr:`Manifest.founders`: those
with ``since == 1``, revoked or not) and their keys: what the ledger's first entry must register
(:func:`fedswarm.node.ledger_block.check_creation`). A manifest without ``since`` (format
``fedswarm.manifest/1``, written before members recorded it) is refused with that reason: provision the
federation again.

How an edited manifest is named, honestly. A signature can only say "these bytes were not signed". So
``manifest.sig`` is a *signed envelope* (:class:`~fedswarm.node.signed_manifest.SignedManifest`) that embeds
the CA-signed copy of the manifest next to the signature, and ``manifest.json`` is a readable copy for
people. The envelope's signature is checked first; if it fails, nothing in the envelope is trusted and the
error says so (it cannot say which field changed, only that the envelope or its CA changed). If it holds,
the signed copy is authoritative: ``manifest.json`` is compared with it value by value
(:func:`~fedswarm.node.signed_manifest.check_manifest_copy`) and any difference is reported by field
(``members[bob].address: signed '10.0.0.2:7000', manifest.json has '10.6.6.6:7000'``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from fedswarm.codec import canonical
from fedswarm.core.errors import SpecError, VerificationError
from fedswarm.crypto.signing import VerifyKey

__all__ = [
    "CA_DIR",
    "MANIFEST_CONTEXT",
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "CKKSKeys",
    "Manifest",
    "MemberEntry",
    "MemberSpec",
    "Role",
    "parse_ip",
    "split_address",
    "timestamp",
    "utc_now",
]

Role = Literal["member", "aggregator"]

MANIFEST_CONTEXT = "fedswarm.manifest.v1"
_MANIFEST_FORMAT = "fedswarm.manifest/2"
_FORMAT_BEFORE_SINCE = "fedswarm.manifest/1"
_ENTRY_FIELDS = frozenset({"address", "name", "role", "signing_key", "since", "tls_fingerprint"})
MANIFEST_FILE, SIGNATURE_FILE, CA_DIR = "manifest.json", "manifest.sig", "ca"

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


def split_address(address: object) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets) to ``(host, port)``; ``ValueError`` with the reason."""
    if not isinstance(address, str):
        raise ValueError(f"{address!r} is not a string")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{address!r} must be host:port with a port in 1..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not isinstance(parse_ip(host), ipaddress.IPv6Address):
            raise ValueError(f"{address!r}: only IPv6 addresses go in brackets")
    elif ":" in host:
        raise ValueError(f"{address!r}: write IPv6 hosts in brackets, e.g. [::1]:7000")
    if not host:
        raise ValueError(f"{address!r} has no host")
    return host, int(port)


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address, or ``None`` when it is a DNS name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def timestamp(moment: dt.datetime) -> str:
    """``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now(now: dt.datetime | None) -> dt.datetime:
    """``now``, or the current UTC time when it is ``None``."""
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
            split_address(self.address)
        except ValueError as exc:
            raise SpecError(f"members.{self.name}.address", str(exc)) from None

    def subject_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(dns_names, ip_addresses)`` for the certificate: the address host plus the extras."""
        host, _ = split_address(self.address)
        ip = parse_ip(host)
        dns = self.dns_names if ip is not None or host in self.dns_names else (host, *self.dns_names)
        ips = self.ip_addresses
        if ip is not None and str(ip) not in ips:
            ips = (str(ip), *ips)
        return dns, ips


@dataclass(frozen=True)
class MemberEntry:
    """A member as the manifest lists it; ``since`` is the manifest revision that added it (1: a founder)."""

    name: str
    role: Role
    address: str
    tls_fingerprint: str
    signing_key: str
    since: int

    def verify_key(self) -> VerifyKey:
        """The member's Ed25519 public key."""
        return VerifyKey.from_hex(self.signing_key)

    def to_value(self) -> dict[str, str | int]:
        """Canonical value (a JSON object)."""
        return {
            "address": self.address,
            "name": self.name,
            "role": self.role,
            "signing_key": self.signing_key,
            "since": self.since,
            "tls_fingerprint": self.tls_fingerprint,
        }


@dataclass(frozen=True)
class CKKSKeys:
    """The federation's CKKS keys as the manifest lists them: parameters and context digests.

    ``public_context`` and ``secret_context`` are the SHA-256 digests (hex) of the serialized TenSEAL
    contexts that provisioning wrote into the kits (:mod:`fedswarm.node.ckks_keys`); a kit whose files
    have other digests is refused. A digest of a secret key reveals nothing about it.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    public_context: str
    secret_context: str

    def to_value(self) -> dict[str, Any]:
        """Canonical value (a JSON object)."""
        return {
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "poly_modulus_degree": self.poly_modulus_degree,
            "public_context": self.public_context,
            "scale_bits": self.scale_bits,
            "secret_context": self.secret_context,
        }


def _parse_ckks(raw: object, problems: list[str]) -> CKKSKeys | None:
    fields = {"coeff_mod_bit_sizes", "poly_modulus_degree", "public_context", "scale_bits", "secret_context"}
    if not isinstance(raw, dict) or set(raw) != fields:
        problems.append(f"ckks: must be an object with exactly the fields {sorted(fields)}")
        return None
    before = len(problems)
    for key in ("poly_modulus_degree", "scale_bits"):
        if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1:
            problems.append(f"ckks.{key}: {raw[key]!r} must be a positive integer")
    mods = raw["coeff_mod_bit_sizes"]
    if not isinstance(mods, list) or not mods or not all(isinstance(b, int) and not isinstance(b, bool) for b in mods):
        problems.append(f"ckks.coeff_mod_bit_sizes: {mods!r} must be a non-empty list of integers")
    _expect(raw, "public_context", _HEX64, problems, "ckks")
    _expect(raw, "secret_context", _HEX64, problems, "ckks")
    if len(problems) > before:
        return None
    return CKKSKeys(
        raw["poly_modulus_degree"], tuple(mods), raw["scale_bits"], raw["public_context"], raw["secret_context"]
    )


@dataclass(frozen=True)
class Manifest:
    """The CA-signed description of the federation.

    ``version`` is the manifest's revision: provisioning writes 1 and every :func:`add_member` or
    :func:`revoke_member` increments it, so a node can refuse to roll back to an older manifest. Each
    member's ``since`` is the revision that added it (1 for the founding members). ``revoked`` keeps the
    entries of revoked members as they were (``since`` included); their names are never reused. ``ckks``
    describes the CKKS keys of a federation provisioned with ``privacy.secure_aggregation = "ckks"``
    (absent otherwise, and then absent from the signed value too); it never changes after provisioning.
    """

    federation_id: str
    federation_name: str
    created: str
    version: int
    ca_fingerprint: str
    members: tuple[MemberEntry, ...]
    revoked: tuple[MemberEntry, ...] = ()
    ckks: CKKSKeys | None = None

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
        if name in self.revoked_names:
            raise VerificationError(f"manifest version {self.version}: member {name!r} was revoked")
        raise VerificationError(f"manifest version {self.version}: {name!r} is not a member")

    @property
    def revoked_names(self) -> frozenset[str]:
        """Names of the revoked members."""
        return frozenset(e.name for e in self.revoked)

    @property
    def names(self) -> frozenset[str]:
        """Names of current and revoked members (none of them can be issued again)."""
        return frozenset(e.name for e in self.members) | self.revoked_names

    @property
    def founders(self) -> tuple[MemberEntry, ...]:
        """The founding members (``since == 1``), revoked or not, by name: whom the ledger's entry 0 registers."""
        return tuple(sorted((e for e in (*self.members, *self.revoked) if e.since == 1), key=lambda e: e.name))

    def to_value(self) -> dict[str, Any]:
        """Canonical value: what the CA signs."""
        value: dict[str, Any] = {
            "ca_fingerprint": self.ca_fingerprint,
            "created": self.created,
            "federation_id": self.federation_id,
            "federation_name": self.federation_name,
            "format": _MANIFEST_FORMAT,
            "members": [entry.to_value() for entry in self.members],
            "revoked": [entry.to_value() for entry in self.revoked],
            "version": self.version,
        }
        if self.ckks is not None:
            value["ckks"] = self.ckks.to_value()
        return value

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
    if not fields <= set(value) <= fields | {"ckks"}:
        missing, extra = sorted(fields - set(value)), sorted(set(value) - fields - {"ckks"})
        problems.append(f"missing fields {missing}" if missing else f"unexpected fields {extra}")
        return None
    if value["format"] == _FORMAT_BEFORE_SINCE:
        problems.append(
            f"format: {_FORMAT_BEFORE_SINCE!r} was written before members recorded 'since' (the manifest "
            f"revision that added each member, {_MANIFEST_FORMAT!r}); provision the federation again"
        )
        return None
    ckks = _parse_ckks(value["ckks"], problems) if "ckks" in value else None
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
        version = None
    members = _parse_entries(value, "members", version, problems)
    revoked = _parse_entries(value, "revoked", version, problems)
    everyone = (*members, *revoked)
    for attribute in ("name", "tls_fingerprint", "signing_key"):
        seen = [getattr(e, attribute) for e in everyone]
        if len(set(seen)) != len(seen):
            problems.append(f"members and revoked: duplicate {attribute}")
    for field, entries in (("members", members), ("revoked", revoked)):
        if [e.name for e in entries] != sorted(e.name for e in entries):
            problems.append(f"{field}: must be sorted by name")
    if everyone and not any(e.since == 1 for e in everyone):
        problems.append("members: no member has since 1 (the founding members provisioning listed)")
    if problems or version is None:
        return None
    return Manifest(
        federation_id=value["federation_id"],
        federation_name=value["federation_name"],
        created=value["created"],
        version=version,
        ca_fingerprint=value["ca_fingerprint"],
        members=members,
        revoked=revoked,
        ckks=ckks,
    )


def _parse_entries(
    value: dict[str, Any], field: str, version: int | None, problems: list[str]
) -> tuple[MemberEntry, ...]:
    """The member entries under ``field`` (``members`` or ``revoked``); problems named ``field[name].key``."""
    raw_entries = value[field]
    if not isinstance(raw_entries, list):
        problems.append(f"{field}: must be a list of member entries")
        return ()
    out = []
    for i, raw in enumerate(raw_entries):
        name = raw.get("name") if isinstance(raw, dict) else None
        path = f"{field}[{name}]" if isinstance(name, str) and _NAME.match(name) else f"{field}[{i}]"
        entry = _parse_entry(raw, path, version, problems)
        if entry is not None:
            out.append(entry)
    return tuple(out)


def _parse_entry(raw: object, path: str, version: int | None, problems: list[str]) -> MemberEntry | None:
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be an object with the fields {sorted(_ENTRY_FIELDS)}")
        return None
    if set(raw) != _ENTRY_FIELDS:
        missing, extra = sorted(_ENTRY_FIELDS - set(raw)), sorted(set(raw) - _ENTRY_FIELDS)
        problems.extend(f"{path}.{key}: missing" for key in missing)
        problems.extend(f"{path}.{key}: unexpected field" for key in extra)
        return None
    before = len(problems)
    name_problem = _name_problem(raw["name"])
    if name_problem:
        problems.append(f"{path}.name: {name_problem}")
    if raw["role"] not in get_args(Role):
        problems.append(f"{path}.role: {raw['role']!r} is not one of {get_args(Role)}")
    try:
        split_address(raw["address"])
    except ValueError as exc:
        problems.append(f"{path}.address: {exc}")
    _expect(raw, "tls_fingerprint", _HEX64, problems, path)
    _expect(raw, "signing_key", _HEX64, problems, path)
    since = raw["since"]
    if not isinstance(since, int) or isinstance(since, bool) or since < 1:
        problems.append(f"{path}.since: {since!r} must be a positive integer (the manifest revision that added it)")
    elif version is not None and since > version:
        problems.append(f"{path}.since: {since} is later than the manifest's version {version}")
    if len(problems) > before:
        return None
    return MemberEntry(raw["name"], raw["role"], raw["address"], raw["tls_fingerprint"], raw["signing_key"], since)


def _expect(value: dict[str, Any], key: str, pattern: re.Pattern[str], problems: list[str], path: str = "") -> None:
    item = value[key]
    if not isinstance(item, str) or not pattern.match(item):
        problems.append(f"{path + '.' if path else ''}{key}: {item!r} does not match {pattern.pattern}")
