"""The manifest's JSON document: its fields and their checks.

:func:`check_manifest_value` takes a decoded manifest (``manifest.json``, or the copy a signed envelope
embeds) and reports every field that is missing, extra or malformed by its path (``members[bob].since``,
``revoked[2].signing_key``, ``ckks.scale_bits``), all at once; :meth:`fedswarm.node.manifest.Manifest.from_value`
builds the manifest from a value that passed. The member-name and ``host:port`` rules here are also those
of a member to provision (:class:`fedswarm.node.manifest.MemberSpec`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal, get_args

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.signing import WeakKeyError, check_public_key

__all__ = [
    "CA_DIR",
    "MANIFEST_FORMAT",
    "Role",
    "check_manifest_value",
    "name_problem",
    "parse_ip",
    "split_address",
]

Role = Literal["member", "aggregator"]

MANIFEST_FORMAT = "fedswarm.manifest/2"
_FORMAT_BEFORE_SINCE = "fedswarm.manifest/1"
_ENTRY_FIELDS = frozenset({"address", "name", "role", "signing_key", "since", "tls_fingerprint"})
CA_DIR = "ca"
"""The operator's CA directory, a name no member may take."""

_FIELDS = frozenset(
    {"ca_fingerprint", "created", "federation_id", "federation_name", "format", "members", "revoked", "version"}
)
_CKKS_FIELDS = frozenset(
    {"coeff_mod_bit_sizes", "poly_modulus_degree", "public_context", "scale_bits", "secret_context"}
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FEDERATION_ID = re.compile(r"^[0-9a-f]{32}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# ------------------------------------------------------------------------------- names, addresses


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a member's name, or ``None``."""
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


# -------------------------------------------------------------------------------------- document


def check_manifest_value(value: object, *, source: str) -> dict[str, Any]:
    """``value`` (a decoded manifest), once every field is checked.

    Raises
    ------
    VerificationError
        ``"{source}: malformed manifest: "`` and every missing, extra or malformed field, named with its
        path (``members[bob].since: 3 is later than the manifest's version 2``).
    """
    problems: list[str] = []
    _check_manifest(value, problems)
    if problems or not isinstance(value, dict):
        raise VerificationError(f"{source}: malformed manifest: {'; '.join(problems)}")
    return value


def _check_manifest(value: object, problems: list[str]) -> None:
    if not isinstance(value, dict):
        problems.append("not a JSON object")
        return
    if not _FIELDS <= set(value) <= _FIELDS | {"ckks"}:
        missing, extra = sorted(_FIELDS - set(value)), sorted(set(value) - _FIELDS - {"ckks"})
        problems.append(f"missing fields {missing}" if missing else f"unexpected fields {extra}")
        return
    if value["format"] == _FORMAT_BEFORE_SINCE:
        problems.append(
            f"format: {_FORMAT_BEFORE_SINCE!r} was written before members recorded 'since' (the manifest "
            f"revision that added each member, {MANIFEST_FORMAT!r}); provision the federation again"
        )
        return
    if "ckks" in value:
        _check_ckks(value["ckks"], problems)
    if value["format"] != MANIFEST_FORMAT:
        problems.append(f"format: {value['format']!r}, expected {MANIFEST_FORMAT!r}")
    _expect(value, "federation_id", _FEDERATION_ID, problems)
    _expect(value, "ca_fingerprint", _HEX64, problems)
    _expect(value, "created", _TIMESTAMP, problems)
    if not isinstance(value["federation_name"], str) or not value["federation_name"].strip():
        problems.append("federation_name: must be a non-empty string")
    version = value["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append(f"version: {version!r} must be a positive integer")
        version = None
    members = _check_entries(value, "members", version, problems)
    revoked = _check_entries(value, "revoked", version, problems)
    everyone = (*members, *revoked)
    for attribute in ("name", "tls_fingerprint", "signing_key"):
        seen = [e[attribute] for e in everyone]
        if len(set(seen)) != len(seen):
            problems.append(f"members and revoked: duplicate {attribute}")
    for field, entries in (("members", members), ("revoked", revoked)):
        if [e["name"] for e in entries] != sorted(e["name"] for e in entries):
            problems.append(f"{field}: must be sorted by name")
    if everyone and not any(e["since"] == 1 for e in everyone):
        problems.append("members: no member has since 1 (the founding members provisioning listed)")


def _check_ckks(raw: object, problems: list[str]) -> None:
    if not isinstance(raw, dict) or set(raw) != _CKKS_FIELDS:
        problems.append(f"ckks: must be an object with exactly the fields {sorted(_CKKS_FIELDS)}")
        return
    for key in ("poly_modulus_degree", "scale_bits"):
        if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1:
            problems.append(f"ckks.{key}: {raw[key]!r} must be a positive integer")
    mods = raw["coeff_mod_bit_sizes"]
    if not isinstance(mods, list) or not mods or not all(isinstance(b, int) and not isinstance(b, bool) for b in mods):
        problems.append(f"ckks.coeff_mod_bit_sizes: {mods!r} must be a non-empty list of integers")
    _expect(raw, "public_context", _HEX64, problems, "ckks")
    _expect(raw, "secret_context", _HEX64, problems, "ckks")


def _check_entries(
    value: dict[str, Any], field: str, version: int | None, problems: list[str]
) -> tuple[dict[str, Any], ...]:
    """The well-formed member entries under ``field`` (``members`` or ``revoked``); problems named
    ``field[name].key``."""
    raw_entries = value[field]
    if not isinstance(raw_entries, list):
        problems.append(f"{field}: must be a list of member entries")
        return ()
    out = []
    for i, raw in enumerate(raw_entries):
        name = raw.get("name") if isinstance(raw, dict) else None
        path = f"{field}[{name}]" if isinstance(name, str) and _NAME.match(name) else f"{field}[{i}]"
        if _entry_is_valid(raw, path, version, problems):
            out.append(raw)
    return tuple(out)


def _entry_is_valid(raw: object, path: str, version: int | None, problems: list[str]) -> bool:
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be an object with the fields {sorted(_ENTRY_FIELDS)}")
        return False
    if set(raw) != _ENTRY_FIELDS:
        missing, extra = sorted(_ENTRY_FIELDS - set(raw)), sorted(set(raw) - _ENTRY_FIELDS)
        problems.extend(f"{path}.{key}: missing" for key in missing)
        problems.extend(f"{path}.{key}: unexpected field" for key in extra)
        return False
    before = len(problems)
    problem = name_problem(raw["name"])
    if problem:
        problems.append(f"{path}.name: {problem}")
    if raw["role"] not in get_args(Role):
        problems.append(f"{path}.role: {raw['role']!r} is not one of {get_args(Role)}")
    try:
        split_address(raw["address"])
    except ValueError as exc:
        problems.append(f"{path}.address: {exc}")
    _expect(raw, "tls_fingerprint", _HEX64, problems, path)
    if _expect(raw, "signing_key", _HEX64, problems, path):
        try:
            check_public_key(bytes.fromhex(raw["signing_key"]), source=f"{path}.signing_key")
        except WeakKeyError as exc:
            problems.append(str(exc))
    since = raw["since"]
    if not isinstance(since, int) or isinstance(since, bool) or since < 1:
        problems.append(f"{path}.since: {since!r} must be a positive integer (the manifest revision that added it)")
    elif version is not None and since > version:
        problems.append(f"{path}.since: {since} is later than the manifest's version {version}")
    return len(problems) == before


def _expect(value: dict[str, Any], key: str, pattern: re.Pattern[str], problems: list[str], path: str = "") -> bool:
    item = value[key]
    if not isinstance(item, str) or not pattern.match(item):
        problems.append(f"{path + '.' if path else ''}{key}: {item!r} does not match {pattern.pattern}")
        return False
    return True
