"""Startup kits: provisioning round trip, joining, revocation, and one test per rejection path."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from fedswarm.codec import canonical
from fedswarm.core.errors import ConfigurationError, SpecError, VerificationError
from fedswarm.crypto import pki
from fedswarm.crypto.files import KeyMaterialError
from fedswarm.crypto.signing import SigningKey
from fedswarm.node import kit as kits
from fedswarm.node.kit import MemberSpec

NOW = dt.datetime(2031, 3, 1, 9, 30, tzinfo=dt.UTC)
MEMBERS = (
    MemberSpec("aggregator", "aggregator", "127.0.0.1:7000"),
    MemberSpec("bank-b", "member", "bank-b.example:7001", ip_addresses=("10.0.0.2",)),
    MemberSpec("bank-c", "member", "[::1]:7002"),
)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A provisioned federation, created once; tests work on copies."""
    out = tmp_path_factory.mktemp("federation")
    kits.provision(
        MEMBERS,
        federation_name="Fraud Consortium",
        out_dir=out,
        validity_days=90,
        ca_password=b"operator secret",
        kit_passwords={"bank-c": b"bank-c secret"},
        now=NOW,
    )
    return out


@pytest.fixture()
def out(federation: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "federation"
    shutil.copytree(federation, copy)
    return copy


def _edit_json(path: Path, edit: dict[str, object], member: str | None = None) -> None:
    value = json.loads(path.read_text())
    target = value if member is None else next(m for m in value["members"] if m["name"] == member)
    target.update(edit)
    path.write_text(json.dumps(value, indent=2))


# ------------------------------------------------------------------------------------ round trip


def test_provision_layout(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == ["aggregator", "bank-b", "bank-c", "ca"]
    assert sorted(p.name for p in (out / "ca").iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "crl.pem",
        "issued",
        "manifest.json",
        "manifest.sig",
    ]
    assert sorted(p.name for p in (out / "ca" / "issued").iterdir()) == ["aggregator.pem", "bank-b.pem", "bank-c.pem"]
    assert sorted(p.name for p in (out / "bank-b").iterdir()) == [
        "ca.pem",
        "crl.pem",
        "manifest.json",
        "manifest.sig",
        "signing-key.pem",
        "tls-key.pem",
        "tls.pem",
    ]


def test_private_keys_are_0600_and_public_files_0644(out: Path) -> None:
    private = [out / "ca" / "ca-key.pem"] + [
        out / m.name / f for m in MEMBERS for f in ("tls-key.pem", "signing-key.pem")
    ]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in [out / "ca" / "ca.pem", out / "bank-b" / "tls.pem", out / "bank-b" / "manifest.sig"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((out / "bank-b").stat().st_mode) == 0o700


def test_kits_load_and_agree_with_the_manifest(out: Path) -> None:
    loaded = {
        m.name: kits.load_kit(out / m.name, password=b"bank-c secret" if m.name == "bank-c" else None, now=NOW)
        for m in MEMBERS
    }
    manifest = loaded["bank-b"].manifest
    assert manifest.version == 1
    assert manifest.federation_name == "Fraud Consortium"
    assert manifest.created == "2031-03-01T09:30:00Z"
    assert len(manifest.federation_id) == 32
    assert [e.name for e in manifest.members] == ["aggregator", "bank-b", "bank-c"]
    assert [e.role for e in manifest.members] == ["aggregator", "member", "member"]
    ca = pki.Certificate.load(out / "ca" / "ca.pem")
    assert manifest.ca_fingerprint == ca.fingerprint
    for name, kit in loaded.items():
        assert kit.name == name
        assert kit.manifest == manifest
        assert kit.entry.tls_fingerprint == kit.tls_certificate.fingerprint
        assert kit.entry.tls_fingerprint == pki.Certificate.load(out / "ca" / "issued" / f"{name}.pem").fingerprint
        # what a member signs, every other member can verify from the manifest alone
        manifest.member(name).verify_key().verify(b"round 1 update", kit.signing_key.sign(b"round 1 update"))
    bank_b = loaded["bank-b"].tls_certificate
    assert (bank_b.dns_names, bank_b.ip_addresses) == (("bank-b.example",), ("10.0.0.2",))
    assert loaded["aggregator"].tls_certificate.ip_addresses == ("127.0.0.1",)
    assert loaded["bank-c"].tls_certificate.ip_addresses == ("::1",)


def test_manifest_signature_covers_its_canonical_bytes(out: Path) -> None:
    envelope = canonical.decode((out / "bank-b" / "manifest.sig").read_bytes())
    ca = pki.Certificate.load(out / "ca" / "ca.pem")
    signed = canonical.encode(envelope["manifest"])
    pki.verify_document(signed, envelope["signature"], ca=ca, context=kits.MANIFEST_CONTEXT)
    assert json.loads((out / "bank-b" / "manifest.json").read_text()) == envelope["manifest"]


def test_write_kit_round_trip(out: Path, tmp_path: Path) -> None:
    kit = kits.load_kit(out / "bank-b", now=NOW)
    target = tmp_path / "copy"
    kits.write_kit(
        target,
        member="bank-b",
        manifest=kit.signed_manifest,
        ca_cert=kit.ca_certificate,
        tls_cert=kit.tls_certificate,
        tls_key=kit.tls_key,
        signing_key=kit.signing_key,
        crl=kit.crl,
        password=b"new password",
        now=NOW,
    )
    again = kits.load_kit(target, password=b"new password", now=NOW)
    assert again.manifest == kit.manifest and again.tls_certificate == kit.tls_certificate


def test_write_kit_refuses_mismatched_pieces_and_writes_nothing(out: Path, tmp_path: Path) -> None:
    kit = kits.load_kit(out / "bank-b", now=NOW)
    with pytest.raises(VerificationError, match=re.escape("signing-key.pem: public key")):
        kits.write_kit(
            tmp_path / "bad",
            member="bank-b",
            manifest=kit.signed_manifest,
            ca_cert=kit.ca_certificate,
            tls_cert=kit.tls_certificate,
            tls_key=kit.tls_key,
            signing_key=SigningKey.generate(),
            crl=kit.crl,
            now=NOW,
        )
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------- edited manifests


def test_edited_manifest_names_the_member_field(out: Path) -> None:
    _edit_json(out / "bank-b" / "manifest.json", {"address": "10.6.6.6:7001"}, member="aggregator")
    with pytest.raises(VerificationError) as info:
        kits.load_kit(out / "bank-b", now=NOW)
    message = str(info.value)
    assert "edited after the CA signed it" in message
    assert 'members[aggregator].address: signed "127.0.0.1:7000", manifest.json has "10.6.6.6:7001"' in message


def test_edited_manifest_names_a_top_level_field(out: Path) -> None:
    _edit_json(out / "bank-b" / "manifest.json", {"version": 9})
    with pytest.raises(VerificationError, match=re.escape("version: signed 1, manifest.json has 9")):
        kits.load_kit(out / "bank-b", now=NOW)


def test_added_member_in_manifest_copy_is_named(out: Path) -> None:
    path = out / "bank-b" / "manifest.json"
    value = json.loads(path.read_text())
    value["members"].append({**value["members"][0], "name": "mallory"})
    path.write_text(json.dumps(value))
    with pytest.raises(VerificationError, match=r"members\[mallory\]: added"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_manifest_copy_that_is_not_json_is_refused(out: Path) -> None:
    (out / "bank-b" / "manifest.json").write_text("{not json")
    with pytest.raises(VerificationError, match="not valid JSON"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_edited_signed_copy_fails_the_signature(out: Path) -> None:
    path = out / "bank-b" / "manifest.sig"
    envelope = canonical.decode(path.read_bytes())
    envelope["manifest"]["members"][0]["role"] = "member"
    path.write_bytes(canonical.encode(envelope))
    with pytest.raises(VerificationError, match=r"CA signature does not verify.*which field changed cannot be told"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_garbage_envelope_is_refused(out: Path) -> None:
    (out / "bank-b" / "manifest.sig").write_bytes(b'{"format":"x"}')
    with pytest.raises(VerificationError, match=re.escape("not a fedswarm.signed-manifest/1 envelope")):
        kits.load_kit(out / "bank-b", now=NOW)


# ------------------------------------------------------------------------------ other rejections


def test_wrong_ca_is_refused(out: Path, tmp_path: Path) -> None:
    stranger = pki.create_ca("Fraud Consortium CA", validity_days=3650, now=NOW)
    stranger.certificate.save(out / "bank-b" / "ca.pem")
    with pytest.raises(VerificationError, match=r"manifest\.sig: .*\(wrong CA\)"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_pinned_ca_fingerprint_is_enforced(out: Path) -> None:
    real = pki.Certificate.load(out / "ca" / "ca.pem").fingerprint
    kits.load_kit(out / "bank-b", now=NOW, expected_ca_fingerprint=real.upper())
    with pytest.raises(VerificationError, match="is not the pinned CA"):
        kits.load_kit(out / "bank-b", now=NOW, expected_ca_fingerprint="0" * 64)


def test_expired_certificate_is_refused(out: Path) -> None:
    with pytest.raises(VerificationError, match=r"tls\.pem: certificate 'bank-b' .*expired"):
        kits.load_kit(out / "bank-b", now=NOW + dt.timedelta(days=91))


def test_not_yet_valid_kit_is_refused(out: Path) -> None:
    with pytest.raises(VerificationError, match="not yet valid"):
        kits.load_kit(out / "bank-b", now=NOW - dt.timedelta(days=1))


def test_tls_key_mismatch_is_refused(out: Path) -> None:
    shutil.copy(out / "aggregator" / "tls-key.pem", out / "bank-b" / "tls-key.pem")
    with pytest.raises(VerificationError, match=r"tls-key\.pem: .*private key does not match"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_signing_key_mismatch_is_refused(out: Path) -> None:
    shutil.copy(out / "aggregator" / "signing-key.pem", out / "bank-b" / "signing-key.pem")
    with pytest.raises(VerificationError, match=r"signing-key\.pem: public key .* does not match .*'bank-b'"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_swapped_certificate_is_refused(out: Path) -> None:
    shutil.copy(out / "aggregator" / "tls.pem", out / "bank-b" / "tls.pem")
    with pytest.raises(VerificationError, match=r"tls-key\.pem"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_certificate_not_in_manifest_is_refused(out: Path) -> None:
    operator = pki.CertificateAuthority.load(
        out / "ca" / "ca-key.pem", out / "ca" / "ca.pem", password=b"operator secret"
    )
    key = pki.TlsPrivateKey.load(out / "bank-b" / "tls-key.pem")
    pki.issue_certificate(operator, key.public_key(), name="ghost", validity_days=5, now=NOW).save(
        out / "bank-b" / "tls.pem"
    )
    with pytest.raises(VerificationError, match="'ghost' is not a member"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_crl_from_another_ca_is_refused(out: Path) -> None:
    stranger = pki.create_ca("Fraud Consortium CA", validity_days=3650, now=NOW)
    pki.create_crl(stranger, now=NOW).save(out / "bank-b" / "crl.pem")
    with pytest.raises(VerificationError, match=r"crl\.pem: .*not signed by the CA"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_truncated_key_file_is_named(out: Path) -> None:
    path = out / "bank-b" / "signing-key.pem"
    path.write_bytes(path.read_bytes()[:70])
    with pytest.raises(KeyMaterialError, match=r"bank-b/signing-key\.pem: truncated"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_missing_file_is_named(out: Path) -> None:
    (out / "bank-b" / "crl.pem").unlink()
    with pytest.raises(KeyMaterialError, match=r"crl\.pem: missing"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_wrong_password_is_named(out: Path) -> None:
    with pytest.raises(KeyMaterialError, match=r"bank-c/tls-key\.pem: wrong password"):
        kits.load_kit(out / "bank-c", password=b"guess", now=NOW)


def test_missing_password_is_named(out: Path) -> None:
    with pytest.raises(KeyMaterialError, match="password required"):
        kits.load_kit(out / "bank-c", now=NOW)


# ------------------------------------------------------------------------------------- revocation


def test_revoked_member_is_refused_and_others_continue(out: Path) -> None:
    serial = pki.Certificate.load(out / "bank-b" / "tls.pem").serial
    out_entry = kits.load_kit(out / "bank-b", now=NOW).entry
    publication = kits.revoke_member(out, "bank-b", ca_password=b"operator secret", now=NOW)
    assert publication.crl.revoked_serials == {serial}
    assert publication.crl.number == 2
    assert publication.manifest.manifest.version == 2
    assert [e.name for e in publication.manifest.manifest.members] == ["aggregator", "bank-c"]
    revoked = publication.manifest.manifest.revoked
    assert [(e.name, e.since) for e in revoked] == [("bank-b", 1)]  # its entry, unchanged, under revoked
    assert revoked[0] == out_entry
    for name in ("aggregator", "bank-b"):
        kits.update_kit(out / name, publication, now=NOW)
    with pytest.raises(VerificationError, match=f"revoked \\(serial {serial:x}\\)"):
        kits.load_kit(out / "bank-b", now=NOW)
    survivor = kits.load_kit(out / "aggregator", now=NOW)
    assert survivor.manifest.version == 2
    with pytest.raises(VerificationError, match="'bank-b' was revoked"):
        survivor.manifest.member("bank-b")
    with pytest.raises(ConfigurationError, match="'bank-b' was already revoked"):
        kits.revoke_member(out, "bank-b", ca_password=b"operator secret", now=NOW)


def test_old_crl_put_back_after_revocation_is_a_rollback(out: Path) -> None:
    old_crl = pki.RevocationList.load(out / "bank-b" / "crl.pem")
    old = kits.load_kit(out / "bank-b", now=NOW)
    publication = kits.revoke_member(out, "bank-b", ca_password=b"operator secret", now=NOW)
    kits.update_kit(out / "aggregator", publication, now=NOW)
    stale = kits.Publication(old.ca_certificate, old.signed_manifest, old_crl)
    with pytest.raises(VerificationError, match="rollback refused"):
        kits.update_kit(out / "aggregator", stale, now=NOW)


def test_update_from_another_federation_is_refused(out: Path, tmp_path: Path) -> None:
    other = kits.provision(MEMBERS[:1], federation_name="Other", out_dir=tmp_path / "other", validity_days=5, now=NOW)
    with pytest.raises(VerificationError, match=re.escape("not ca.pem")):
        kits.update_kit(out / "aggregator", other.publication, now=NOW)


# ---------------------------------------------------------------------------------------- joining


def test_join_via_csr(out: Path, tmp_path: Path) -> None:
    member_dir = tmp_path / "hospital-d"
    request = kits.create_join_request(
        member_dir, name="hospital-d", role="member", address="hospital-d.example:7003", password=b"d"
    )
    assert stat.S_IMODE((member_dir / "tls-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((member_dir / "signing-key.pem").stat().st_mode) == 0o600
    received = kits.JoinRequest.from_bytes(request.to_bytes())
    admission = kits.add_member(out, received, validity_days=30, ca_password=b"operator secret", now=NOW)
    kit = kits.complete_join(member_dir, kits.Admission.from_bytes(admission.to_bytes()), password=b"d", now=NOW)
    assert kit.name == "hospital-d"
    assert kit.manifest.version == 2
    assert kit.entry.address == "hospital-d.example:7003"
    assert kit.tls_certificate.dns_names == ("hospital-d.example",)
    assert (out / "ca" / "issued" / "hospital-d.pem").exists()
    kits.update_kit(out / "bank-b", admission.publication, now=NOW)
    assert kits.load_kit(out / "bank-b", now=NOW).manifest.member("hospital-d").signing_key == kit.entry.signing_key


def test_join_with_taken_name_is_refused(out: Path, tmp_path: Path) -> None:
    request = kits.create_join_request(tmp_path / "x", name="Bank-B", role="member", address="127.0.0.1:9000")
    with pytest.raises(ConfigurationError, match="'Bank-B' is already taken"):
        kits.add_member(out, request, validity_days=30, ca_password=b"operator secret", now=NOW)


def test_join_with_forged_signature_is_refused(out: Path, tmp_path: Path) -> None:
    request = kits.create_join_request(tmp_path / "x", name="eve", role="aggregator", address="127.0.0.1:9000")
    forged = kits.JoinRequest(
        request.csr, "aggregator", "127.0.0.1:9000", SigningKey.generate().public_key(), request.join_key,
        request.signature,
    )  # fmt: skip
    with pytest.raises(VerificationError, match="join request for 'eve'"):
        kits.add_member(out, forged, validity_days=30, ca_password=b"operator secret", now=NOW)


def test_join_address_must_be_covered_by_the_certificate(out: Path, tmp_path: Path) -> None:
    request = kits.create_join_request(tmp_path / "x", name="eve", role="member", address="127.0.0.1:9000")
    moved = SigningKey.load(tmp_path / "x" / "signing-key.pem")
    unsigned = kits.JoinRequest(request.csr, "member", "10.9.9.9:9000", moved.public_key(), request.join_key, b"")
    resigned = replace(unsigned, signature=moved.sign(unsigned.signed_bytes()))
    with pytest.raises(ConfigurationError, match=re.escape("'10.9.9.9' is not among the requested SANs")):
        kits.add_member(out, resigned, validity_days=30, ca_password=b"operator secret", now=NOW)


def test_operator_ca_key_needs_its_password(out: Path, tmp_path: Path) -> None:
    request = kits.create_join_request(tmp_path / "x", name="eve", role="member", address="127.0.0.1:9000")
    with pytest.raises(KeyMaterialError, match=r"ca-key\.pem: wrong password"):
        kits.add_member(out, request, validity_days=30, ca_password=b"nope", now=NOW)


# ---------------------------------------------------------------------------------- provisioning


def test_provision_refuses_to_overwrite(out: Path) -> None:
    with pytest.raises(ConfigurationError, match="refusing to overwrite"):
        kits.provision(MEMBERS, federation_name="Again", out_dir=out, validity_days=5, now=NOW)


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ((), "at least one member"),
        ((MEMBERS[0], MEMBERS[0]), "duplicate member names"),
        ((MEMBERS[0], MemberSpec("AGGREGATOR", "member", "127.0.0.1:1")), "duplicate member names"),
    ],
)
def test_provision_refuses_bad_member_lists(tmp_path: Path, members: tuple[MemberSpec, ...], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        kits.provision(members, federation_name="F", out_dir=tmp_path, validity_days=5, now=NOW)


@pytest.mark.parametrize(
    ("name", "role", "address", "match"),
    [
        ("ca", "member", "127.0.0.1:1", "reserved"),
        ("../up", "member", "127.0.0.1:1", "letters, digits"),
        ("ok", "boss", "127.0.0.1:1", "is not one of"),
        ("ok", "member", "127.0.0.1", "host:port"),
        ("ok", "member", "127.0.0.1:70000", "host:port"),
        ("ok", "member", "::1:7000", "brackets"),
    ],
)
def test_member_spec_validation(name: str, role: str, address: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        MemberSpec(name, role, address)  # type: ignore[arg-type]
