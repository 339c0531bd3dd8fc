"""CKKS key material in startup kits: who holds which context, that they work together, that the kit check
covers them (naming the file), and that a member admitted later gets the same keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedswarm.core.errors import VerificationError
from fedswarm.crypto import pki
from fedswarm.crypto.files import SEALED_MAGIC, KeyMaterialError, seal_with_password
from fedswarm.node import kit as kits
from fedswarm.node.ckks_keys import SECRET_LABEL
from fedswarm.node.kit import MemberSpec
from fedswarm.privacy.he.ckks import CKKSAdder, CKKSKeyHolder, CKKSParams, ckks_error_bound

pytest.importorskip("tenseal")

NOW = dt.datetime.now(dt.UTC)  # ckks_material checks validity at the current time
PARAMS = CKKSParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(40, 20, 40), scale_bits=20)
MEMBERS = (
    MemberSpec("aggregator", "aggregator", "127.0.0.1:7000"),
    MemberSpec("bank-b", "member", "127.0.0.1:7001"),
    MemberSpec("bank-c", "member", "127.0.0.1:7002"),
)
CA_PASSWORD, C_PASSWORD = b"operator secret", b"bank-c secret"


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckks-federation")
    kits.provision(
        MEMBERS,
        federation_name="HE Consortium",
        out_dir=out,
        validity_days=90,
        ca_password=CA_PASSWORD,
        kit_passwords={"bank-c": C_PASSWORD},
        ckks=PARAMS,
        now=NOW,
    )
    return out


@pytest.fixture()
def out(federation: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "federation"
    shutil.copytree(federation, copy)
    return copy


def _material(out: Path, name: str) -> tuple[bytes, bytes | None]:
    found = kits.ckks_material(out / name, password=C_PASSWORD if name == "bank-c" else None)
    assert found is not None
    return found


# ------------------------------------------------------------------------------------- who holds what


def test_every_kit_has_the_public_context_and_only_members_the_secret_one(out: Path) -> None:
    for name in ("aggregator", "bank-b", "bank-c", "ca"):
        assert stat.S_IMODE((out / name / "ckks-public.ctx").stat().st_mode) == 0o644, name
    for name in ("bank-b", "bank-c", "ca"):
        assert stat.S_IMODE((out / name / "ckks-secret.ctx").stat().st_mode) == 0o600, name
    assert not (out / "aggregator" / "ckks-secret.ctx").exists()
    # sealed with the kit password (bank-c) and the CA password (ca); bank-b has no password
    assert (out / "bank-c" / "ckks-secret.ctx").read_bytes().startswith(SEALED_MAGIC)
    assert (out / "ca" / "ckks-secret.ctx").read_bytes().startswith(SEALED_MAGIC)
    assert not (out / "bank-b" / "ckks-secret.ctx").read_bytes().startswith(SEALED_MAGIC)


def test_ckks_material_returns_the_same_contexts_everywhere_and_no_secret_to_the_aggregator(out: Path) -> None:
    public, none = _material(out, "aggregator")
    assert none is None
    b_public, b_secret = _material(out, "bank-b")
    c_public, c_secret = _material(out, "bank-c")
    assert public == b_public == c_public
    assert b_secret is not None and b_secret == c_secret
    keys = kits.load_kit(out / "bank-b", now=NOW).manifest.ckks
    assert keys is not None
    assert keys.public_context == hashlib.sha256(public).hexdigest()
    assert keys.secret_context == hashlib.sha256(b_secret).hexdigest()
    assert (keys.poly_modulus_degree, keys.coeff_mod_bit_sizes, keys.scale_bits) == (4096, (40, 20, 40), 20)


def test_members_encrypt_the_aggregator_adds_without_the_key_and_a_member_decrypts(out: Path) -> None:
    public, _ = _material(out, "aggregator")
    _, b_secret = _material(out, "bank-b")
    _, c_secret = _material(out, "bank-c")
    assert b_secret is not None and c_secret is not None
    with pytest.raises(VerificationError, match="must hold the secret key"):
        CKKSKeyHolder(public, PARAMS)  # the public context cannot decrypt
    first = CKKSKeyHolder(b_secret, PARAMS).encrypt([1.5, -2.0, 3.25])
    second = CKKSKeyHolder(c_secret, PARAMS).encrypt([10.0, 20.0, -30.0])
    total = CKKSAdder(public, PARAMS).add([first, second], length=3)
    decrypted = CKKSKeyHolder(b_secret, PARAMS).decrypt(total, length=3)
    np.testing.assert_allclose(decrypted, [11.5, 18.0, -26.75], rtol=0, atol=ckks_error_bound(2, PARAMS))


def test_a_federation_without_ckks_has_no_material(tmp_path: Path) -> None:
    kits.provision(MEMBERS[:2], federation_name="Plain", out_dir=tmp_path, validity_days=5, now=NOW)
    assert kits.ckks_material(tmp_path / "bank-b") is None
    assert "ckks" not in json.loads((tmp_path / "bank-b" / "manifest.json").read_text())


# ------------------------------------------------------------------------------------ verification


def test_substituted_public_context_is_named(out: Path) -> None:
    path = out / "bank-b" / "ckks-public.ctx"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(VerificationError, match=r"bank-b/ckks-public\.ctx: SHA-256 .* ckks\.public_context"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_secret_context_of_another_federation_is_named(out: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    kits.provision(MEMBERS[1:2], federation_name="Other", out_dir=other, validity_days=5, ckks=PARAMS, now=NOW)
    shutil.copyfile(other / "bank-b" / "ckks-secret.ctx", out / "bank-b" / "ckks-secret.ctx")
    with pytest.raises(VerificationError, match=r"bank-b/ckks-secret\.ctx: SHA-256 .* ckks\.secret_context"):
        kits.ckks_material(out / "bank-b")


def test_secret_context_in_the_aggregators_kit_is_refused(out: Path) -> None:
    shutil.copyfile(out / "bank-b" / "ckks-secret.ctx", out / "aggregator" / "ckks-secret.ctx")
    with pytest.raises(VerificationError, match=r"aggregator/ckks-secret\.ctx: the aggregator's kit must not hold"):
        kits.load_kit(out / "aggregator", now=NOW)


def test_missing_secret_context_in_a_members_kit_is_named(out: Path) -> None:
    (out / "bank-b" / "ckks-secret.ctx").unlink()
    with pytest.raises(KeyMaterialError, match=r"bank-b/ckks-secret\.ctx: missing"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_secret_context_sealed_with_another_password_is_named(out: Path) -> None:
    path = out / "bank-c" / "ckks-secret.ctx"
    secret = _material(out, "bank-c")[1]
    assert secret is not None
    path.write_bytes(seal_with_password(secret, b"not the kit password", label=SECRET_LABEL))
    with pytest.raises(KeyMaterialError, match=r"bank-c/ckks-secret\.ctx: wrong password"):
        kits.ckks_material(out / "bank-c", password=C_PASSWORD)
    with pytest.raises(KeyMaterialError, match=r"bank-c/tls-key\.pem: password required"):
        kits.ckks_material(out / "bank-c")


def test_ckks_files_without_keys_in_the_manifest_are_refused(out: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    kits.provision(MEMBERS[1:2], federation_name="Plain", out_dir=plain, validity_days=5, now=NOW)
    shutil.copyfile(out / "bank-b" / "ckks-public.ctx", plain / "bank-b" / "ckks-public.ctx")
    with pytest.raises(VerificationError, match=r"ckks-public\.ctx: CKKS key material, but the CA-signed manifest"):
        kits.load_kit(plain / "bank-b", now=NOW)


def test_edited_ckks_digest_in_manifest_json_is_named(out: Path) -> None:
    path = out / "bank-b" / "manifest.json"
    value = json.loads(path.read_text())
    value["ckks"]["public_context"] = "0" * 64
    path.write_text(json.dumps(value))
    with pytest.raises(VerificationError, match=r"ckks\.public_context: signed"):
        kits.load_kit(out / "bank-b", now=NOW)


def test_publication_with_other_ckks_keys_is_refused(out: Path, tmp_path: Path) -> None:
    publication = kits.revoke_member(out, "bank-c", ca_password=CA_PASSWORD, now=NOW)
    assert publication.manifest.manifest.ckks == kits.load_kit(out / "bank-b", now=NOW).manifest.ckks
    kits.update_kit(out / "bank-b", publication, now=NOW)  # the keys do not change: installed
    assert kits.load_kit(out / "bank-b", now=NOW).manifest.version == 2
    current = kits.load_kit(out / "aggregator", now=NOW).manifest
    assert current.ckks is not None
    ca = pki.CertificateAuthority.load(out / "ca" / "ca-key.pem", out / "ca" / "ca.pem", password=CA_PASSWORD)
    forged = replace(current, version=9, ckks=replace(current.ckks, secret_context="1" * 64))
    signed = kits.SignedManifest.sign(forged, ca)
    with pytest.raises(VerificationError, match="other CKKS keys"):
        kits.update_kit(out / "aggregator", kits.Publication(ca.certificate, signed, publication.crl), now=NOW)


def test_reload_keeps_the_contexts_without_the_password(out: Path) -> None:
    kit = kits.load_kit(out / "bank-c", password=C_PASSWORD, now=NOW)
    publication = kits.revoke_member(out, "bank-b", ca_password=CA_PASSWORD, now=NOW)
    kits.update_kit(out / "bank-c", publication, now=NOW)
    reloaded = kits.reload_kit(kit, now=NOW)
    assert reloaded.manifest.version == 2 and reloaded.ckks == kit.ckks
    (out / "bank-c" / "ckks-public.ctx").write_bytes(b"tampered")  # reload checks memory, not the file again
    assert kits.reload_kit(kit, now=NOW).ckks == kit.ckks


def test_kit_is_encrypted(out: Path) -> None:
    assert kits.kit_is_encrypted(out / "bank-c")
    assert not kits.kit_is_encrypted(out / "bank-b")


# ----------------------------------------------------------------------------------------- joining


def test_newcomer_gets_the_same_contexts_sealed_to_its_join_key(out: Path, tmp_path: Path) -> None:
    newcomer = tmp_path / "bank-d"
    request = kits.create_join_request(newcomer, name="bank-d", role="member", address="127.0.0.1:7003", password=b"d")
    assert stat.S_IMODE((newcomer / "join-key.secret").stat().st_mode) == 0o600
    admission = kits.add_member(out, request, validity_days=30, ca_password=CA_PASSWORD, now=NOW)
    wire = admission.to_bytes()
    _, secret = _material(out, "bank-b")
    assert secret is not None and secret not in wire  # the admission never carries the secret in clear
    kit = kits.complete_join(newcomer, kits.Admission.from_bytes(wire), password=b"d", now=NOW)
    assert kit.ckks is not None and kit.ckks.secret == secret and kit.ckks.public == _material(out, "bank-b")[0]
    assert (newcomer / "ckks-secret.ctx").read_bytes().startswith(SEALED_MAGIC)  # sealed with the kit password
    assert not (newcomer / "join-key.secret").exists()
    assert kits.ckks_material(newcomer, password=b"d") == (kit.ckks.public, secret)


def test_an_aggregator_newcomer_gets_no_secret(out: Path, tmp_path: Path) -> None:
    request = kits.create_join_request(tmp_path / "agg2", name="agg2", role="aggregator", address="127.0.0.1:7004")
    admission = kits.add_member(out, request, validity_days=30, ca_password=CA_PASSWORD, now=NOW)
    assert admission.ckks is not None and admission.ckks.sealed_secret == b""
    kit = kits.complete_join(tmp_path / "agg2", admission, now=NOW)
    assert kit.ckks is not None and kit.ckks.secret is None
    assert not (tmp_path / "agg2" / "ckks-secret.ctx").exists()


def test_sealed_secret_does_not_open_with_another_join_key(out: Path, tmp_path: Path) -> None:
    request = kits.create_join_request(tmp_path / "d", name="bank-d", role="member", address="127.0.0.1:7003")
    admission = kits.add_member(out, request, validity_days=30, ca_password=CA_PASSWORD, now=NOW)
    kits.create_join_request(tmp_path / "e", name="bank-d", role="member", address="127.0.0.1:7003")
    shutil.copyfile(tmp_path / "e" / "join-key.secret", tmp_path / "d" / "join-key.secret")
    with pytest.raises(VerificationError, match="does not open with this member's join key"):
        kits.complete_join(tmp_path / "d", admission, now=NOW)
    assert not (tmp_path / "d" / "ckks-secret.ctx").exists()


def test_admitting_needs_the_ca_password_for_the_operators_secret_copy(out: Path, tmp_path: Path) -> None:
    request = kits.create_join_request(tmp_path / "d", name="bank-d", role="member", address="127.0.0.1:7003")
    key = (out / "ca" / "ca-key.pem").read_bytes()
    sealed_copy = (out / "ca" / "ckks-secret.ctx").read_bytes()
    _, secret = _material(out, "bank-b")
    assert secret is not None
    (out / "ca" / "ckks-secret.ctx").write_bytes(seal_with_password(secret, b"other", label=SECRET_LABEL))
    with pytest.raises(KeyMaterialError, match=r"ca/ckks-secret\.ctx: wrong password"):
        kits.add_member(out, request, validity_days=30, ca_password=CA_PASSWORD, now=NOW)
    assert (out / "ca" / "ca-key.pem").read_bytes() == key and sealed_copy != secret
    assert kits.load_kit(out / "bank-b", now=NOW).manifest.version == 1  # nothing was published
