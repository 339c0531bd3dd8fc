"""Fixed-point quantization into the ring Z_{2^R} used by secure aggregation.

A real vector is clipped coordinate-wise to ``[-clip, clip]`` and scaled by
``scale = (2^(bits-1) - 1) / clip`` to a signed integer ``q`` with ``|q| <= 2^(bits-1) - 1``, then read
modulo ``2^R`` (two's complement). The sum of ``n`` such vectors has ``|sum| <= n (2^(bits-1) - 1)``,
which is below ``2^(R-1)`` when ``R >= bits + ceil(log2 n)`` (:func:`required_ring_bits`); so the
modular sum, lifted to the centred range ``[-2^(R-1), 2^(R-1))``, *is* the integer sum and never
wraps. Ring sizes above 64 bits are refused (masks are unsigned 64-bit words).

The ring is a power of two rather than a prime field: the PRG's 64-bit words reduced modulo ``2^R``
are exactly uniform (no rejection sampling), arithmetic is native unsigned wrap-around, and
masked vectors pack into exactly ``R`` bits per element.

Rounding is either

* ``"stochastic"``: ``floor(y) + Bernoulli(y - floor(y))``, unbiased, ``|error| < 1/scale`` per
  coordinate (the randomness is for rounding only, not for secrecy, so numpy's generator is fine), or
* ``"deterministic"``: round half to even, ``|error| <= 0.5/scale`` per coordinate but biased for
  inputs that sit systematically between grid points.

:func:`pack_ring` / :func:`unpack_ring` store ring elements in exactly ``R`` bits each for the wire.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError, ParameterError

__all__ = [
    "MAX_RING_BITS",
    "Rounding",
    "dequantize",
    "pack_ring",
    "packed_size",
    "quantization_error_bound",
    "quantization_scale",
    "quantize",
    "required_ring_bits",
    "unpack_ring",
]

Rounding = Literal["stochastic", "deterministic"]
MAX_RING_BITS = 64


def quantization_scale(*, clip: float, bits: int) -> float:
    """Grid points per unit: ``(2^(bits-1) - 1) / clip``."""
    if not (math.isfinite(clip) and clip > 0):
        raise ConfigurationError(f"quantization clip: {clip} must be a positive finite number")
    if not 2 <= bits <= MAX_RING_BITS - 1:
        raise ConfigurationError(f"quantization bits: {bits} is outside 2..{MAX_RING_BITS - 1}")
    return float((1 << (bits - 1)) - 1) / clip


def required_ring_bits(num_members: int, *, bits: int) -> int:
    """Smallest ring size ``R`` such that the sum of ``num_members`` ``bits``-bit inputs never wraps.

    Raises
    ------
    ConfigurationError
        If that ring exceeds 64 bits.
    """
    if num_members < 1:
        raise ConfigurationError(f"num_members: {num_members} must be at least 1")
    ring_bits = bits + math.ceil(math.log2(num_members))
    if ring_bits > MAX_RING_BITS:
        raise ConfigurationError(
            f"quantization bits: {bits} bits for {num_members} members needs a {ring_bits}-bit ring, "
            f"above {MAX_RING_BITS}; the modular sum would overflow"
        )
    return ring_bits


def quantization_error_bound(num_members: int, *, clip: float, bits: int, rounding: Rounding) -> float:
    """Bound on ``|dequantized sum - sum of clipped inputs|`` per coordinate for ``num_members`` inputs."""
    per_member = 1.0 if rounding == "stochastic" else 0.5
    return num_members * per_member / quantization_scale(clip=clip, bits=bits)


def quantize(
    x: npt.ArrayLike,
    *,
    clip: float,
    bits: int,
    rounding: Rounding = "stochastic",
    rng: np.random.Generator | None = None,
) -> npt.NDArray[np.int64]:
    """Clip and round a real vector to signed integers ``|q| <= 2^(bits-1) - 1``.

    Parameters
    ----------
    x
        Real values (any shape); NaN and infinities are refused.
    clip
        Coordinates are clipped to ``[-clip, clip]`` first.
    bits
        Bits per quantized value, sign included.
    rounding
        ``"stochastic"`` (unbiased) or ``"deterministic"`` (half to even), see the module docstring.
    rng
        Generator for stochastic rounding; ``None`` uses a fresh OS-seeded one.

    Returns
    -------
    numpy.ndarray
        ``int64`` array of the shape of ``x``.
    """
    scale = quantization_scale(clip=clip, bits=bits)
    values = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ParameterError("quantize input: contains NaN or infinite values")
    y = np.clip(values, -clip, clip) * scale
    if rounding == "stochastic":
        generator = rng if rng is not None else np.random.default_rng()
        low = np.floor(y)
        y = low + (generator.random(y.shape) < (y - low))
    elif rounding == "deterministic":
        y = np.rint(y)
    else:
        raise ConfigurationError(f"quantization rounding: {rounding!r} is not 'stochastic' or 'deterministic'")
    limit = (1 << (bits - 1)) - 1
    return np.clip(y, -limit, limit).astype(np.int64)


def dequantize(
    ring_values: npt.NDArray[np.uint64], *, clip: float, bits: int, ring_bits: int
) -> npt.NDArray[np.float64]:
    """Map a ring element (typically a sum of quantized vectors) back to reals.

    The value is lifted to the centred range ``[-2^(R-1), 2^(R-1))`` and divided by the scale.
    """
    if not 1 <= ring_bits <= MAX_RING_BITS:
        raise ConfigurationError(f"ring_bits: {ring_bits} is outside 1..{MAX_RING_BITS}")
    values = np.asarray(ring_values, dtype=np.uint64)
    shift = np.uint64(MAX_RING_BITS - ring_bits)
    # Move the ring's sign bit to bit 63, reinterpret as signed, shift back arithmetically.
    signed = (values << shift).view(np.int64) >> shift.astype(np.int64)
    return signed.astype(np.float64) / quantization_scale(clip=clip, bits=bits)


def packed_size(length: int, *, bits: int) -> int:
    """Bytes taken by :func:`pack_ring` for ``length`` elements of ``bits`` bits."""
    return (length * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_RING_BITS:
        raise ParameterError(f"ring bits: {bits} is outside 1..{MAX_RING_BITS}")


def pack_ring(values: npt.NDArray[np.uint64], *, bits: int) -> bytes:
    """Concatenate the low ``bits`` bits of each element, little-endian, into bytes.

    Element ``i`` occupies bits ``[i*bits, (i+1)*bits)`` of the little-endian bit string.
    """
    _check_bits(bits)
    flat = np.asarray(values, dtype=np.uint64).reshape(-1)
    if bits < MAX_RING_BITS and flat.size and int(flat.max()) >> bits:
        raise ParameterError(f"pack_ring: a value does not fit in {bits} bits")
    groups = -(-flat.size // 64)
    block = np.zeros((groups, 64), dtype=np.uint64)
    block.reshape(-1)[: flat.size] = flat
    words = np.zeros((groups, bits), dtype=np.uint64)
    for j in range(64):
        start = j * bits
        word, offset = start >> 6, start & 63
        words[:, word] |= block[:, j] << np.uint64(offset)
        if offset + bits > 64:
            words[:, word + 1] |= block[:, j] >> np.uint64(64 - offset)
    return words.astype("<u8").tobytes()[: packed_size(flat.size, bits=bits)]


def unpack_ring(data: bytes, *, bits: int, length: int) -> npt.NDArray[np.uint64]:
    """Inverse of :func:`pack_ring`."""
    _check_bits(bits)
    if len(data) != packed_size(length, bits=bits):
        raise ParameterError(
            f"unpack_ring: {len(data)} bytes, expected {packed_size(length, bits=bits)} "
            f"for {length} elements of {bits} bits"
        )
    groups = -(-length // 64)
    padded = bytes(data) + bytes(groups * bits * 8 - len(data))
    words = np.frombuffer(padded, dtype="<u8").astype(np.uint64).reshape(groups, bits)
    block = np.zeros((groups, 64), dtype=np.uint64)
    for j in range(64):
        start = j * bits
        word, offset = start >> 6, start & 63
        block[:, j] = words[:, word] >> np.uint64(offset)
        if offset + bits > 64:
            block[:, j] |= words[:, word + 1] << np.uint64(64 - offset)
    if bits < MAX_RING_BITS:
        block &= np.uint64((1 << bits) - 1)
    return block.reshape(-1)[:length].copy()
