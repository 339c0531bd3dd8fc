"""Every privacy exchange payload travels as canonical bytes and comes back identical; bad bytes are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedswarm.codec import canonical
from fedswarm.core.errors import VerificationError
from fedswarm.core.task import FitConfig
from fedswarm.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShares,
    MaskedInput,
    NeighbourKeys,
    ShareKeys,
    UnmaskRequest,
    UnmaskShares,
)
from fedswarm.rounds.privacy.messages import (
    CKKSDecrypted,
    CKKSDecryptRequest,
    CKKSEncrypted,
    CKKSFitRequest,
    FitOrder,
    MemberPrivacy,
    PrivateFitReply,
    PrivateFitRequest,
    SecAggAdvertise,
    SecAggFitRequest,
    SecAggKeys,
    SecAggMasked,
    SecAggNeighbours,
    SecAggRevealed,
    SecAggShares,
    SecAggUnmask,
)
from fedswarm.rounds.privacy.wire import WireMessage

ORDER = FitOrder.from_config(
    FitConfig(round=3, epochs=2, batch_size=16, learning_rate=0.05, seed=2**62 + 1, extra={"mode": "x", "k": 2})
)
PRIVACY = MemberPrivacy(clip=1.5, update_noise_std=0.25, count_noise_std=0.1, report_unclipped=True)
KEYS = SecAggKeys("member-00001", bytes(range(32)), bytes(range(32, 64)))
BIG = 2**127 - 2

MESSAGES: list[WireMessage] = [
    ORDER,
    PRIVACY,
    PrivateFitRequest(ORDER, PRIVACY),
    PrivateFitReply("member-00002", np.array([0.5, -1.25, 3e-300]), 0, ("train_loss",), (0.75,)),
    SecAggAdvertise(3, canonical.encode({"roster": ["a", "b", "c"]})),
    KEYS,
    SecAggNeighbours(3, "member-00000", (KEYS,)),
    SecAggShares("member-00000", ("member-00001", "member-00002"), (b"\x00" * 60, b"\xff" * 61)),
    SecAggFitRequest(ORDER, PRIVACY, "member-00000", ("member-00001",), (b"ct",)),
    SecAggMasked.of(MaskedInput("member-00000", np.array([0, 5, 2**20 - 1], dtype=np.uint64), 20)),
    SecAggUnmask(3, "member-00000", ("member-00001",), ("member-00002",), 7),
    SecAggRevealed("member-00000", ("member-00001",), ((BIG, 1, 2),), ("member-00002",), ((3, BIG, 5),)),
    CKKSFitRequest(ORDER, PRIVACY),
    CKKSEncrypted("member-00000", 5000, (b"c1", b"c2"), False),
    CKKSDecryptRequest(3, 5000, 4, (b"c1", b"c2")),
    CKKSDecrypted("member-00000", np.linspace(-1, 1, 7)),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_is_exact(message: WireMessage) -> None:
    data = message.to_wire()
    back = type(message).from_wire(data)
    assert back.to_wire() == data
    assert canonical.decode(data)["kind"] == type(message).__name__
    for name, value in vars(message).items():
        got = getattr(back, name)
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and np.array_equal(got, value)
        else:
            assert got == value


def test_fit_order_restores_the_config() -> None:
    config = ORDER.to_config()
    assert config.seed == 2**62 + 1 and config.learning_rate == 0.05 and dict(config.extra) == {"mode": "x", "k": 2}


def test_protocol_messages_convert_both_ways() -> None:
    keys = NeighbourKeys("a", {"b": AdvertiseKeys("b", b"1" * 32, b"2" * 32)})
    assert SecAggNeighbours.of(1, keys).to_protocol() == keys
    shares = ShareKeys("a", (EncryptedShares("a", "b", b"x"), EncryptedShares("a", "c", b"y")))
    assert SecAggShares.of(shares).to_protocol() == shares
    request = UnmaskRequest("a", ("b",), ("c",), 3)
    assert SecAggUnmask.of(1, request).to_protocol() == request
    revealed = UnmaskShares("a", {"b": (1, 2, 3)}, {"c": (4, 5, 6)})
    assert SecAggRevealed.from_wire(SecAggRevealed.of(revealed).to_wire()).to_protocol() == revealed
    masked = MaskedInput("a", np.array([1, 2, 3], dtype=np.uint64), 9)
    back = SecAggMasked.from_wire(SecAggMasked.of(masked).to_wire()).to_protocol()
    assert back.member == "a" and back.ring_bits == 9 and np.array_equal(back.masked, masked.masked)
    assert len(SecAggMasked.of(masked).packed) == 4  # 27 bits packed into 4 bytes


def _tamper(data: bytes, path: list[str], value: object) -> bytes:
    obj = json.loads(data)
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return canonical.encode(_revive(obj))  # type: ignore[arg-type]


def _revive(obj: object) -> object:
    if isinstance(obj, dict):
        if set(obj) == {"$b"}:
            return bytes.fromhex(obj["$b"])
        return {k: _revive(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_revive(v) for v in obj]
    return obj


def test_refuses_malformed_payloads() -> None:
    data = KEYS.to_wire()
    with pytest.raises(VerificationError, match="expected a SecAggShares"):
        SecAggShares.from_wire(data)
    with pytest.raises(VerificationError, match="expected bytes"):
        SecAggKeys.from_wire(_tamper(data, ["fields", "masking_key"], "not bytes"))
    with pytest.raises(VerificationError, match="do not match"):
        SecAggKeys.from_wire(_tamper(data, ["fields", "extra_field"], 1))
    with pytest.raises(VerificationError, match="unsupported wire version"):
        SecAggKeys.from_wire(_tamper(data, ["v"], 2))
    with pytest.raises(VerificationError, match="not in canonical form"):
        SecAggKeys.from_wire(data.replace(b'{"fields"', b'{ "fields"'))
    reply = PrivateFitReply("m", np.zeros(3), 1, (), ()).to_wire()
    with pytest.raises(VerificationError, match="data bytes do not match"):
        PrivateFitReply.from_wire(_tamper(reply, ["fields", "vector", "shape"], [4]))
    with pytest.raises(VerificationError, match="unsupported array dtype"):
        PrivateFitReply.from_wire(_tamper(reply, ["fields", "vector", "dtype"], "<c16"))
    with pytest.raises(VerificationError, match="expected an integer"):
        PrivateFitReply.from_wire(_tamper(reply, ["fields", "num_examples"], 1.5))


def test_refuses_to_encode_what_cannot_travel() -> None:
    with pytest.raises(TypeError, match="cannot travel"):
        CKKSDecrypted("m", np.zeros(2, dtype=np.complex128)).to_wire()


def test_member_handlers_take_objects_or_their_wire_bytes() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "fixtures"))
    from privtasks import spec

    from fedswarm.privacy.secagg.params import SecAggParams
    from fedswarm.rounds.messages import Dropout
    from fedswarm.sim.world import build_world

    world = build_world(spec({"secure_aggregation": "secagg+"}))
    params = SecAggParams.create([f"member-{m:05d}" for m in range(6)], session=b"s" * 16, dimension=3, clip=1.0)
    request = SecAggAdvertise(1, canonical.encode(params.state_dict()))
    gvec = np.zeros(world.schema.size)
    reply = world.runtime.handle("secagg.advertise", 0, request.to_wire(), gvec)
    assert isinstance(reply, SecAggKeys) and reply.member == "member-00000" and len(reply.masking_key) == 32
    bad = world.runtime.handle("secagg.advertise", 0, 42, gvec)
    assert isinstance(bad, Dropout) and "secagg.advertise: expected a SecAggAdvertise, got int" in bad.reason
    late = world.runtime.handle("secagg.unmask", 1, SecAggUnmask(1, "member-00001", (), (), 3), gvec)
    assert isinstance(late, Dropout) and "no SecAgg+ state for round 1" in late.reason
