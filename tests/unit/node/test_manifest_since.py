"""The manifest records the revision that added each member (``since``): provisioning writes 1 for the
founding members, add-member the new version, revocation keeps it; the CA signs it, and a manifest whose
``since`` is missing, malformed or later than its version is refused naming the member and the field."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fedswarm.codec import canonical
from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.crypto import pki
from fedswarm.crypto.signing import SigningKey
from fedswarm.node import kit as kits
from fedswarm.node.kit import MemberSpec
from fedswarm.node.manifest import MANIFEST_CONTEXT
from fedswarm.node.signed_manifest import SignedManifest

NOW = dt.datetime(2031, 3, 1, 9, 30, tzinfo=dt.UTC)
FOUNDERS = (
    MemberSpec("aggregator", "aggregator", "127.0.0.1:7000"),
    MemberSpec("bank-b", "member", "127.0.0.1:7001"),
    MemberSpec("bank-c", "member", "127.0.0.1:7002"),
)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A provisioned federation (no passwords), created once; tests work on copies."""
    out = tmp_path_factory.mktemp("since")
    kits.provision(FOUNDERS, federation_name="Since", out_dir=out, validity_days=90, now=NOW)
    return out


@pytest.fixture()
def out(federation: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "federation"
    shutil.copytree(federation, copy)
    return copy


def _join(out: Path, tmp_path: Path, name: str, port: int) -> kits.Admission:
    request = kits.create_join_request(tmp_path / name, name=name, role="member", address=f"127.0.0.1:{port}")
    return kits.add_member(out, request, validity_days=30, now=NOW)


def _ca(out: Path) -> pki.CertificateAuthority:
    return pki.CertificateAuthority.load(out / "ca" / "ca-key.pem", out / "ca" / "ca.pem")


def _signed_envelope(out: Path, value: dict[str, Any]) -> bytes:
    """``value`` signed by the federation's CA as it is, well formed or not (a CA that signed a bad manifest)."""
    signature = pki.sign_document(_ca(out), canonical.encode(value), context=MANIFEST_CONTEXT)
    envelope = {"format": "fedswarm.signed-manifest/1", "algorithm": "ecdsa-p256-sha256"}
    return canonical.encode({**envelope, "manifest": value, "signature": signature})


def _manifest_value(out: Path) -> dict[str, Any]:
    value = json.loads((out / "ca" / "manifest.json").read_text())
    assert isinstance(value, dict)
    return value


def _member(value: dict[str, Any], name: str, field: str = "members") -> dict[str, Any]:
    return next(m for m in value[field] if m["name"] == name)


# ------------------------------------------------------------------------------- written and kept


def test_provisioning_lists_every_member_with_since_1(out: Path) -> None:
    manifest = kits.load_kit(out / "bank-b", now=NOW).manifest
    assert manifest.version == 1
    assert [(e.name, e.since) for e in manifest.members] == [("aggregator", 1), ("bank-b", 1), ("bank-c", 1)]
    assert manifest.founders == manifest.members
    assert [m["since"] for m in _manifest_value(out)["members"]] == [1, 1, 1]  # in the readable copy too


def test_add_member_records_the_new_version_and_revocation_keeps_since(out: Path, tmp_path: Path) -> None:
    first = _join(out, tmp_path, "clinic-d", 7003)
    second = _join(out, tmp_path, "clinic-e", 7004)
    assert first.publication.manifest.manifest.member("clinic-d").since == 2
    manifest = second.publication.manifest.manifest
    assert manifest.version == 3
    assert {e.name: e.since for e in manifest.members} == {
        "aggregator": 1, "bank-b": 1, "bank-c": 1, "clinic-d": 2, "clinic-e": 3,
    }  # fmt: skip
    kit = kits.complete_join(tmp_path / "clinic-e", second, now=NOW)
    assert kit.entry.since == 3
    assert [e.name for e in kit.manifest.founders] == ["aggregator", "bank-b", "bank-c"]
    kits.revoke_member(out, "bank-b", now=NOW)
    publication = kits.revoke_member(out, "clinic-d", now=NOW)
    revoked = publication.manifest.manifest
    assert revoked.version == 5
    assert [(e.name, e.since) for e in revoked.revoked] == [("bank-b", 1), ("clinic-d", 2)]
    assert [e.name for e in revoked.founders] == ["aggregator", "bank-b", "bank-c"]  # revoked or not
    assert revoked.founders[1] == manifest.member("bank-b")  # the entry as it was, its key included
    kits.update_kit(out / "bank-c", publication, now=NOW)
    assert kits.load_kit(out / "bank-c", now=NOW).manifest == revoked


def test_a_revoked_members_signing_key_cannot_join_again(out: Path, tmp_path: Path) -> None:
    old_key = SigningKey.load(out / "bank-c" / "signing-key.pem")
    kits.revoke_member(out, "bank-c", now=NOW)
    request = kits.create_join_request(tmp_path / "again", name="bank-c2", role="member", address="127.0.0.1:7009")
    unsigned = replace(request, signing_key=old_key.public_key(), signature=b"")
    reused = replace(unsigned, signature=old_key.sign(unsigned.signed_bytes()))
    with pytest.raises(ConfigurationError, match="signing key already belongs to a member"):
        kits.add_member(out, reused, validity_days=30, now=NOW)


# ------------------------------------------------------------------------------------ signed, edits


def test_since_is_covered_by_the_ca_signature(out: Path) -> None:
    path = out / "bank-b" / "manifest.sig"
    envelope = canonical.decode(path.read_bytes())
    assert _member(envelope["manifest"], "bank-c")["since"] == 1
    _member(envelope["manifest"], "bank-c")["since"] = 2
    path.write_bytes(canonical.encode(envelope))
    with pytest.raises(VerificationError, match=r"CA signature does not verify.*which field changed cannot be told"):
        kits.load_kit(out / "bank-b", now=NOW)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("since"), "members[bank-c].since: removed (signed value 1)"),
        (lambda m: m.update(since=2), "members[bank-c].since: signed 1, manifest.json has 2"),
    ],
)
def test_an_edited_since_in_the_readable_copy_is_named(out: Path, edit: Any, message: str) -> None:
    path = out / "bank-b" / "manifest.json"
    value = json.loads(path.read_text())
    edit(_member(value, "bank-c"))
    path.write_text(json.dumps(value))
    with pytest.raises(VerificationError, match=re.escape(message)):
        kits.load_kit(out / "bank-b", now=NOW)


