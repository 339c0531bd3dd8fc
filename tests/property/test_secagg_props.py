"""Hypothesis properties of the secure-aggregation building blocks and of whole SecAgg+ rounds."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedswarm.privacy.secagg.aggregator import SecAggAggregator
from fedswarm.privacy.secagg.graph import neighbour_graph
from fedswarm.privacy.secagg.member import SecAggMember, to_ring
from fedswarm.privacy.secagg.params import SecAggParams
from fedswarm.privacy.secagg.quantize import (
    dequantize,
    pack_ring,
    quantization_error_bound,
    quantize,
    required_ring_bits,
    unpack_ring,
)
from fedswarm.privacy.secagg.shamir import PRIME_127, recombine_bytes, recombine_int, split_bytes, split_int

SMALL_PRIMES = [5, 7, 11, 13]


@settings(max_examples=40, deadline=None)
@given(
    secret=st.integers(0, PRIME_127 - 1),
    holders=st.integers(1, 12),
    data=st.data(),
)
def test_any_threshold_shares_recombine(secret: int, holders: int, data: st.DataObject) -> None:
    threshold = data.draw(st.integers(1, holders))
    xs = data.draw(st.lists(st.integers(1, 10**6), min_size=holders, max_size=holders, unique=True))
    ys = split_int(secret, xs, threshold=threshold)
    chosen = data.draw(st.permutations(list(zip(xs, ys, strict=True))))[:threshold]
    assert recombine_int(chosen) == secret


@settings(max_examples=25, deadline=None)
@given(secret=st.binary(min_size=0, max_size=64), data=st.data())
def test_byte_secrets_round_trip(secret: bytes, data: st.DataObject) -> None:
    holders = data.draw(st.integers(2, 8))
    threshold = data.draw(st.integers(1, holders))
    xs = list(range(1, holders + 1))
    shares = split_bytes(secret, xs, threshold=threshold)
    points = data.draw(st.permutations(list(zip(xs, shares, strict=True))))[:threshold]
    assert recombine_bytes(points, length=len(secret)) == secret


@settings(max_examples=20, deadline=None)
@given(prime=st.sampled_from(SMALL_PRIMES), threshold=st.integers(2, 4), data=st.data())
def test_fewer_than_threshold_shares_are_exactly_uniform(prime: int, threshold: int, data: st.DataObject) -> None:
    # Over all polynomials with a given secret, any threshold - 1 shares take every value equally
    # often, whatever the secret: they carry no information about it.
    xs = data.draw(st.lists(st.integers(1, prime - 1), min_size=threshold, max_size=threshold, unique=True))
    secrets = data.draw(st.lists(st.integers(0, prime - 1), min_size=2, max_size=2))
    histograms = []
    for secret in secrets:
        counts: Counter[tuple[int, ...]] = Counter()
        for coefficients in itertools.product(range(prime), repeat=threshold - 1):
            shares = split_int(secret, xs, threshold=threshold, prime=prime, coefficients=coefficients)
            counts[tuple(shares[:-1])] += 1  # all but one share
        assert len(counts) == prime ** (threshold - 1)
        assert set(counts.values()) == {1}
        histograms.append(counts)
    assert histograms[0] == histograms[1]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 200),
    bits=st.integers(2, 24),
    clip=st.floats(1e-3, 1e3),
    rounding=st.sampled_from(["stochastic", "deterministic"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_quantized_sum_within_bound_and_never_wraps(n: int, bits: int, clip: float, rounding: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ring_bits = required_ring_bits(n, bits=bits)
    x = rng.uniform(-2 * clip, 2 * clip, size=(n, 5))
    x[0] = clip * 3  # an extreme member
    total = np.zeros(5, dtype=np.uint64)
    for row in x:
        total += to_ring(quantize(row, clip=clip, bits=bits, rounding=rounding, rng=rng), ring_bits=ring_bits)  # type: ignore[arg-type]
    total &= np.uint64((1 << ring_bits) - 1)
    got = dequantize(total, clip=clip, bits=bits, ring_bits=ring_bits)
    bound = quantization_error_bound(n, clip=clip, bits=bits, rounding=rounding)  # type: ignore[arg-type]
    assert np.all(np.abs(got - np.clip(x, -clip, clip).sum(axis=0)) <= bound * (1 + 1e-9) + 1e-9 * n * clip)


@settings(max_examples=40, deadline=None)
@given(bits=st.integers(1, 64), length=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(bits: int, length: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**64 - 1, size=length, dtype=np.uint64, endpoint=True)
    if bits < 64:
        values &= np.uint64((1 << bits) - 1)
    assert np.array_equal(unpack_ring(pack_ring(values, bits=bits), bits=bits, length=length), values)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 60), data=st.data(), seed=st.binary(min_size=1, max_size=32))
def test_graph_is_regular_and_symmetric(n: int, data: st.DataObject, seed: bytes) -> None:
    k = data.draw(st.integers(1, n - 1).filter(lambda k: (k * n) % 2 == 0))
    graph = neighbour_graph([f"m{i}" for i in range(n)], degree=k, seed=seed)
    for member, neighbours in graph.items():
        assert len(set(neighbours)) == k and member not in neighbours
        assert all(member in graph[v] for v in neighbours)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(5, 9), data=st.data())
def test_rounds_with_tolerable_dropouts_return_the_sum(n: int, data: st.DataObject) -> None:
    roster = [f"p{i}" for i in range(n)]
    degree = n - 1 if (n - 1) * n % 2 == 0 else n - 2
    threshold = degree // 2 + 1
    params = SecAggParams.create(
        roster,
        session=b"hypothesis session",
        dimension=4,
        clip=1.0,
        bits=12,
        degree=degree,
        threshold=threshold,
        min_inputs=2,
    )
    budget = degree - threshold  # every member may lose this many neighbours
    dropped = data.draw(st.lists(st.sampled_from(roster), unique=True, max_size=budget))
    phases = {m: data.draw(st.integers(0, 3)) for m in dropped}
    inputs = {m: np.random.default_rng(i).uniform(-1.2, 1.2, 4) for i, m in enumerate(roster)}
    members = {m: SecAggMember(m, params) for m in roster}
    aggregator = SecAggAggregator(params)

    def live(phase: int, inbox: object) -> list[str]:
        return [m for m in roster if m in inbox and phases.get(m, 4) > phase]  # type: ignore[operator]

    keys = aggregator.collect_keys([members[m].advertise_keys() for m in live(0, roster)])
    deliveries = aggregator.route_shares([members[m].share_keys(keys[m]) for m in live(1, keys)])
    requests = aggregator.collect_masked(
        [members[m].masked_input(inputs[m], deliveries[m]) for m in live(2, deliveries)]
    )
    result = aggregator.finish([members[m].unmask(requests[m]) for m in live(3, requests)])
    assert set(result.contributors) == {m for m in roster if phases.get(m, 4) >= 3}
    expected = sum(np.clip(inputs[m], -1.0, 1.0) for m in result.contributors)
    assert np.all(np.abs(result.total - expected) <= result.error_bound)
