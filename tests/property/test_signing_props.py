"""Property tests of Ed25519 signing: libsodium's signatures are OpenSSL's, byte for byte, and verify."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from fedswarm.crypto.signing import SigningKey


@settings(max_examples=300, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=2048))
def test_signatures_equal_openssls_and_verify(seed: bytes, message: bytes) -> None:
    key = SigningKey.from_seed(seed)
    signature = key.sign(message)
    assert signature == ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(message)
    key.public_key().verify(message, signature)
