"""Coordinate-wise (weighted) median against a naive per-coordinate implementation of its definition."""

from __future__ import annotations

import numpy as np
import pytest

from fedswarm.aggregation.median import median


def naive_median(updates: np.ndarray) -> np.ndarray:
    n, d = updates.shape
    out = []
    for j in range(d):
        values = sorted(float(updates[i, j]) for i in range(n))
        if n % 2:
            out.append(values[n // 2])
        else:
            out.append((values[n // 2 - 1] + values[n // 2]) / 2)
    return np.array(out)


def naive_weighted_median(updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Smallest value with at least half the weight at or below it; exactly half: midpoint to the next
    value of positive weight."""
    n, d = updates.shape
    total = float(sum(weights))
    out = []
    for j in range(d):
        pairs = sorted((float(updates[i, j]), float(weights[i])) for i in range(n))
        pairs = [(value, weight) for value, weight in pairs if weight > 0]
        running = 0.0
        for k, (value, weight) in enumerate(pairs):
            running += weight
            if 2 * running > total:
                out.append(value)
                break
            if 2 * running == total:
                out.append((value + pairs[k + 1][0]) / 2)
                break
    return np.array(out)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 9, 10])
def test_matches_naive_definition_on_random_updates(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(5):
        updates = rng.standard_normal((n, 17)) * rng.uniform(0.1, 100)
        np.testing.assert_array_equal(median(updates), naive_median(updates))


def test_matches_numpy_over_many_column_chunks() -> None:
    # Wide enough for several column chunks run on the thread pool.
    updates = np.random.default_rng(1).standard_normal((6, 400_001))
    np.testing.assert_array_equal(median(updates), np.median(updates, axis=0))


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_weighted_matches_naive_definition(n: int) -> None:
    rng = np.random.default_rng(10 + n)
    for _ in range(5):
        updates = rng.integers(-5, 6, size=(n, 23)).astype(float)  # many ties
        weights = rng.integers(0, 4, size=n).astype(float)
        weights[rng.integers(n)] += 1  # a positive sum
        np.testing.assert_array_equal(median(updates, weights=weights), naive_weighted_median(updates, weights))


def test_weighted_with_real_weights_matches_naive_definition() -> None:
    rng = np.random.default_rng(7)
    updates = rng.standard_normal((9, 31))
    weights = rng.uniform(0.1, 3.0, size=9)
    np.testing.assert_array_equal(median(updates, weights=weights), naive_weighted_median(updates, weights))


def test_equal_weights_give_the_unweighted_median_over_many_chunks() -> None:
    updates = np.random.default_rng(2).standard_normal((8, 300_007))
    np.testing.assert_array_equal(median(updates, weights=np.full(8, 2.5)), median(updates))


def test_integer_weights_equal_repeating_updates() -> None:
    rng = np.random.default_rng(3)
    updates = rng.standard_normal((5, 40))
    weights = np.array([3, 1, 0, 2, 1])
    repeated = np.repeat(updates, weights, axis=0)
    np.testing.assert_array_equal(median(updates, weights=weights), median(repeated))


def test_minority_of_huge_attackers_cannot_leave_honest_range() -> None:
    rng = np.random.default_rng(4)
    honest = rng.standard_normal((6, 50))
    attackers = np.array([np.full(50, 1e300), np.full(50, -1e300), rng.standard_normal(50) * 1e12])
    result = median(np.vstack([attackers, honest]))
    assert (result >= honest.min(axis=0)).all() and (result <= honest.max(axis=0)).all()


def test_even_count_midpoint_does_not_overflow() -> None:
    np.testing.assert_array_equal(median([[1.5e308], [1.7e308]]), [1.6e308])


def _ulps_apart(base: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """``base`` moved by ``steps`` units in the last place (away from zero for positive steps)."""
    return np.asarray((base.view(np.int64) + steps).view(np.float64))


@pytest.mark.parametrize("n", [2, 3, 9, 17, 130])
def test_weighted_median_orders_values_a_few_ulps_apart(n: int) -> None:
    # The weighted median sorts int64 keys that carry the member index in their low bits; values this
    # close must still come out in the order of their values.
    rng = np.random.default_rng(100 + n)
    base = rng.standard_normal(300) * rng.uniform(1e-3, 1e3)
    updates = _ulps_apart(np.tile(base, (n, 1)), rng.integers(0, 3 * n, size=(n, 300)))
    weights = rng.uniform(0.5, 4.0, size=n)
    np.testing.assert_array_equal(median(updates, weights=weights), naive_weighted_median(updates, weights))


def test_weighted_median_with_signed_zeros_ties_and_many_members() -> None:
    rng = np.random.default_rng(7)
    updates = rng.choice([-2.5, -0.0, 0.0, 1e-300, -1e-300, 3.0, -np.finfo(float).max], size=(300, 50))
    updates[:40] = 0.0  # free riders
    weights = rng.integers(0, 50, size=300).astype(float)
    got = median(updates, weights=weights)
    np.testing.assert_array_equal(got, naive_weighted_median(updates, weights))


def test_weighted_median_over_several_column_chunks_matches_naive_definition() -> None:
    # 100 members: column chunks of 5242 on the threads; integer weights make running sums of exactly
    # half the total common (the median is then averaged with the next value of positive weight).
    rng = np.random.default_rng(21)
    n, d = 100, 6_000
    updates = rng.integers(-20, 21, size=(n, d)).astype(float) + rng.choice([0.0, 0.25], size=(n, d))
    weights = rng.integers(0, 3, size=n).astype(float)
    weights[0] += 2.0 - weights.sum() % 2  # an even total: running sums of exactly half are common
    got = median(updates, weights=weights)
    expected = naive_weighted_median(updates, weights)
    np.testing.assert_array_equal(got, expected)
    total = weights.sum()
    sorted_weights = [weights[np.argsort(updates[:, j], kind="stable")].cumsum() for j in range(200)]
    assert any((2 * c == total).any() for c in sorted_weights)


def test_weighted_median_agrees_with_the_sorted_cumulative_definition_at_scale() -> None:
    # An independent vectorized definition (argsort, cumulative sum along each coordinate) on wide input.
    rng = np.random.default_rng(22)
    n, d = 37, 40_000
    updates = rng.standard_normal((n, d)) * rng.uniform(0.1, 10.0, size=(n, 1))
    weights = rng.uniform(0.0, 2.0, size=n)
    order = np.argsort(updates, axis=0, kind="stable")
    cumulative = np.cumsum(weights[order], axis=0)
    half = 0.5 * cumulative[-1]
    lo = (cumulative < half).sum(axis=0)
    hi = (cumulative <= half).sum(axis=0)
    cols = np.arange(d)
    expected = 0.5 * updates[order[lo, cols], cols] + 0.5 * updates[order[hi, cols], cols]
    np.testing.assert_array_equal(median(updates, weights=weights), expected)
