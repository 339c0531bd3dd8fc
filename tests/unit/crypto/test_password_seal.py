"""Password-sealed secrets (scrypt + AES-256-GCM) and password files: the documented format checked with an
independent scrypt (hashlib), RFC 7914's vector, every refusal, and a round-trip property."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedswarm.core.errors import ConfigurationError
from fedswarm.crypto import files
from fedswarm.crypto.aead import aes_gcm_decrypt
from fedswarm.crypto.files import (
    SEALED_MAGIC,
    KeyMaterialError,
    is_password_sealed,
    open_with_password,
    read_password_file,
    read_secret,
    seal_with_password,
    write_secret,
)

LABEL = "fedswarm.test-secret.v1"


def test_scrypt_matches_rfc_7914_test_vector() -> None:
    # RFC 7914, section 12: P = "password", S = "NaCl", N = 1024, r = 8, p = 16 (first 32 of the 64 bytes)
    expected = bytes.fromhex("fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162")
    assert files._scrypt_key(b"password", b"NaCl", 10, 8, 16) == expected


def test_sealed_format_opens_with_an_independent_scrypt_and_aes_gcm() -> None:
    sealed = seal_with_password(b"the secret context", b"correct horse", label=LABEL)
    assert sealed.startswith(SEALED_MAGIC) and is_password_sealed(sealed)
    m = len(SEALED_MAGIC)
    log2_n, r, p = sealed[m], sealed[m + 1], sealed[m + 2]
    assert (log2_n, r, p) == (15, 8, 1)
    salt, nonce, body = sealed[m + 3 : m + 19], sealed[m + 19 : m + 31], sealed[m + 31 :]
    key = hashlib.scrypt(b"correct horse", salt=salt, n=1 << log2_n, r=r, p=p, dklen=32, maxmem=64 << 20)
    header = sealed[: m + 19]
    assert aes_gcm_decrypt(key, nonce, body, associated_data=header + LABEL.encode()) == b"the secret context"
    assert len(sealed) == m + 3 + 16 + 12 + len(b"the secret context") + 16


def test_two_seals_of_the_same_secret_differ() -> None:
    assert seal_with_password(b"x", b"pw", label=LABEL) != seal_with_password(b"x", b"pw", label=LABEL)


@pytest.mark.parametrize(
    ("password", "label", "edit", "problem"),
    [
        (b"wrong", LABEL, None, "wrong password"),
        (b"pw", "fedswarm.other.v1", None, "wrong password"),  # another kind of secret
        (b"pw", LABEL, lambda b: b[:-1] + bytes([b[-1] ^ 1]), "wrong password"),  # altered tag
        (b"pw", LABEL, lambda b: b[: len(SEALED_MAGIC) + 10], "truncated"),
        (b"pw", LABEL, lambda b: b[: len(SEALED_MAGIC)] + bytes([30]) + b[len(SEALED_MAGIC) + 1 :], "wrong format"),
        (None, LABEL, None, "password required"),
    ],
)
def test_refusals_name_the_source(password: bytes | None, label: str, edit: object, problem: str) -> None:
    sealed = seal_with_password(b"secret", b"pw", label=LABEL)
    if callable(edit):
        sealed = edit(sealed)
    with pytest.raises(KeyMaterialError, match=f"kit/ckks-secret.ctx: {problem}") as caught:
        open_with_password(sealed, password, label=label, source="kit/ckks-secret.ctx")
    assert caught.value.problem == problem


def test_plain_bytes_are_not_opened_and_empty_passwords_are_refused() -> None:
    with pytest.raises(KeyMaterialError, match="x: not encrypted"):
        open_with_password(b"plain protobuf bytes", b"pw", label=LABEL, source="x")
    with pytest.raises(ConfigurationError, match="empty password"):
        seal_with_password(b"secret", b"", label=LABEL)


def test_write_and_read_secret(tmp_path: Path) -> None:
    plain, sealed = tmp_path / "plain.ctx", tmp_path / "sealed.ctx"
    write_secret(plain, b"\x00secret", password=None, label=LABEL)
    write_secret(sealed, b"\x00secret", password=b"pw", label=LABEL)
    for path in (plain, sealed):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert plain.read_bytes() == b"\x00secret" and b"secret" not in sealed.read_bytes()
    assert read_secret(plain, password=None, label=LABEL) == b"\x00secret"
    assert read_secret(sealed, password=b"pw", label=LABEL) == b"\x00secret"
    with pytest.raises(KeyMaterialError, match="plain.ctx: not encrypted"):  # a password is never ignored
        read_secret(plain, password=b"pw", label=LABEL)
    with pytest.raises(KeyMaterialError, match="sealed.ctx: password required"):
        read_secret(sealed, password=None, label=LABEL)
    with pytest.raises(KeyMaterialError, match="missing.ctx: missing"):
        read_secret(tmp_path / "missing.ctx", password=None, label=LABEL)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"s3cret\n", b"s3cret"),
        (b"s3cret\r\n", b"s3cret"),
        (b"s3cret", b"s3cret"),
        (b" two words \n\n", b" two words \n"),
    ],
)
def test_password_file_loses_one_trailing_newline(tmp_path: Path, content: bytes, expected: bytes) -> None:
    path = tmp_path / "password"
    path.write_bytes(content)
    assert read_password_file(path) == expected


def test_empty_or_missing_password_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"\n")
    with pytest.raises(KeyMaterialError, match="empty: empty"):
        read_password_file(tmp_path / "empty")
    with pytest.raises(KeyMaterialError, match="nope: missing"):
        read_password_file(tmp_path / "nope")


@settings(max_examples=8)
@given(secret=st.binary(max_size=256), password=st.binary(min_size=1, max_size=32))
def test_round_trip(secret: bytes, password: bytes) -> None:
    sealed = seal_with_password(secret, password, label=LABEL)
    assert open_with_password(sealed, password, label=LABEL, source="s") == secret
