"""A node's own envelopes: vouched for by what it sealed, byte for byte; everything else is checked as before."""

from __future__ import annotations

import pytest

from fedswarm.crypto.signing import SigningKey, VerifyKey
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.envelope import EnvelopeVerifier, MessageRefused, SealedHere, seal

FED = "ab" * 16
ME = SigningKey.from_seed(b"\x07" * 32)
OTHER = SigningKey.from_seed(b"\x08" * 32)
NOW = 1_700_000_000.0


def _sealed(rnd: int = 3) -> pb.Envelope:
    return seal(pb.FetchRequest(digest="d" * 64), key=ME, sender="me", federation_id=FED, round=rnd,
                now_ms=int(NOW * 1000))  # fmt: skip


class _Key(VerifyKey):
    """A key that counts its checks (and verifies with ``ME``'s public key)."""

    calls = 0

    def verify(self, message: bytes, signature: bytes) -> None:
        type(self).calls += 1
        ME.public_key().verify(message, signature)


def _verifier(sealed: SealedHere | None, key: VerifyKey) -> EnvelopeVerifier:
    keys = {"me": key}
    return EnvelopeVerifier(
        FED, keys=keys.get, max_skew=60, clock=lambda: NOW, vouched=sealed.vouches if sealed is not None else None
    )


def test_an_envelope_sealed_here_skips_the_signature_check_but_not_the_others() -> None:
    sealed = SealedHere()
    env = sealed.remember(_sealed())
    assert sealed.vouches(env)
    counting = _Key.from_hex(ME.public_key().hex)
    _Key.calls = 0
    verifier = _verifier(sealed, counting)
    assert verifier.verify(env, peer="me").round == 3
    assert _Key.calls == 0, "its own signature is not checked again"
    assert _verifier(None, counting).verify(sealed.remember(_sealed(4)), peer="me").round == 4
    assert _Key.calls == 1, "without the vouching test every signature is checked"
    with pytest.raises(MessageRefused) as replay:
        verifier.verify(env, peer="me")
    assert replay.value.reason == "replayed"
    with pytest.raises(MessageRefused) as wrong_round:
        verifier.verify(sealed.remember(_sealed(5)), peer="me", round_check=lambda r: "not now")
    assert wrong_round.value.reason == "wrong-round"


def test_a_changed_copy_of_an_envelope_sealed_here_is_checked_and_refused() -> None:
    sealed = SealedHere()
    env = sealed.remember(_sealed())
    tampered = pb.Envelope()
    tampered.CopyFrom(env)
    tampered.round = 4  # same signature, other signed bytes
    assert not sealed.vouches(tampered)
    with pytest.raises(MessageRefused) as refused:
        _verifier(sealed, ME.public_key()).verify(tampered, peer="me")
    assert refused.value.reason == "bad-signature"


def test_an_envelope_not_sealed_here_is_checked_with_the_key() -> None:
    foreign = seal(pb.FetchRequest(digest="d" * 64), key=OTHER, sender="me", federation_id=FED, round=3,
                   now_ms=int(NOW * 1000))  # fmt: skip
    sealed = SealedHere()
    sealed.remember(_sealed())
    with pytest.raises(MessageRefused) as refused:
        _verifier(sealed, ME.public_key()).verify(foreign, peer="me")
    assert refused.value.reason == "bad-signature"


def test_only_the_last_envelopes_are_remembered() -> None:
    sealed = SealedHere(capacity=2)
    first, second, third = (sealed.remember(_sealed(r)) for r in (1, 2, 3))
    assert not sealed.vouches(first) and sealed.vouches(second) and sealed.vouches(third)
