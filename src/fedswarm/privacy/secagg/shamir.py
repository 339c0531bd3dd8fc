"""Shamir secret sharing over a prime field (Shamir, 1979, "How to share a secret").

A secret ``s`` is the constant term of a random polynomial ``f`` of degree ``threshold - 1`` over
GF(p); holder ``x`` (a distinct non-zero field element) receives ``f(x)``. Any ``threshold`` shares give
``s = f(0)`` by Lagrange interpolation, while any ``threshold - 1`` shares are uniformly distributed
whatever ``s`` is.

The default field is GF(2^127 - 1) (a Mersenne prime). Byte strings are cut into 15-byte chunks (120 bits,
below the field size), each chunk shared with its own polynomial at the same points, so a share of a
32-byte secret is a tuple of three field elements (48 bytes on the wire with :func:`share_to_bytes`).

Everything here is a pure function of its arguments; fresh coefficients come from :mod:`secrets`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from fedswarm.core.errors import ParameterError

__all__ = [
    "CHUNK_BYTES",
    "ELEMENT_BYTES",
    "PRIME_127",
    "ByteShare",
    "evaluate_polynomial",
    "lagrange_coefficients_at_zero",
    "recombine_bytes",
    "recombine_int",
    "share_from_bytes",
    "share_to_bytes",
    "split_bytes",
    "split_int",
]

PRIME_127 = 2**127 - 1
CHUNK_BYTES = 15
ELEMENT_BYTES = 16

ByteShare = tuple[int, ...]
"""A share of a byte string: one field element per 15-byte chunk, all evaluated at the holder's x."""


def _check_points(xs: Sequence[int], prime: int) -> None:
    if len(set(xs)) != len(xs):
        raise ParameterError(f"shamir points: x coordinates {list(xs)} are not distinct")
    for x in xs:
        if not 0 < x < prime:
            raise ParameterError(f"shamir points: x = {x} is not a non-zero element of GF({prime})")


def evaluate_polynomial(coefficients: Sequence[int], x: int, *, prime: int = PRIME_127) -> int:
    """Evaluate ``sum(c_i * x**i) mod prime`` (coefficients from the constant term up) by Horner's rule."""
    value = 0
    for coefficient in reversed(coefficients):
        value = (value * x + coefficient) % prime
    return value


def split_int(
    secret: int,
    xs: Sequence[int],
    *,
    threshold: int,
    prime: int = PRIME_127,
    coefficients: Sequence[int] | None = None,
) -> list[int]:
    """Split a field element into one share per point of ``xs``.

    Parameters
    ----------
    secret
        The secret, ``0 <= secret < prime``.
    xs
        Distinct non-zero evaluation points, one per holder.
    threshold
        Number of shares needed to recombine, ``1 <= threshold <= len(xs)``.
    prime
        Field modulus.
    coefficients
        The ``threshold - 1`` higher coefficients, for known-answer tests only; ``None`` draws them
        uniformly with :func:`secrets.randbelow`.

    Returns
    -------
    list of int
        ``f(x)`` for each ``x`` in ``xs``, in the same order.
    """
    if not 0 <= secret < prime:
        raise ParameterError(f"shamir secret: {secret} is not an element of GF({prime})")
    if not 1 <= threshold <= len(xs):
        raise ParameterError(f"shamir threshold: {threshold} is outside 1..{len(xs)} (the number of holders)")
    _check_points(xs, prime)
    if coefficients is None:
        higher = [secrets.randbelow(prime) for _ in range(threshold - 1)]
    else:
        higher = list(coefficients)
        if len(higher) != threshold - 1:
            raise ParameterError(f"shamir coefficients: expected {threshold - 1}, got {len(higher)}")
    polynomial = [secret, *higher]
    return [evaluate_polynomial(polynomial, x, prime=prime) for x in xs]


def lagrange_coefficients_at_zero(xs: Sequence[int], *, prime: int = PRIME_127) -> list[int]:
    """Return ``l_j(0)`` for each point, so that ``f(0) = sum(l_j(0) * f(x_j))`` for ``deg f < len(xs)``."""
    _check_points(xs, prime)
    result = []
    for j, xj in enumerate(xs):
        numerator, denominator = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                numerator = numerator * xm % prime
                denominator = denominator * (xm - xj) % prime
        result.append(numerator * pow(denominator, -1, prime) % prime)
    return result


def recombine_int(points: Sequence[tuple[int, int]], *, prime: int = PRIME_127) -> int:
    """Recover ``f(0)`` from ``(x, f(x))`` pairs; needs at least ``threshold`` of them to be right."""
    if not points:
        raise ParameterError("shamir recombine: no shares given")
    xs = [x for x, _ in points]
    weights = lagrange_coefficients_at_zero(xs, prime=prime)
    return sum(w * y for w, (_, y) in zip(weights, points, strict=True)) % prime


def _chunks(secret: bytes) -> list[int]:
    return [int.from_bytes(secret[i : i + CHUNK_BYTES], "big") for i in range(0, max(len(secret), 1), CHUNK_BYTES)]


def split_bytes(secret: bytes, xs: Sequence[int], *, threshold: int) -> list[ByteShare]:
    """Split a byte string over GF(2^127 - 1); returns one :data:`ByteShare` per point of ``xs``."""
    per_chunk = [split_int(chunk, xs, threshold=threshold) for chunk in _chunks(secret)]
    return [tuple(column) for column in zip(*per_chunk, strict=True)]


def recombine_bytes(points: Sequence[tuple[int, ByteShare]], *, length: int) -> bytes:
    """Recover a ``length``-byte secret from ``(x, share)`` pairs made by :func:`split_bytes`."""
    if not points:
        raise ParameterError("shamir recombine: no shares given")
    chunk_lengths = [min(CHUNK_BYTES, length - i) for i in range(0, max(length, 1), CHUNK_BYTES)]
    for x, share in points:
        if len(share) != len(chunk_lengths):
            raise ParameterError(
                f"shamir share at x = {x}: {len(share)} elements, "
                f"expected {len(chunk_lengths)} for a {length}-byte secret"
            )
    weights = lagrange_coefficients_at_zero([x for x, _ in points])
    out = bytearray()
    for c, size in enumerate(chunk_lengths):
        value = sum(w * share[c] for w, (_, share) in zip(weights, points, strict=True)) % PRIME_127
        if value >= 1 << (8 * size):
            raise ParameterError(f"shamir recombine: chunk {c} does not fit {size} bytes (inconsistent shares)")
        out += value.to_bytes(size, "big")
    return bytes(out)


def share_to_bytes(share: ByteShare) -> bytes:
    """Encode a share as 16 big-endian bytes per field element."""
    return b"".join(element.to_bytes(ELEMENT_BYTES, "big") for element in share)


def share_from_bytes(data: bytes) -> ByteShare:
    """Inverse of :func:`share_to_bytes`; refuses lengths that are not a multiple of 16 or values >= p."""
    if len(data) % ELEMENT_BYTES:
        raise ParameterError(f"shamir share: {len(data)} bytes is not a multiple of {ELEMENT_BYTES}")
    share = tuple(int.from_bytes(data[i : i + ELEMENT_BYTES], "big") for i in range(0, len(data), ELEMENT_BYTES))
    if any(element >= PRIME_127 for element in share):
        raise ParameterError("shamir share: element is not reduced modulo 2^127 - 1")
    return share
