"""Shamir secret sharing against independently computed vectors, and its refusals."""

from __future__ import annotations

import importlib.util
import itertools
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedswarm.core.errors import ParameterError
from fedswarm.privacy.secagg.shamir import (
    PRIME_127,
    evaluate_polynomial,
    lagrange_coefficients_at_zero,
    recombine_bytes,
    recombine_int,
    share_from_bytes,
    share_to_bytes,
    split_bytes,
    split_int,
)

VECTORS = Path(__file__).parents[2] / "vectors" / "secagg"


def _vectors() -> ModuleType:
    spec = importlib.util.spec_from_file_location("secagg_vectors", VECTORS / "secagg_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


V = _vectors()


@pytest.mark.parametrize("case", V.shamir_integer_cases(), ids=lambda c: c["name"])
def test_split_int_matches_vectors_and_every_threshold_subset_recombines(case: dict[str, Any]) -> None:
    prime, t = case["prime"], case["threshold"]
    ys = split_int(case["secret"], case["xs"], threshold=t, prime=prime, coefficients=case["coefficients"])
    assert ys == case["ys"]
    points = list(zip(case["xs"], case["ys"], strict=True))
    for subset in itertools.islice(itertools.combinations(points, t), 50):
        assert recombine_int(list(subset), prime=prime) == case["secret"]


def test_textbook_lagrange_with_exact_rationals() -> None:
    # f(x) = 1234 + 166 x + 94 x^2 interpolated at 0 over the rationals, no field arithmetic involved.
    points = [(2, 1942), (4, 3402), (5, 4414)]
    value = Fraction(0)
    for j, (xj, yj) in enumerate(points):
        term = Fraction(yj)
        for m, (xm, _) in enumerate(points):
            if m != j:
                term *= Fraction(xm, xm - xj)
        value += term
    assert value == 1234
    assert recombine_int(points) == 1234
    weights = lagrange_coefficients_at_zero([2, 4, 5])
    assert [Fraction(w) for w in weights] != [] and sum(weights) % PRIME_127 == 1  # l_j(0) sum to 1


@pytest.mark.parametrize("case", V.shamir_byte_cases(), ids=lambda c: c["name"])
def test_recombine_bytes_of_independent_shares(case: dict[str, Any]) -> None:
    points = [(x, tuple(share)) for x, share in zip(case["xs"], case["shares"], strict=True)]
    t = case["threshold"]
    assert recombine_bytes(points[:t], length=len(case["secret"])) == case["secret"]
    assert recombine_bytes(points[-t:], length=len(case["secret"])) == case["secret"]


def test_split_bytes_round_trip_and_fewer_shares_fail() -> None:
    secret = bytes(range(32))
    shares = split_bytes(secret, [3, 5, 8, 9, 11], threshold=3)
    assert all(len(s) == 3 for s in shares)
    points = list(zip([3, 5, 8, 9, 11], shares, strict=True))
    assert recombine_bytes(points[1:4], length=32) == secret
    assert split_bytes(secret, [3, 5, 8, 9, 11], threshold=3) != shares  # fresh randomness
    with pytest.raises(ParameterError):
        # Two shares of a degree-2 polynomial interpolate a wrong line; its chunks overflow 15 bytes.
        recombine_bytes(points[:2], length=32)


def test_horner_equals_power_sum() -> None:
    coefficients = [5, 0, 7, 2**126, 3]
    for x in (1, 2, 10**20):
        expected = sum(c * pow(x, i, PRIME_127) for i, c in enumerate(coefficients)) % PRIME_127
        assert evaluate_polynomial(coefficients, x) == expected


def test_share_bytes_encoding() -> None:
    share = (0, 1, PRIME_127 - 1)
    data = share_to_bytes(share)
    assert len(data) == 48 and data[:16] == bytes(16)
    assert share_from_bytes(data) == share
    with pytest.raises(ParameterError, match="multiple of 16"):
        share_from_bytes(data[:-1])
    with pytest.raises(ParameterError, match="not reduced"):
        share_from_bytes(b"\xff" * 16)


def test_refusals() -> None:
    with pytest.raises(ParameterError, match="not distinct"):
        split_int(1, [1, 1, 2], threshold=2)
    with pytest.raises(ParameterError, match="non-zero"):
        split_int(1, [0, 1, 2], threshold=2)
    with pytest.raises(ParameterError, match="threshold"):
        split_int(1, [1, 2], threshold=3)
    with pytest.raises(ParameterError, match="element"):
        split_int(PRIME_127, [1, 2], threshold=2)
    with pytest.raises(ParameterError, match="coefficients"):
        split_int(1, [1, 2], threshold=2, coefficients=[1, 2])
    with pytest.raises(ParameterError, match="no shares"):
        recombine_int([])
