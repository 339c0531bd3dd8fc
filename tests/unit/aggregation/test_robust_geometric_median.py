"""Geometric median (smoothed Weiszfeld, RFA) against a naive implementation and a generic optimizer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import optimize  # type: ignore[import-untyped]

from fedswarm.aggregation.geometric_median import geometric_median
from fedswarm.core.errors import ConfigurationError


def naive_weiszfeld(updates: np.ndarray, weights: np.ndarray, *, tol: float, max_iter: int, eps: float) -> np.ndarray:
    """Pillutla et al. 2022, Algorithm 'smoothed Weiszfeld', on the vectors themselves."""
    a = weights / weights.sum()
    v = sum(a_i * x for a_i, x in zip(a, updates, strict=True))

    def objective(point: np.ndarray) -> float:
        return math.fsum(a_i * math.dist(point, x) for a_i, x in zip(a, updates, strict=True))

    value = objective(v)
    for _ in range(max_iter):
        if value == 0:
            break
        b = [a_i / max(eps, math.dist(v, x)) for a_i, x in zip(a, updates, strict=True)]
        v = sum(b_i * x for b_i, x in zip(b, updates, strict=True)) / math.fsum(b)
        new_value = objective(v)
        done = abs(value - new_value) <= tol * new_value
        value = new_value
        if done:
            break
    return np.asarray(v)


def objective(point: np.ndarray, updates: np.ndarray, weights: np.ndarray | None = None) -> float:
    w = np.ones(len(updates)) if weights is None else weights
    return float(np.sum(w * np.linalg.norm(updates - point, axis=1)) / w.sum())


@pytest.mark.parametrize("max_iter", [1, 2, 5, 100])
def test_matches_naive_weiszfeld(max_iter: int) -> None:
    rng = np.random.default_rng(max_iter)
    for n in (2, 5, 12):
        updates = rng.standard_normal((n, 7)) * rng.uniform(0.5, 4, size=(n, 1))
        weights = rng.uniform(0.5, 2.0, size=n)
        expected = naive_weiszfeld(updates, weights, tol=1e-6, max_iter=max_iter, eps=1e-8)
        got = geometric_median(updates, weights=weights, max_iter=max_iter)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-10)


def test_minimizes_the_sum_of_distances_like_a_generic_optimizer() -> None:
    rng = np.random.default_rng(1)
    updates = rng.standard_normal((15, 6))
    got = geometric_median(updates, tol=1e-12, max_iter=1000)
    reference = optimize.minimize(
        objective,
        updates.mean(axis=0),
        args=(updates,),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 100_000, "maxfev": 100_000},
    ).x
    assert objective(got, updates) <= objective(reference, updates) + 1e-9
    np.testing.assert_allclose(got, reference, atol=1e-4)
    for candidate in [updates.mean(axis=0), *updates]:
        assert objective(got, updates) <= objective(candidate, updates)


def test_integer_weights_equal_repeating_updates() -> None:
    rng = np.random.default_rng(2)
    updates = rng.standard_normal((5, 4))
    weights = np.array([1, 3, 2, 1, 2])
    np.testing.assert_allclose(
        geometric_median(updates, weights=weights, tol=1e-12, max_iter=500),
        geometric_median(np.repeat(updates, weights, axis=0), tol=1e-12, max_iter=500),
        atol=1e-8,
    )


def test_zero_weight_updates_are_ignored() -> None:
    rng = np.random.default_rng(3)
    updates = rng.standard_normal((6, 4))
    updates[2] = 1e6
    weights = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(
        geometric_median(updates, weights=weights), geometric_median(np.delete(updates, 2, axis=0)), atol=1e-12
    )


def test_minority_of_attackers_moves_it_little() -> None:
    rng = np.random.default_rng(4)
    honest = rng.standard_normal((11, 20))
    attackers = np.vstack([np.full((4, 20), 1e4), np.full((1, 20), -1e300)])
    result = geometric_median(np.vstack([honest, attackers]), tol=1e-10, max_iter=500)
    assert np.isfinite(result).all()
    clean = geometric_median(honest, tol=1e-10, max_iter=500)
    assert np.linalg.norm(result - clean) < 2.0 * np.sqrt(20)
    assert np.linalg.norm(result - np.vstack([honest, attackers[:4]]).mean(axis=0)) > 100


def test_single_and_all_equal_updates() -> None:
    np.testing.assert_array_equal(geometric_median([[1.0, 2.0]]), [1.0, 2.0])
    np.testing.assert_allclose(geometric_median(np.tile([1e9, -3.0], (4, 1))), [1e9, -3.0], rtol=1e-15)


def test_large_common_offset_keeps_precision() -> None:
    rng = np.random.default_rng(5)
    noise = rng.standard_normal((9, 30))
    shifted = geometric_median(1e8 + noise, tol=1e-10, max_iter=300)
    plain = geometric_median(noise, tol=1e-10, max_iter=300)
    np.testing.assert_allclose(shifted - 1e8, plain, atol=1e-6)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tol": -1.0}, r"0 <= tol < inf: tol=-1.0"),
        ({"tol": math.nan}, "tol"),
        ({"tol": "x"}, "tol must be a real number"),
        ({"max_iter": 0}, "max_iter >= 1: max_iter=0"),
        ({"max_iter": 2.5}, "max_iter must be an integer"),
        ({"eps": 0.0}, r"0 < eps < inf: eps=0.0"),
        ({"eps": -1e-8}, "eps"),
    ],
)
def test_settings_outside_bounds(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"geometric_median.*{message}"):
        geometric_median([[0.0], [1.0]], **settings)
