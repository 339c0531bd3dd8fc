"""The CA-signed manifest envelope (``manifest.sig``) and the readable copy (``manifest.json``).

:class:`SignedManifest` verifies the CA signature before trusting any of the envelope's content;
:func:`check_manifest_copy` then compares ``manifest.json`` with the signed copy value by value and names
every changed field (see :mod:`fedswarm.node.manifest` for why the envelope embeds the signed copy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedswarm.codec import canonical
from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.crypto import pki
from fedswarm.crypto.files import read_material
from fedswarm.node.manifest import MANIFEST_CONTEXT, MANIFEST_FILE, SIGNATURE_FILE, Manifest

__all__ = ["SignedManifest", "check_manifest_copy", "manifest_json"]

_ENVELOPE_FORMAT = "fedswarm.signed-manifest/1"


@dataclass(frozen=True)
class SignedManifest:
    """A manifest with the CA's signature over its canonical bytes."""

    manifest: Manifest
    signature: bytes

    @classmethod
    def sign(cls, manifest: Manifest, ca: pki.CertificateAuthority) -> SignedManifest:
        """Sign ``manifest`` with the CA key.

        Raises
        ------
        ConfigurationError
            ``manifest`` names another CA, or is one that every node would refuse (checked as
            :meth:`Manifest.from_value` checks it, e.g. a member's ``since`` later than ``version``).
        """
        if manifest.ca_fingerprint != ca.certificate.fingerprint:
            raise ConfigurationError("manifest.ca_fingerprint: does not match the signing CA's certificate")
        try:
            Manifest.from_value(manifest.to_value(), source="manifest to sign")
        except VerificationError as exc:
            raise ConfigurationError(str(exc)) from None
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
    if path in ("members", "revoked") and isinstance(signed, list) and isinstance(edited, list):
        by_name = {m["name"]: m for m in signed if isinstance(m, dict) and "name" in m}
        edited_by_name = {m.get("name"): m for m in edited if isinstance(m, dict)}
        changes = [f"{path}[{n}]: removed" for n in by_name if n not in edited_by_name]
        changes += [f"{path}[{n}]: added, not in the signed manifest" for n in edited_by_name if n not in by_name]
        for name, member in by_name.items():
            if name in edited_by_name:
                changes.extend(_describe_changes(member, edited_by_name[name], f"{path}[{name}]"))
        if not changes and signed != edited:
            changes.append(f"{path}: reordered")
        return changes
    if type(signed) is not type(edited) or signed != edited:
        return [f"{label}: signed {_short(signed)}, {MANIFEST_FILE} has {_short(edited)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def manifest_json(manifest: Manifest) -> bytes:
    """The readable copy of ``manifest`` written as ``manifest.json``."""
    return (json.dumps(manifest.to_value(), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def check_manifest_copy(path: Path, signed: Manifest) -> None:
    """Compare the readable copy at ``path`` with the signed manifest; raise naming every changed field."""
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
