"""Fixed-point quantization into Z_{2^R}: error bounds, overflow refusal, bit packing."""

from __future__ import annotations

import numpy as np
import pytest

from fedswarm.core.errors import ConfigurationError, ParameterError
from fedswarm.privacy.secagg.member import to_ring
from fedswarm.privacy.secagg.quantize import (
    dequantize,
    pack_ring,
    packed_size,
    quantization_error_bound,
    quantization_scale,
    quantize,
    required_ring_bits,
    unpack_ring,
)


def test_known_values_deterministic() -> None:
    # bits = 8: scale = 127 / clip; 0.3 * 127 = 38.1 -> 38; 0.5 * 127 = 63.5 -> 64 (half to even).
    q = quantize(np.array([-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 5.0]), clip=1.0, bits=8, rounding="deterministic")
    assert q.tolist() == [-127, -127, -64, 0, 38, 127, 127]
    assert quantization_scale(clip=2.0, bits=8) == 63.5


def test_ring_sum_of_n_members_never_overflows_at_the_extremes() -> None:
    n, bits = 30, 12
    ring_bits = required_ring_bits(n, bits=bits)
    assert ring_bits == 12 + 5
    for extreme in (1.0, -1.0):
        q = quantize(np.full(3, extreme), clip=1.0, bits=bits, rounding="deterministic")
        total = sum((to_ring(q, ring_bits=ring_bits) for _ in range(n)), np.zeros(3, dtype=np.uint64))
        total &= np.uint64((1 << ring_bits) - 1)
        assert np.allclose(dequantize(total, clip=1.0, bits=bits, ring_bits=ring_bits), n * extreme)


@pytest.mark.parametrize("rounding", ["stochastic", "deterministic"])
def test_sum_error_within_bound(rounding: str) -> None:
    rng = np.random.default_rng(1)
    n, bits, clip = 17, 10, 0.5
    ring_bits = required_ring_bits(n, bits=bits)
    x = rng.normal(0, 0.4, size=(n, 200))
    total = np.zeros(200, dtype=np.uint64)
    for row in x:
        total += to_ring(quantize(row, clip=clip, bits=bits, rounding=rounding, rng=rng), ring_bits=ring_bits)  # type: ignore[arg-type]
    total &= np.uint64((1 << ring_bits) - 1)
    got = dequantize(total, clip=clip, bits=bits, ring_bits=ring_bits)
    err = np.abs(got - np.clip(x, -clip, clip).sum(axis=0))
    bound = quantization_error_bound(n, clip=clip, bits=bits, rounding=rounding)  # type: ignore[arg-type]
    assert err.max() <= bound
    assert bound == pytest.approx(n * (1.0 if rounding == "stochastic" else 0.5) * clip / 511)


def test_stochastic_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(2)
    q = quantize(np.full(200_000, 0.25 / 127), clip=1.0, bits=8, rng=rng)  # a quarter of a grid step
    assert set(np.unique(q).tolist()) == {0, 1}
    assert abs(q.mean() - 0.25) < 0.005
    det = quantize(np.full(10, 0.25 / 127), clip=1.0, bits=8, rounding="deterministic")
    assert det.tolist() == [0] * 10


def test_refusals() -> None:
    with pytest.raises(ConfigurationError, match="overflow"):
        required_ring_bits(100, bits=60)
    with pytest.raises(ConfigurationError, match="clip"):
        quantize(np.zeros(2), clip=0.0, bits=8)
    with pytest.raises(ConfigurationError, match="bits"):
        quantize(np.zeros(2), clip=1.0, bits=1)
    with pytest.raises(ParameterError, match="NaN"):
        quantize(np.array([np.nan]), clip=1.0, bits=8)
    with pytest.raises(ConfigurationError, match="rounding"):
        quantize(np.zeros(2), clip=1.0, bits=8, rounding="up")  # type: ignore[arg-type]


@pytest.mark.parametrize("bits", [1, 5, 23, 32, 33, 63, 64])
def test_pack_unpack_round_trip_and_size(bits: int) -> None:
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 2**63, size=1000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    if bits < 64:
        values &= np.uint64((1 << bits) - 1)
    for length in (0, 1, 63, 64, 65, 1000):
        data = pack_ring(values[:length], bits=bits)
        assert len(data) == packed_size(length, bits=bits) == (length * bits + 7) // 8
        assert np.array_equal(unpack_ring(data, bits=bits, length=length), values[:length])


def test_pack_layout_is_little_endian_bit_string() -> None:
    # 3-bit elements 1, 2, 7 -> bits 100 010 111 (LSB first) -> byte0 = 0b11010001, byte1 = 0b1.
    assert pack_ring(np.array([1, 2, 7], dtype=np.uint64), bits=3) == bytes([0b11010001, 0b1])
    with pytest.raises(ParameterError, match="fit"):
        pack_ring(np.array([8], dtype=np.uint64), bits=3)
    with pytest.raises(ParameterError, match="expected"):
        unpack_ring(b"\x00", bits=3, length=5)
