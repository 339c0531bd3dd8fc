"""Strict Ed25519 verification: small-order and non-canonical keys refused, libsodium's signature rules.

The vectors come from data files (tests/vectors/crypto/README.md); this module re-derives them with a
few lines of plain-Python edwards25519 arithmetic (RFC 8032 section 5.1) so the files are not taken on trust.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from nacl.exceptions import BadSignatureError

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.batch import BatchVerificationError, verify_signatures
from fedswarm.crypto.files import KeyMaterialError
from fedswarm.crypto.signing import SigningKey, VerifyKey, WeakKeyError, check_public_key

VECTORS = Path(__file__).parents[2] / "vectors" / "crypto"

# ------------------------------------------------------------------ edwards25519 in plain Python (slow, clear)
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
IDENTITY = (0, 1)
Point = tuple[int, int]


def _add(p: Point, q: Point) -> Point:
    """Affine addition on -x^2 + y^2 = 1 + d x^2 y^2 (complete for edwards25519)."""
    (x1, y1), (x2, y2) = p, q
    t = D * x1 * x2 * y1 * y2 % P
    return (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P


def _mul(k: int, p: Point) -> Point:
    result = IDENTITY
    while k:
        if k & 1:
            result = _add(result, p)
        p, k = _add(p, p), k >> 1
    return result


def _neg(p: Point) -> Point:
    return (P - p[0]) % P, p[1]


def _encode(p: Point) -> bytes:
    return (p[1] | (p[0] & 1) << 255).to_bytes(32, "little")


def _decode(data: bytes) -> Point:
    """Decode leniently: y is taken modulo p and x = 0 with the sign bit set is tolerated."""
    value = int.from_bytes(data, "little")
    y, sign = value % (1 << 255) % P, value >> 255
    square = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(square, (P + 3) // 8, P)
    if x * x % P != square:
        x = x * pow(2, (P - 1) // 4, P) % P
    assert x * x % P == square, f"{data.hex()} is not on the curve"
    return (P - x) % P if x & 1 != sign else x, y


def _order(p: Point) -> int | None:
    return next((n for n in (1, 2, 4, 8) if _mul(n, p) == IDENTITY), None)


def _secret_scalar(seed: bytes) -> int:
    """RFC 8032 section 5.1.5: the clamped first half of SHA-512(seed)."""
    a = int.from_bytes(hashlib.sha512(seed).digest()[:32], "little")
    return (a & ~7 & ((1 << 254) - 1)) | (1 << 254)


def _challenge(r: bytes, public: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + public + message).digest(), "little") % L


BASE = _decode((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))


# ------------------------------------------------------------------------------------------- loaders
def load_small_order() -> tuple[list[tuple[bytes, int]], list[bytes]]:
    """``([(canonical encoding, order)], [non-canonical encodings])`` of the small-order points."""
    document = json.loads((VECTORS / "ed25519_small_order.json").read_text())
    assert "Taming the many EdDSAs" in document["source"]
    points = [(bytes.fromhex(p["encoding"]), int(p["order"])) for p in document["points"]]
    return points, [bytes.fromhex(e) for e in document["non_canonical"]]


def load_strict_cases() -> list[dict[str, Any]]:
    """The edge cases of ``ed25519_strict.json``, hex fields decoded to bytes."""
    document = json.loads((VECTORS / "ed25519_strict.json").read_text())
    assert "RFC 8032" in document["source"]
    return [
        {**case, **{k: bytes.fromhex(case[k]) for k in ("public_key", "message", "signature")}}
        for case in document["cases"]
    ]


def load_rfc8032() -> list[dict[str, bytes]]:
    document = json.loads((VECTORS / "rfc8032_ed25519.json").read_text())
    return [
        {k: bytes.fromhex(v[k]) for k in ("secret_key", "public_key", "message", "signature")}
        for v in document["vectors"]
    ]


SMALL, NON_CANONICAL = load_small_order()
CASES = load_strict_cases()
CASE_IDS = [c["name"] for c in CASES]
RFC8032 = load_rfc8032()
TEST2 = RFC8032[1]
IDENTITY_KEY = bytes([1]) + bytes(31)
FORGERY = IDENTITY_KEY + bytes(32)  # R = identity, S = 0


def _openssl_accepts(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


# --------------------------------------------------------------------------- the data files themselves
def test_the_small_order_file_is_the_eight_torsion_of_the_curve() -> None:
    points = [_decode(e) for e, _ in SMALL]
    assert [_encode(p) for p in points] == [e for e, _ in SMALL], "every listed encoding is canonical"
    assert [_order(p) for p in points] == [n for _, n in SMALL]
    assert len(set(points)) == 8  # the 8-torsion of edwards25519 is cyclic of order 8: these are all of it
    assert {_add(p, q) for p in points for q in points} == set(points)


@pytest.mark.parametrize("encoding", NON_CANONICAL, ids=[e.hex()[:8] + ".." + e.hex()[-4:] for e in NON_CANONICAL])
def test_each_non_canonical_encoding_decodes_to_a_listed_point(encoding: bytes) -> None:
    point = _decode(encoding)
    assert _encode(point) != encoding
    assert _encode(point) in {e for e, _ in SMALL}


def test_the_strict_cases_are_built_as_described() -> None:
    by_name = {c["name"]: c for c in CASES}
    for name in [n for n in by_name if n.startswith("identity key")]:
        assert _decode(by_name[name]["public_key"]) == IDENTITY
        assert by_name[name]["signature"] == FORGERY
    a = _secret_scalar(TEST2["secret_key"])
    assert _encode(_mul(a, BASE)) == TEST2["public_key"]
    small_r = by_name["small-order R made by the key owner"]
    k = _challenge(IDENTITY_KEY, TEST2["public_key"], TEST2["message"])
    assert small_r["signature"] == IDENTITY_KEY + (k * a % L).to_bytes(32, "little")
    high_s = by_name["non-canonical S (S + L)"]["signature"]
    assert high_s[:32] == TEST2["signature"][:32]
    assert int.from_bytes(high_s[32:], "little") - int.from_bytes(TEST2["signature"][32:], "little") == L
    mixed = by_name["mixed-order key"]
    torsion = _add(_decode(mixed["public_key"]), _neg(_decode(TEST2["public_key"])))
    assert _order(torsion) == 8
    assert _challenge(mixed["signature"][:32], mixed["public_key"], mixed["message"]) % 8 == 0


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_openssl_answers_as_recorded(case: dict[str, Any]) -> None:
    """Why verification left OpenSSL: it accepts every case recorded as ``accept``."""
    accepted = _openssl_accepts(case["public_key"], case["message"], case["signature"])
    assert accepted == (case["openssl"] == "accept")


# ------------------------------------------------------------------------ the identity-key forgery
@pytest.mark.parametrize("message", [b"", b"fedswarm", b"member-3 voted for round 7", bytes(range(256)) * 40])
def test_openssl_accepts_the_identity_key_forgery_for_every_message(message: bytes) -> None:
    assert _openssl_accepts(IDENTITY_KEY, message, FORGERY)
    with pytest.raises(BadSignatureError):  # libsodium's verification alone refuses it too
        nacl.bindings.crypto_sign_open(FORGERY + message, IDENTITY_KEY)


def test_the_identity_key_is_refused_by_verify_key_and_by_batch() -> None:
    with pytest.raises(WeakKeyError, match="not a canonical encoding of a point of prime order") as info:
        VerifyKey.from_raw(IDENTITY_KEY, source="manifest member-3 signing_key")
    assert str(info.value).startswith("manifest member-3 signing_key: wrong format")
    assert IDENTITY_KEY.hex() in str(info.value)
    honest = SigningKey.from_seed(TEST2["secret_key"])
    good = (honest.public_key().raw, b"m", honest.sign(b"m"))
    with pytest.raises(BatchVerificationError, match="signature 1: wrong format") as caught:
        verify_signatures([good, (IDENTITY_KEY, b"anything", FORGERY), good])
    assert caught.value.index == 1


def test_a_weak_key_error_is_both_a_key_error_and_a_verification_error() -> None:
    with pytest.raises(VerificationError):
        check_public_key(IDENTITY_KEY)
    with pytest.raises(KeyMaterialError) as info:
        check_public_key(IDENTITY_KEY)
    assert info.value.problem == "wrong format"


# --------------------------------------------------------------------------------- the strict cases
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_verify_key_refuses_each_strict_case_where_recorded(case: dict[str, Any]) -> None:
    if case["refused_at"] == "key":
        with pytest.raises(WeakKeyError):
            VerifyKey.from_raw(case["public_key"])
    else:
        key = VerifyKey.from_raw(case["public_key"])
        with pytest.raises(VerificationError, match="does not verify"):
            key.verify(case["message"], case["signature"])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_batch_refuses_each_strict_case_at_its_position(case: dict[str, Any]) -> None:
    honest = SigningKey.from_seed(RFC8032[0]["secret_key"])
    good = [(honest.public_key().raw, bytes([i]), honest.sign(bytes([i]))) for i in range(3)]
    bad = (case["public_key"], case["message"], case["signature"])
    reason = "wrong format" if case["refused_at"] == "key" else "does not verify"
    with pytest.raises(BatchVerificationError, match=reason) as caught:
        verify_signatures([*good[:2], bad, good[2]])
    assert caught.value.index == 2


def test_a_non_canonical_s_of_a_fresh_signature_is_refused() -> None:
    key = SigningKey.generate()
    signature = key.sign(b"entry")
    high = signature[:32] + (int.from_bytes(signature[32:], "little") + L).to_bytes(32, "little")
    key.public_key().verify(b"entry", signature)
    with pytest.raises(VerificationError, match="does not verify"):
        key.public_key().verify(b"entry", high)
    with pytest.raises(BatchVerificationError, match="does not verify"):
        verify_signatures([(key.public_key().raw, b"entry", high)])


# ------------------------------------------------------------------------------- small-order keys
@pytest.mark.parametrize(
    "encoding",
    [e for e, _ in SMALL] + NON_CANONICAL,
    ids=[f"order-{n}-{e.hex()[:6]}" for e, n in SMALL]
    + [f"non-canonical-{e.hex()[:6]}-{e.hex()[-2:]}" for e in NON_CANONICAL],
)
def test_every_encoding_of_a_small_order_point_is_refused_as_a_key(encoding: bytes, tmp_path: Path) -> None:
    with pytest.raises(WeakKeyError, match="not a canonical encoding"):
        VerifyKey.from_raw(encoding)
    with pytest.raises(WeakKeyError, match="^member-9: wrong format"):
        VerifyKey.from_hex(encoding.hex(), source="member-9")
    pem = ed25519.Ed25519PublicKey.from_public_bytes(encoding).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "weak.pem"
    path.write_bytes(pem)
    with pytest.raises(WeakKeyError, match=r"weak\.pem: wrong format"):
        VerifyKey.load(path)
    with pytest.raises(BatchVerificationError, match="wrong format") as caught:
        verify_signatures([(encoding, b"m", FORGERY)])
    assert caught.value.index == 0


def test_off_curve_and_torsioned_keys_are_refused_and_honest_keys_accepted() -> None:
    off_curve = (2).to_bytes(32, "little")  # y = 2: (y^2 - 1) / (d y^2 + 1) is not a square
    honest = _decode(TEST2["public_key"])
    torsioned = _encode(_add(honest, _decode(SMALL[4][0])))
    for raw in (off_curve, torsioned):
        with pytest.raises(WeakKeyError):
            VerifyKey.from_raw(raw)
    for vector in RFC8032:
        assert VerifyKey.from_raw(vector["public_key"]).raw == vector["public_key"]


def test_honest_rfc8032_signatures_verify_in_one_batch() -> None:
    verify_signatures([(v["public_key"], v["message"], v["signature"]) for v in RFC8032])


def test_a_key_that_is_refused_stays_refused_and_does_not_poison_the_cache() -> None:
    for _ in range(3):
        with pytest.raises(WeakKeyError):
            check_public_key(IDENTITY_KEY)
        check_public_key(TEST2["public_key"])
