"""Ed25519 signing keys: RFC 8032 known answers, rejection paths, PEM and key files."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.crypto import signing
from fedswarm.crypto.files import KeyMaterialError, read_material, write_private, write_public
from fedswarm.crypto.signing import SigningKey, VerifyKey

VECTORS = Path(__file__).parents[2] / "vectors" / "crypto" / "rfc8032_ed25519.json"


def load_rfc8032_vectors() -> list[dict[str, Any]]:
    """The RFC 8032 section 7.1 Ed25519 vectors, hex fields decoded to bytes."""
    document = json.loads(VECTORS.read_text())
    assert "RFC 8032" in document["source"]
    return [
        {"name": v["name"], **{k: bytes.fromhex(v[k]) for k in ("secret_key", "public_key", "message", "signature")}}
        for v in document["vectors"]
    ]


RFC8032 = load_rfc8032_vectors()


def test_vector_file_has_the_five_rfc_tests() -> None:
    assert [v["name"] for v in RFC8032] == ["TEST 1", "TEST 2", "TEST 3", "TEST 1024", "TEST SHA(abc)"]
    assert len(RFC8032[3]["message"]) == 1023
    assert RFC8032[4]["message"] == hashlib.sha512(b"abc").digest()


@pytest.mark.parametrize("vector", RFC8032, ids=[v["name"] for v in RFC8032])
def test_rfc8032_known_answers(vector: dict[str, Any]) -> None:
    key = SigningKey.from_seed(vector["secret_key"])
    assert key.public_key().raw == vector["public_key"]
    assert key.sign(vector["message"]) == vector["signature"]
    VerifyKey.from_raw(vector["public_key"]).verify(vector["message"], vector["signature"])


@pytest.mark.parametrize("vector", RFC8032, ids=[v["name"] for v in RFC8032])
def test_rfc8032_altered_message_is_rejected(vector: dict[str, Any]) -> None:
    message = (
        vector["message"] + b"\x00"
        if not vector["message"]
        else bytes([vector["message"][0] ^ 1]) + vector["message"][1:]
    )
    with pytest.raises(VerificationError, match="does not verify"):
        VerifyKey.from_raw(vector["public_key"]).verify(message, vector["signature"])


def test_altered_signature_is_rejected() -> None:
    vector = RFC8032[1]
    signature = bytearray(vector["signature"])
    signature[40] ^= 0x80
    with pytest.raises(VerificationError, match="does not verify"):
        VerifyKey.from_raw(vector["public_key"]).verify(vector["message"], bytes(signature))


def test_signature_from_another_key_is_rejected() -> None:
    signer, other = SigningKey.generate(), SigningKey.generate()
    with pytest.raises(VerificationError, match=other.public_key().fingerprint[:16]):
        other.public_key().verify(b"update", signer.sign(b"update"))


@pytest.mark.parametrize("length", [0, 63, 65])
def test_signature_of_wrong_length_is_rejected(length: int) -> None:
    key = SigningKey.generate()
    with pytest.raises(VerificationError, match=f"64 bytes, got {length}"):
        key.public_key().verify(b"m", b"\x01" * length)


def test_fingerprint_is_sha256_of_raw_key() -> None:
    public = VerifyKey.from_raw(RFC8032[0]["public_key"])
    assert public.fingerprint == hashlib.sha256(RFC8032[0]["public_key"]).hexdigest()
    assert public.hex == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert VerifyKey.from_hex(public.hex) == public
    assert hash(VerifyKey.from_hex(public.hex)) == hash(public)


@pytest.mark.parametrize("raw", [b"", b"\x01" * 31, b"\x01" * 33])
def test_verify_key_of_wrong_length_is_refused(raw: bytes) -> None:
    with pytest.raises(KeyMaterialError, match="expected 32 bytes"):
        VerifyKey.from_raw(raw)


def test_verify_key_from_non_hex_is_refused() -> None:
    with pytest.raises(KeyMaterialError, match="not hex"):
        VerifyKey.from_hex("zz" * 32)


def test_seed_of_wrong_length_is_refused() -> None:
    with pytest.raises(KeyMaterialError, match="32-byte seed"):
        SigningKey.from_seed(b"\x00" * 31)


def test_private_pem_round_trip_without_password() -> None:
    key = SigningKey.from_seed(RFC8032[2]["secret_key"])
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert SigningKey.from_pem(pem).sign(b"x") == key.sign(b"x")


def test_private_pem_round_trip_with_password() -> None:
    key = SigningKey.generate()
    pem = key.to_pem(password=b"correct horse")
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert SigningKey.from_pem(pem, password=b"correct horse").public_key() == key.public_key()


def test_wrong_password_is_named() -> None:
    pem = SigningKey.generate().to_pem(password=b"right")
    with pytest.raises(KeyMaterialError, match="wrong password") as info:
        SigningKey.from_pem(pem, password=b"wrong", source="member.pem")
    assert info.value.problem == "wrong password"
    assert "member.pem" in str(info.value)


def test_missing_password_is_named() -> None:
    pem = SigningKey.generate().to_pem(password=b"right")
    with pytest.raises(KeyMaterialError, match="password required"):
        SigningKey.from_pem(pem)


def test_password_for_plain_key_is_refused() -> None:
    with pytest.raises(KeyMaterialError, match="not encrypted"):
        SigningKey.from_pem(SigningKey.generate().to_pem(), password=b"pw")


def test_empty_password_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="empty password"):
        SigningKey.generate().to_pem(password=b"")


def test_key_of_another_algorithm_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyMaterialError, match="expected an Ed25519 key") as info:
        SigningKey.from_pem(other)
    assert info.value.problem == "wrong type"


def test_public_pem_round_trip_and_wrong_label() -> None:
    public = SigningKey.generate().public_key()
    assert VerifyKey.from_pem(public.to_pem()) == public
    with pytest.raises(KeyMaterialError, match="wrong type"):
        VerifyKey.from_pem(SigningKey.generate().to_pem())


def test_repr_does_not_show_the_secret() -> None:
    seed = RFC8032[0]["secret_key"]
    text = repr(SigningKey.from_seed(seed))
    assert seed.hex() not in text
    assert RFC8032[0]["public_key"].hex() in text


# ------------------------------------------------------------------------------------ key files


def test_saved_private_key_has_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    key = SigningKey.generate()
    key.save(path, password=b"pw")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.load(path, password=b"pw").public_key() == key.public_key()


def test_overwriting_a_world_readable_file_leaves_0600(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    write_private(path, b"new secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"new secret"


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_public(tmp_path / "a.pem", b"public")
    write_private(tmp_path / "b.pem", b"private")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pem", "b.pem"]
    assert stat.S_IMODE((tmp_path / "a.pem").stat().st_mode) == 0o644


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    write_private(path, b"old")
    with pytest.raises(TypeError):
        write_private(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.pem"]


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.pem"
    with pytest.raises(KeyMaterialError, match=r"nope\.pem: missing") as info:
        SigningKey.load(path)
    assert info.value.problem == "missing"


def test_empty_key_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "empty.pem"
    path.write_bytes(b"\n")
    with pytest.raises(KeyMaterialError, match=r"empty\.pem: empty"):
        read_material(path)


def test_directory_instead_of_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="unreadable"):
        read_material(tmp_path)


def test_truncated_key_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    SigningKey.generate().save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(KeyMaterialError, match=r"signing-key\.pem: truncated") as info:
        SigningKey.load(path)
    assert info.value.problem == "truncated"


def test_corrupted_key_body_is_wrong_format(tmp_path: Path) -> None:
    path = tmp_path / "signing-key.pem"
    lines = SigningKey.generate().to_pem().splitlines()
    path.write_bytes(b"\n".join([lines[0], b"AAAA" + lines[1][4:-8], lines[-1]]) + b"\n")
    with pytest.raises(KeyMaterialError, match="wrong format"):
        SigningKey.load(path)


def test_non_pem_file_is_wrong_format(tmp_path: Path) -> None:
    path = tmp_path / "key.der"
    path.write_bytes(b"\x30\x2e\x02\x01\x00")
    with pytest.raises(KeyMaterialError, match=r"key\.der: wrong format .*not a PEM file"):
        SigningKey.load(path)


@pytest.mark.parametrize("vector", RFC8032, ids=[v["name"] for v in RFC8032])
def test_rfc8032_known_answers_on_the_openssl_path(vector: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signing, "SODIUM_SIGN_LIMIT", -1)  # every message now goes to OpenSSL
    assert SigningKey.from_seed(vector["secret_key"]).sign(vector["message"]) == vector["signature"]


@pytest.mark.parametrize("size", [0, 1, signing.SODIUM_SIGN_LIMIT, signing.SODIUM_SIGN_LIMIT + 1, 200_000])
def test_both_signing_paths_give_the_same_signature_around_the_limit(size: int) -> None:
    seed = hashlib.sha256(b"limit").digest()
    key = SigningKey.from_seed(seed)
    message = hashlib.shake_256(str(size).encode()).digest(size) if size else b""
    reference = ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(message)
    assert key.sign(message) == reference
    assert key.sign(bytearray(message)) == reference
    key.public_key().verify(message, reference)
