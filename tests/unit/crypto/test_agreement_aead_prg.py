"""Known-answer and refusal tests of X25519, AES-256-GCM, the AES-CTR PRG and HKDF-SHA256."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from fedswarm.core.errors import ParameterError, VerificationError
from fedswarm.crypto.aead import AEAD_OVERHEAD, aead_open, aead_seal, aes_gcm_decrypt, aes_gcm_encrypt
from fedswarm.crypto.agreement import generate_x25519, x25519_public, x25519_shared
from fedswarm.crypto.kdf import hkdf_sha256
from fedswarm.crypto.prg import aes_ctr_keystream, prg_uint64

VECTORS = Path(__file__).parents[2] / "vectors" / "secagg"


def _vectors() -> ModuleType:
    spec = importlib.util.spec_from_file_location("secagg_vectors", VECTORS / "secagg_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


V = _vectors()


@pytest.mark.parametrize("case", V.load("x25519_rfc7748")["scalar_mult"], ids=lambda c: c["name"])
def test_x25519_rfc7748_scalar_mult(case: dict[str, str]) -> None:
    c = V.hex_fields(case)
    assert x25519_shared(c["scalar"], c["u"]) == c["output"]


def test_x25519_rfc7748_diffie_hellman() -> None:
    dh = V.hex_fields(V.load("x25519_rfc7748")["diffie_hellman"])
    assert x25519_public(dh["alice_private"]) == dh["alice_public"]
    assert x25519_public(dh["bob_private"]) == dh["bob_public"]
    assert x25519_shared(dh["alice_private"], dh["bob_public"]) == dh["shared"]
    assert x25519_shared(dh["bob_private"], dh["alice_public"]) == dh["shared"]


def test_x25519_fresh_pairs_agree_and_hide_private_key() -> None:
    a, b = generate_x25519(), generate_x25519()
    assert x25519_public(a.private) == a.public
    assert x25519_shared(a.private, b.public) == x25519_shared(b.private, a.public)
    assert a.private.hex() not in repr(a)


def test_x25519_refuses_low_order_point_and_bad_lengths() -> None:
    with pytest.raises(VerificationError, match="all-zero"):
        x25519_shared(generate_x25519().private, bytes(32))
    with pytest.raises(ParameterError, match="peer public key"):
        x25519_shared(generate_x25519().private, bytes(31))


@pytest.mark.parametrize("case", V.load("aes_gcm")["cases"], ids=lambda c: c["name"])
def test_aes_gcm_known_answer(case: dict[str, str]) -> None:
    c = V.hex_fields(case)
    sealed = aes_gcm_encrypt(c["key"], c["nonce"], c["plaintext"], associated_data=c["aad"])
    assert sealed == c["ciphertext"] + c["tag"]
    assert aes_gcm_decrypt(c["key"], c["nonce"], sealed, associated_data=c["aad"]) == c["plaintext"]
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(VerificationError):
        aes_gcm_decrypt(c["key"], c["nonce"], tampered, associated_data=c["aad"])


def test_aead_seal_open_round_trip_and_every_tampering_fails() -> None:
    key = bytes(range(32))
    sealed = aead_seal(key, b"shares", associated_data=b"ctx")
    assert len(sealed) == len(b"shares") + AEAD_OVERHEAD
    assert aead_open(key, sealed, associated_data=b"ctx") == b"shares"
    assert aead_seal(key, b"shares", associated_data=b"ctx") != sealed  # fresh nonce
    with pytest.raises(VerificationError):
        aead_open(key, sealed, associated_data=b"other context")
    with pytest.raises(VerificationError):
        aead_open(bytes(32), sealed, associated_data=b"ctx")
    for i in range(len(sealed)):
        flipped = sealed[:i] + bytes([sealed[i] ^ 0x80]) + sealed[i + 1 :]
        with pytest.raises(VerificationError):
            aead_open(key, flipped, associated_data=b"ctx")
    with pytest.raises(VerificationError, match="shorter"):
        aead_open(key, sealed[:10], associated_data=b"ctx")
    with pytest.raises(ParameterError, match="AES-256"):
        aead_seal(bytes(16), b"x", associated_data=b"")


def test_aes_ctr_nist_sp800_38a_f55() -> None:
    c = V.hex_fields(V.load("aes_ctr_sp800_38a")["ctr"])
    stream = aes_ctr_keystream(c["key"], initial_counter=c["initial_counter"], length=len(c["plaintext"]))
    assert bytes(p ^ s for p, s in zip(c["plaintext"], stream, strict=True)) == c["ciphertext"]


@pytest.mark.parametrize("case", V.prg_cases(), ids=lambda c: c["name"])
def test_prg_known_answer(case: dict[str, Any]) -> None:
    words = prg_uint64(case["seed"], case["length"])
    assert words.dtype == np.uint64 and words.shape == (case["length"],)
    assert [int(words[i]) for i in case["offsets"]] == case["words"]


def test_prg_first_block_is_aes256_of_zero_block() -> None:
    # AES-256 with the all-zero key maps the all-zero block to dc95c078a2408989ad48a21492842087.
    words = prg_uint64(bytes(32), 2)
    assert words.astype("<u8").tobytes().hex() == "dc95c078a2408989ad48a21492842087"


def test_prg_is_deterministic_seed_sensitive_prefix_stable_and_fast() -> None:
    seed = bytes(range(32))
    long = prg_uint64(seed, 100_000)
    assert np.array_equal(prg_uint64(seed, 1_000), long[:1_000])
    other = prg_uint64(bytes([1]) + seed[1:], 100_000)
    assert np.mean(long == other) < 1e-3
    # Each bit position is set about half the time.
    bits = np.unpackbits(long.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.002
    start = time.perf_counter()
    for _ in range(10):
        prg_uint64(seed, 100_000)
    assert (time.perf_counter() - start) / 10 < 0.05  # milliseconds in practice
    with pytest.raises(ParameterError, match="32 bytes"):
        prg_uint64(bytes(16), 4)


def test_hkdf_rfc5869_case_1_and_label_separation() -> None:
    c = V.hex_fields(V.load("hkdf_rfc5869"))
    assert hkdf_sha256(c["ikm"], salt=c["salt"], info=c["info"], length=c["length"]) == c["okm"]
    assert hkdf_sha256(b"k", info=b"a") != hkdf_sha256(b"k", info=b"b")
    with pytest.raises(ParameterError, match="length"):
        hkdf_sha256(b"k", info=b"a", length=0)
