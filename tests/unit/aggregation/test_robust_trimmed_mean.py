"""Coordinate-wise trimmed mean against its definition (naive loops) and scipy's trim_mean."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]

from fedswarm.aggregation.trimmed_mean import trim_count, trimmed_mean
from fedswarm.core.errors import ConfigurationError


def naive_trimmed_mean(updates: np.ndarray, k: int) -> np.ndarray:
    n, d = updates.shape
    out = []
    for j in range(d):
        kept = sorted(float(updates[i, j]) for i in range(n))[k : n - k]
        out.append(math.fsum(kept) / len(kept))
    return np.array(out)


@pytest.mark.parametrize(("n", "beta", "k"), [(1, 0.0, 0), (5, 0.2, 1), (10, 0.25, 2), (11, 0.45, 4), (4, 0.1, 0)])
def test_matches_naive_definition(n: int, beta: float, k: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(5):
        updates = rng.standard_normal((n, 19)) * 10
        np.testing.assert_allclose(trimmed_mean(updates, beta=beta), naive_trimmed_mean(updates, k), rtol=1e-13)


def test_matches_scipy_over_many_column_chunks() -> None:
    updates = np.random.default_rng(1).standard_normal((9, 250_003))
    np.testing.assert_allclose(
        trimmed_mean(updates, beta=0.3), stats.trim_mean(updates, 0.3, axis=0), rtol=1e-12, atol=1e-15
    )


def test_beta_zero_is_the_mean() -> None:
    updates = np.random.default_rng(2).standard_normal((7, 30))
    np.testing.assert_allclose(trimmed_mean(updates, beta=0), updates.mean(axis=0), rtol=1e-13)


@pytest.mark.parametrize(
    ("n", "beta", "k"),
    [(100, 0.29, 29), (30, 0.1, 3), (100, 0.14, 14), (3, 0.49, 1), (2, 0.49, 0), (7, 0, 0), (50, 0.14, 7)],
)
def test_trim_count_reads_beta_as_a_decimal(n: int, beta: float, k: int) -> None:
    assert trim_count(n, beta=beta) == k


def test_trim_count_fixes_the_binary_rounding_of_beta() -> None:
    assert math.floor(0.29 * 100) == 28  # what a plain float product would give
    values = np.arange(100, dtype=float)[:, None]
    np.testing.assert_array_equal(trimmed_mean(values, beta=0.29), [(29 + 70) / 2])


@pytest.mark.parametrize("beta", [0.5, 0.75, -0.01, math.nan, math.inf, True, "0.1", None])
def test_beta_outside_bounds_is_refused(beta: Any) -> None:
    with pytest.raises(ConfigurationError, match="beta"):
        trimmed_mean([[1.0], [2.0], [3.0]], beta=beta)


def test_refusal_names_the_bound() -> None:
    with pytest.raises(ConfigurationError, match=r"trimmed_mean needs 0 <= beta < 0.5: beta=0.6"):
        trimmed_mean([[1.0]], beta=0.6)


def test_attackers_within_trim_budget_cannot_leave_honest_range() -> None:
    rng = np.random.default_rng(3)
    honest = rng.standard_normal((7, 40))
    attackers = np.vstack([np.full(40, 1e300), np.full(40, -1e300), rng.standard_normal(40) * 1e9])
    updates = np.vstack([honest[:3], attackers, honest[3:]])  # n = 10, beta = 0.3 trims 3 per side
    result = trimmed_mean(updates, beta=0.3)
    assert (result >= honest.min(axis=0)).all() and (result <= honest.max(axis=0)).all()