@pytest.mark.parametrize(
    ("since", "message"),
    [
        (None, "members[bank-c].since: missing"),
        (0, "members[bank-c].since: 0 must be a positive integer"),
        (-1, "members[bank-c].since: -1 must be a positive integer"),
        ("1", "members[bank-c].since: '1' must be a positive integer"),
        (True, "members[bank-c].since: True must be a positive integer"),
        (2, "members[bank-c].since: 2 is later than the manifest's version 1"),
    ],
)
def test_a_ca_signed_manifest_with_a_bad_since_is_refused_naming_member_and_field(
    out: Path, since: object, message: str
) -> None:
    value = _manifest_value(out)
    member = _member(value, "bank-c")
    if since is None:
        del member["since"]
    else:
        member["since"] = since
    data = _signed_envelope(out, value)
    with pytest.raises(VerificationError, match=re.escape(message)):
        SignedManifest.from_bytes(data, ca=_ca(out).certificate)


def test_a_revoked_entry_is_checked_like_a_member(out: Path) -> None:
    value = _manifest_value(out)
    entry = _member(value, "bank-c")
    value["members"].remove(entry)
    value["revoked"] = [{**entry, "since": 3}]
    value["version"] = 2
    with pytest.raises(
        VerificationError, match=re.escape("revoked[bank-c].since: 3 is later than the manifest's version 2")
    ):
        SignedManifest.from_bytes(_signed_envelope(out, value), ca=_ca(out).certificate)


def test_a_manifest_without_founding_members_is_refused(out: Path) -> None:
    value = _manifest_value(out)
    value["version"] = 2
    for member in value["members"]:
        member["since"] = 2
    with pytest.raises(VerificationError, match=re.escape("no member has since 1")):
        SignedManifest.from_bytes(_signed_envelope(out, value), ca=_ca(out).certificate)


def test_a_kit_written_before_since_is_refused_with_the_reason(out: Path) -> None:
    value = _manifest_value(out)
    value["format"] = "fedswarm.manifest/1"
    for member in value["members"]:
        del member["since"]
    (out / "bank-b" / "manifest.sig").write_bytes(_signed_envelope(out, value))
    with pytest.raises(VerificationError) as info:
        kits.load_kit(out / "bank-b", now=NOW)
    message = str(info.value)
    assert "'fedswarm.manifest/1' was written before members recorded 'since'" in message
    assert "provision the federation again" in message


def test_the_operator_refuses_to_sign_a_manifest_that_nodes_would_refuse(out: Path) -> None:
    manifest = kits.load_kit(out / "bank-b", now=NOW).manifest
    late = replace(manifest, members=tuple(replace(e, since=2) if e.name == "bank-c" else e for e in manifest.members))
    with pytest.raises(ConfigurationError, match=re.escape("members[bank-c].since: 2 is later than")):
        SignedManifest.sign(late, _ca(out))


# ------------------------------------------------------------------------------- newer publications


def _publication(out: Path, manifest: kits.Manifest) -> kits.Publication:
    ca = _ca(out)
    return kits.Publication(
        ca.certificate, SignedManifest.sign(manifest, ca), pki.RevocationList.load(out / "ca" / "crl.pem")
    )


def test_a_newer_manifest_must_keep_each_members_since(out: Path) -> None:
    manifest = kits.load_kit(out / "bank-b", now=NOW).manifest
    members = tuple(replace(e, since=2) if e.name == "bank-c" else e for e in manifest.members)
    with pytest.raises(VerificationError, match=re.escape("members[bank-c].since is 2, the installed manifest has 1")):
        kits.update_kit(out / "bank-b", _publication(out, replace(manifest, version=2, members=members)), now=NOW)


def test_a_newer_manifest_must_not_drop_a_member_without_revoking_it(out: Path) -> None:
    manifest = kits.load_kit(out / "bank-b", now=NOW).manifest
    members = tuple(e for e in manifest.members if e.name != "bank-c")
    with pytest.raises(VerificationError, match=re.escape("drops member 'bank-c'")):
        kits.update_kit(out / "bank-b", _publication(out, replace(manifest, version=2, members=members)), now=NOW)


@pytest.mark.parametrize(
    "key",
    [
        "01" + "00" * 31,  # the identity: the "signature" R = identity, S = 0 verifies any message under it
        "00" * 32,  # a point of order 4
        "ec" + "ff" * 30 + "7f",  # y = p - 1 (order 2), as it is encoded
    ],
)
def test_a_ca_signed_manifest_listing_a_weak_signing_key_is_refused_naming_it(out: Path, key: str) -> None:
    value = _manifest_value(out)
    _member(value, "bank-c")["signing_key"] = key
    with pytest.raises(VerificationError, match=re.escape("members[bank-c].signing_key")):
        SignedManifest.from_bytes(_signed_envelope(out, value), ca=_ca(out).certificate)
