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
federation again. The document's fields and their checks (each problem named by its path, e.g.
``members[bob].since``) are in :mod:`fedswarm.node.manifest_schema`.

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
from dataclasses import dataclass
from typing import Any, get_args

from fedswarm.codec import canonical
from fedswarm.core.errors import SpecError, VerificationError
from fedswarm.crypto.signing import VerifyKey
from fedswarm.node.manifest_schema import (
    CA_DIR,
    MANIFEST_FORMAT,
    Role,
    check_manifest_value,
    name_problem,
    parse_ip,
    split_address,
)

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

MANIFEST_CONTEXT = "fedswarm.manifest.v1"
MANIFEST_FILE, SIGNATURE_FILE = "manifest.json", "manifest.sig"


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
        problem = name_problem(self.name)
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
            "format": MANIFEST_FORMAT,
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
        checked = check_manifest_value(value, source=source)
        manifest = cls(
            federation_id=checked["federation_id"],
            federation_name=checked["federation_name"],
            created=checked["created"],
            version=checked["version"],
            ca_fingerprint=checked["ca_fingerprint"],
            members=tuple(_member_entry(raw) for raw in checked["members"]),
            revoked=tuple(_member_entry(raw) for raw in checked["revoked"]),
            ckks=_ckks_keys(checked["ckks"]) if "ckks" in checked else None,
        )
        if manifest.to_value() != value:  # pragma: no cover - the manifest is built from exactly what was checked
            raise VerificationError(f"{source}: manifest is not in normal form")
        return manifest


def _member_entry(raw: dict[str, Any]) -> MemberEntry:
    """A member entry from its checked value."""
    return MemberEntry(
        raw["name"], raw["role"], raw["address"], raw["tls_fingerprint"], raw["signing_key"], raw["since"]
    )


def _ckks_keys(raw: dict[str, Any]) -> CKKSKeys:
    """The CKKS keys from their checked value."""
    return CKKSKeys(
        raw["poly_modulus_degree"],
        tuple(raw["coeff_mod_bit_sizes"]),
        raw["scale_bits"],
        raw["public_context"],
        raw["secret_context"],
    )
