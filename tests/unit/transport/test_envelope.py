"""Signed envelopes: every refusal path, and the replay cache."""

from __future__ import annotations

import pytest

from fedswarm.crypto.signing import SigningKey, VerifyKey
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.envelope import EnvelopeVerifier, MessageRefused, open_body, seal, signed_bytes
from fedswarm.transport.nonces import NonceCache

FED = "ab" * 16
ALICE = SigningKey.from_seed(b"\x01" * 32)
MALLORY = SigningKey.from_seed(b"\x02" * 32)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _verifier(clock: Clock) -> EnvelopeVerifier:
    keys: dict[str, VerifyKey] = {"alice": ALICE.public_key()}
    return EnvelopeVerifier(FED, keys=keys.get, max_skew=60, clock=clock)


def _env(clock: Clock, *, key: SigningKey = ALICE, sender: str = "alice", fed: str = FED, rnd: int = 3) -> pb.Envelope:
    return seal(pb.FetchRequest(digest="d" * 64), key=key, sender=sender, federation_id=fed, round=rnd,
                now_ms=int(clock.now * 1000))  # fmt: skip


def test_valid_envelope_opens_and_signature_covers_every_field() -> None:
    clock = Clock()
    env = _env(clock)
    verified = _verifier(clock).verify(env, peer="alice", round_check=lambda r: None if r == 3 else "no")
    assert (verified.sender, verified.round) == ("alice", 3)
    assert open_body(env, pb.FetchRequest).digest == "d" * 64
    assert signed_bytes(env).startswith(b"fedswarm.envelope.v1\x00{")
    for field, value in [("round", 4), ("body", b"x"), ("kind", "fedswarm.v1.Assign"), ("nonce", b"n" * 16),
                         ("timestamp_ms", env.timestamp_ms + 1), ("federation_id", "cd" * 16)]:  # fmt: skip
        tampered = pb.Envelope()
        tampered.CopyFrom(env)
        setattr(tampered, field, value)
        assert signed_bytes(tampered) != signed_bytes(env), field


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.ClearField("signature"), "unsigned"),
        (lambda e: setattr(e, "round", 99), "bad-signature"),
        (lambda e: setattr(e, "body", b"\x0a\x01z"), "bad-signature"),
        (lambda e: setattr(e, "protocol", 2), "malformed"),
    ],
)
def test_refusals(mutate: object, reason: str) -> None:
    clock = Clock()
    env = _env(clock)
    mutate(env)  # type: ignore[operator]
    with pytest.raises(MessageRefused) as refused:
        _verifier(clock).verify(env, peer="alice")
    assert refused.value.reason == reason


def test_wrong_federation_sender_peer_and_key() -> None:
    clock = Clock()
    verifier = _verifier(clock)
    cases = [
        (_env(clock, fed="cd" * 16), "alice", "wrong-federation"),
        (_env(clock, sender="mallory", key=MALLORY), "mallory", "wrong-sender"),
        (_env(clock), "bob", "wrong-sender"),
        (_env(clock, key=MALLORY), "alice", "bad-signature"),
    ]
    for env, peer, reason in cases:
        with pytest.raises(MessageRefused) as refused:
            verifier.verify(env, peer=peer)
        assert refused.value.reason == reason


def test_replay_stale_and_wrong_round() -> None:
    clock = Clock()
    verifier = _verifier(clock)
    env = _env(clock)
    verifier.verify(env, peer="alice")
    with pytest.raises(MessageRefused, match="replayed"):
        verifier.verify(env, peer="alice")
    old = _env(clock)
    clock.now += 61
    with pytest.raises(MessageRefused, match="stale"):
        verifier.verify(old, peer="alice")
    with pytest.raises(MessageRefused, match="wrong-round: .*at round 1"):
        verifier.verify(_env(clock), peer="alice", round_check=lambda r: "this node is at round 1")


def test_nonce_cache_expires_and_refuses_repeats() -> None:
    clock = Clock()
    cache = NonceCache(window=10, clock=clock)
    assert cache.add("a", b"n1", timestamp=clock.now)
    assert not cache.add("a", b"n1", timestamp=clock.now)
    assert cache.add("b", b"n1", timestamp=clock.now)
    clock.now += 11
    assert cache.add("a", b"n2", timestamp=clock.now)
    assert len(cache) == 1
    assert cache.add("a", b"n1", timestamp=clock.now)  # forgotten after the window; the timestamp check refuses it
