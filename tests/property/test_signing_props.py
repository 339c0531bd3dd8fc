"""Property tests of Ed25519: libsodium's signatures are OpenSSL's, byte for byte; strict verification accepts
every honest signature (alone and in a batch) and refuses altered messages, altered signatures and ``S + L``."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.batch import BatchVerificationError, verify_signatures
from fedswarm.crypto.signing import SigningKey

GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
"""L, the order of the prime-order subgroup of edwards25519 (RFC 8032 section 5.1)."""

seeds = st.binary(min_size=32, max_size=32)
messages = st.binary(max_size=2048)


@settings(max_examples=300, deadline=None)
@given(seed=seeds, message=messages)
def test_signatures_equal_openssls_and_verify(seed: bytes, message: bytes) -> None:
    key = SigningKey.from_seed(seed)
    signature = key.sign(message)
    assert signature == ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(message)
    key.public_key().verify(message, signature)
    verify_signatures([(key.public_key().raw, message, signature)])


@settings(max_examples=100, deadline=None)
@given(seed=seeds, message=messages, other=messages)
def test_a_signature_does_not_verify_another_message(seed: bytes, message: bytes, other: bytes) -> None:
    assume(other != message)
    key = SigningKey.from_seed(seed)
    signature = key.sign(message)
    with pytest.raises(VerificationError, match="does not verify"):
        key.public_key().verify(other, signature)
    with pytest.raises(BatchVerificationError, match="does not verify"):
        verify_signatures([(key.public_key().raw, message, signature), (key.public_key().raw, other, signature)])


@settings(max_examples=100, deadline=None)
@given(seed=seeds, message=messages, bit=st.integers(min_value=0, max_value=511))
def test_any_flipped_bit_of_a_signature_is_refused(seed: bytes, message: bytes, bit: int) -> None:
    key = SigningKey.from_seed(seed)
    altered = bytearray(key.sign(message))
    altered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(VerificationError, match="does not verify"):
        key.public_key().verify(message, bytes(altered))


@settings(max_examples=100, deadline=None)
@given(seed=seeds, message=messages)
def test_s_plus_l_is_refused(seed: bytes, message: bytes) -> None:
    key = SigningKey.from_seed(seed)
    signature = key.sign(message)
    high = int.from_bytes(signature[32:], "little") + GROUP_ORDER  # S < L, so S + L < 2**254 fits in 32 bytes
    with pytest.raises(VerificationError, match="does not verify"):
        key.public_key().verify(message, signature[:32] + high.to_bytes(32, "little"))
