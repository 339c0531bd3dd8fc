"""SecAgg+ refusal paths, what the aggregator is allowed to hold, and how the masked input looks."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]

from fedswarm.core.errors import RoundAborted, UpdateRejected, VerificationError
from fedswarm.crypto.prg import prg_uint64
from fedswarm.privacy.secagg.aggregator import SecAggAggregator
from fedswarm.privacy.secagg.member import SecAggMember, mask_vector, to_ring
from fedswarm.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShares,
    NeighbourKeys,
    Phase,
    ShareDelivery,
    UnmaskRequest,
)
from fedswarm.privacy.secagg.params import SecAggParams
from fedswarm.privacy.secagg.quantize import quantize

SESSION = b"safety tests / round 0001"
ROSTER = tuple(f"m{i}" for i in range(6))
PARAMS = SecAggParams.create(ROSTER, session=SESSION, dimension=12, clip=1.0, degree=5, threshold=3)


class Round:
    """A round driven phase by phase, keeping every message for inspection."""

    def __init__(self, params: SecAggParams = PARAMS) -> None:
        self.params = params
        self.members = {m: SecAggMember(m, params) for m in params.roster}
        self.aggregator = SecAggAggregator(params)
        self.inputs = {
            m: np.random.default_rng(i).uniform(-1, 1, params.dimension) for i, m in enumerate(params.roster)
        }

    def keys(self) -> dict[str, NeighbourKeys]:
        adverts = [member.advertise_keys() for member in self.members.values()]
        return dict(self.aggregator.collect_keys(adverts))

    def deliveries(self, drop: frozenset[str] = frozenset()) -> dict[str, ShareDelivery]:
        keys = self.keys()
        shares = [self.members[m].share_keys(keys[m]) for m in keys if m not in drop]
        return dict(self.aggregator.route_shares(shares))

    def requests(self, drop: frozenset[str] = frozenset()) -> dict[str, UnmaskRequest]:
        deliveries = self.deliveries()
        self.masked = {
            m: self.members[m].masked_input(self.inputs[m], deliveries[m]) for m in deliveries if m not in drop
        }
        return dict(self.aggregator.collect_masked(list(self.masked.values())))


# --- member refusals -------------------------------------------------------------------------------------


def test_member_refuses_to_reveal_both_shares_of_one_member() -> None:
    rnd = Round()
    requests = rnd.requests()
    honest = requests["m0"]
    victim = honest.survivors[0]
    malicious = dataclasses.replace(honest, dropped=(victim,))
    with pytest.raises(VerificationError, match=f"refusing to reveal both .* of member {victim}"):
        rnd.members["m0"].unmask(malicious)
    # The refusal is final: the member has erased its shares and answers nothing more.
    assert rnd.members["m0"].phase is Phase.DONE
    with pytest.raises(VerificationError, match="round over"):
        rnd.members["m0"].unmask(honest)


def test_member_answers_an_unmask_request_only_once() -> None:
    rnd = Round()
    requests = rnd.requests()
    first = rnd.members["m1"].unmask(requests["m1"])
    assert set(first.self_mask_shares) == set(requests["m1"].survivors)
    # A second request that would now ask for the masking-key shares of the same members is refused.
    second = dataclasses.replace(requests["m1"], survivors=(), dropped=requests["m1"].survivors)
    with pytest.raises(VerificationError, match="phase 3"):
        rnd.members["m1"].unmask(second)


def test_member_refuses_small_sums_and_strangers() -> None:
    rnd = Round()
    requests = rnd.requests()
    with pytest.raises(RoundAborted, match="2 inputs, fewer than min_inputs = 3"):
        rnd.members["m2"].unmask(dataclasses.replace(requests["m2"], num_inputs=2))
    with pytest.raises(VerificationError, match="does not hold"):
        rnd.members["m3"].unmask(dataclasses.replace(requests["m3"], dropped=("intruder",)))
    with pytest.raises(VerificationError, match="unmask request of m5"):
        rnd.members["m4"].unmask(requests["m5"])


def test_member_refuses_tampered_or_misrouted_ciphertexts() -> None:
    rnd = Round()
    deliveries = rnd.deliveries()
    item = deliveries["m0"].shares[0]
    flipped = item.ciphertext[:-1] + bytes([item.ciphertext[-1] ^ 1])
    tampered = ShareDelivery("m0", (EncryptedShares(item.sender, "m0", flipped), *deliveries["m0"].shares[1:]))
    with pytest.raises(VerificationError, match=f"shares from {item.sender} do not decrypt"):
        rnd.members["m0"].masked_input(rnd.inputs["m0"], tampered)
    # A ciphertext relabelled as coming from another neighbour fails its associated-data check.
    a, b = deliveries["m1"].shares[:2]
    swapped = ShareDelivery(
        "m1",
        (
            EncryptedShares(b.sender, "m1", a.ciphertext),
            EncryptedShares(a.sender, "m1", b.ciphertext),
            *deliveries["m1"].shares[2:],
        ),
    )
    with pytest.raises(VerificationError, match="do not decrypt"):
        rnd.members["m1"].masked_input(rnd.inputs["m1"], swapped)
    with pytest.raises(VerificationError, match="share delivery of m3"):
        rnd.members["m2"].masked_input(rnd.inputs["m2"], deliveries["m3"])


def test_member_refuses_bad_neighbour_keys_and_too_few_neighbours() -> None:
    rnd = Round()
    keys = rnd.keys()
    stranger = dict(keys["m0"].keys)
    stranger["m9"] = AdvertiseKeys("m9", bytes(range(32)), bytes(range(1, 33)))
    with pytest.raises(VerificationError, match="m9 is not one of its neighbours"):
        rnd.members["m0"].share_keys(NeighbourKeys("m0", stranger))
    repeated = dict(keys["m1"].keys)
    first, second = list(repeated)[:2]
    repeated[second] = dataclasses.replace(repeated[first], member=second)
    with pytest.raises(VerificationError, match="repeated"):
        rnd.members["m1"].share_keys(NeighbourKeys("m1", repeated))
    few = dict(list(keys["m2"].keys.items())[:2])
    with pytest.raises(RoundAborted, match="2 live neighbours, fewer than the threshold 3"):
        rnd.members["m2"].share_keys(NeighbourKeys("m2", few))


def test_phases_must_run_in_order() -> None:
    member = SecAggMember("m0", PARAMS)
    with pytest.raises(VerificationError, match="phase 3 .* while expecting phase 0"):
        member.unmask(UnmaskRequest("m0", (), (), 6))
    aggregator = SecAggAggregator(PARAMS)
    with pytest.raises(VerificationError, match="aggregator: asked for phase 3"):
        aggregator.finish([])


# --- aggregator refusals ---------------------------------------------------------------------------------


def test_aggregator_rejects_strangers_duplicates_and_malformed_inputs() -> None:
    aggregator = SecAggAggregator(PARAMS)
    advert = SecAggMember("m0", PARAMS).advertise_keys()
    with pytest.raises(UpdateRejected, match="intruder"):
        aggregator.collect_keys([dataclasses.replace(advert, member="intruder")])
    with pytest.raises(UpdateRejected, match="sent twice"):
        aggregator.collect_keys([advert, advert])
    with pytest.raises(UpdateRejected, match="32 bytes"):
        aggregator.collect_keys([dataclasses.replace(advert, masking_key=b"short")])

    rnd = Round()
    deliveries = rnd.deliveries()
    good = rnd.members["m0"].masked_input(rnd.inputs["m0"], deliveries["m0"])
    too_big = dataclasses.replace(good, masked=good.masked | np.uint64(1 << PARAMS.ring_bits))
    for bad in (too_big, dataclasses.replace(good, masked=good.masked[:-1]), dataclasses.replace(good, ring_bits=64)):
        with pytest.raises(UpdateRejected, match="m0 rejected"):
            rnd.aggregator.collect_masked([bad])


def test_aggregator_detects_a_wrong_masking_key_share() -> None:
    rnd = Round()
    requests = rnd.requests(drop=frozenset({"m5"}))
    replies = [rnd.members[m].unmask(requests[m]) for m in requests]
    first = replies[0]
    assert "m5" in first.masking_key_shares
    bad_share = tuple((e + 1) % (2**127 - 1) for e in first.masking_key_shares["m5"])
    replies[0] = dataclasses.replace(first, masking_key_shares={"m5": bad_share})
    with pytest.raises(VerificationError, match="masking key of member m5"):
        rnd.aggregator.finish(replies)


def test_aggregator_rejects_unrequested_shares() -> None:
    rnd = Round()
    requests = rnd.requests()
    replies = [rnd.members[m].unmask(requests[m]) for m in requests]
    extra = dataclasses.replace(replies[0], masking_key_shares={"m1": (1, 2, 3)})
    with pytest.raises(UpdateRejected, match="unrequested share of m1"):
        rnd.aggregator.finish([extra, *replies[1:]])


# --- what the aggregator holds ---------------------------------------------------------------------------


def _leaves(obj: Any, seen: set[int] | None = None) -> Iterator[Any]:
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, bytes | bytearray | str | int | float | np.ndarray | np.generic) or obj is None:
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(key, seen)
            yield from _leaves(value, seen)
    elif isinstance(obj, list | tuple | set | frozenset):
        for value in obj:
            yield from _leaves(value, seen)
    elif hasattr(obj, "__dict__"):
        yield from _leaves(vars(obj), seen)


def test_aggregator_state_holds_only_public_keys_and_masked_sums() -> None:
    rnd = Round()
    keys = rnd.keys()
    public = {k for nk in keys.values() for a in nk.keys.values() for k in (a.encryption_key, a.masking_key)}
    shares = [rnd.members[m].share_keys(keys[m]) for m in keys]
    secrets = set()
    for member in rnd.members.values():
        assert member._encryption_keys is not None and member._masking_keys is not None
        assert member._self_seed is not None
        secrets |= {member._encryption_keys.private, member._masking_keys.private, member._self_seed}
    ciphertexts = {item.ciphertext for message in shares for item in message.shares}
    deliveries = rnd.aggregator.route_shares(shares)
    drop = "m5"
    masked = [rnd.members[m].masked_input(rnd.inputs[m], deliveries[m]) for m in deliveries if m != drop]
    share_elements = {e for member in rnd.members.values() for pair in member._held.values() for s in pair for e in s}
    quantized = [
        to_ring(
            quantize(rnd.inputs[m], clip=1.0, bits=PARAMS.bits, rounding="deterministic"), ring_bits=PARAMS.ring_bits
        )
        for m in ROSTER
    ]
    contributors_sum = sum((q for m, q in zip(ROSTER, quantized, strict=True) if m != drop), np.zeros(12, np.uint64))
    quantized.append(contributors_sum & np.uint64((1 << PARAMS.ring_bits) - 1))  # the plain sum

    def check(stage: str) -> None:
        for leaf in _leaves(rnd.aggregator):
            if isinstance(leaf, bytes | bytearray):
                assert bytes(leaf) in public | ciphertexts | {SESSION}, f"{stage}: unexpected bytes"
                assert not any(s in bytes(leaf) for s in secrets), f"{stage}: a secret is stored"
            elif isinstance(leaf, int):
                assert leaf not in share_elements, f"{stage}: a share is stored"
            elif isinstance(leaf, np.ndarray):
                for q in quantized:
                    assert np.mean(np.abs(leaf.astype(np.int64) - q.astype(np.int64)) <= 2) < 0.5, stage

    check("after routing shares")
    requests = rnd.aggregator.collect_masked(masked)
    check("after masked input")
    assert sum(isinstance(leaf, np.ndarray) for leaf in _leaves(rnd.aggregator)) > 0
    result = rnd.aggregator.finish([rnd.members[m].unmask(requests[m]) for m in requests])
    check("after finish")
    assert result.dropped == (drop,)
    assert len(secrets) == 3 * len(ROSTER)


# --- the masked vector looks uniform ---------------------------------------------------------------------


def _uniformity_pvalues(residues: np.ndarray, ring_bits: int) -> tuple[float, float]:
    bins = 64
    counts = np.bincount((residues >> np.uint64(ring_bits - 6)).astype(np.int64), minlength=bins)
    chi2 = stats.chisquare(counts).pvalue
    ks = stats.kstest(residues.astype(np.float64) / 2.0**ring_bits, "uniform").pvalue
    return float(chi2), float(ks)


def test_masked_input_seen_by_the_aggregator_is_uniform() -> None:
    params = SecAggParams.create(ROSTER, session=SESSION, dimension=20_000, clip=1.0, degree=5, threshold=3)
    rnd = Round(params)
    rnd.inputs = {m: np.full(params.dimension, 0.99) for m in ROSTER}  # the same, extreme input everywhere
    rnd.requests()
    for message in rnd.masked.values():
        chi2, ks = _uniformity_pvalues(message.masked, params.ring_bits)
        assert chi2 > 1e-6 and ks > 1e-6
    # The raw quantized input is anything but uniform.
    raw = to_ring(quantize(rnd.inputs["m0"], clip=1.0, bits=params.bits), ring_bits=params.ring_bits)
    assert _uniformity_pvalues(raw, params.ring_bits)[0] < 1e-100


def test_changing_only_the_self_mask_seed_changes_the_whole_vector() -> None:
    ring_bits, d = 21, 20_000
    quantized = to_ring(
        quantize(np.linspace(-1, 1, d), clip=1.0, bits=16, rounding="deterministic"), ring_bits=ring_bits
    )
    pairs = [(bytes([7]) * 32, 1), (bytes([9]) * 32, -1)]
    a = mask_vector(quantized, self_seed=bytes(32), pair_seeds=pairs, ring_bits=ring_bits)
    b = mask_vector(quantized, self_seed=bytes(31) + b"\x01", pair_seeds=pairs, ring_bits=ring_bits)
    for vector in (a, b):
        chi2, ks = _uniformity_pvalues(vector, ring_bits)
        assert chi2 > 1e-3 and ks > 1e-3  # fixed seeds: a deterministic outcome
    assert np.mean(a == b) < 1e-3
    difference = (a - b) & np.uint64((1 << ring_bits) - 1)
    assert min(_uniformity_pvalues(difference, ring_bits)) > 1e-3
    flipped = np.unpackbits((a ^ b).view(np.uint8)).reshape(d, 64)[:, :].sum(axis=1)
    assert abs(flipped.mean() - ring_bits / 2) < 0.1
    # With the same seeds the masking is a pure function of the input.
    assert np.array_equal(mask_vector(quantized, self_seed=bytes(32), pair_seeds=pairs, ring_bits=ring_bits), a)


def test_removing_every_pairwise_mask_still_leaves_a_uniform_vector() -> None:
    # An aggregator that reconstructed a member's masking key knows all its pairwise masks; the self
    # mask PRG(b) still hides the input.
    ring_bits, d = 21, 20_000
    ring = np.uint64((1 << ring_bits) - 1)
    quantized = to_ring(quantize(np.zeros(d), clip=1.0, bits=16), ring_bits=ring_bits)
    pair = bytes([3]) * 32
    masked = mask_vector(quantized, self_seed=bytes([5]) * 32, pair_seeds=[(pair, 1)], ring_bits=ring_bits)
    stripped = (masked - prg_uint64(pair, d)) & ring
    assert min(_uniformity_pvalues(stripped, ring_bits)) > 1e-3
    assert np.array_equal((stripped - prg_uint64(bytes([5]) * 32, d)) & ring, quantized)
