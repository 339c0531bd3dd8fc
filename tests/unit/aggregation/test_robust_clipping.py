"""Norm bounding (Sun et al. 2019) and centered clipping (Karimireddy et al. 2021) against naive loops."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fedswarm.aggregation.clipping import centered_clipping, clipped_mean
from fedswarm.core.errors import ConfigurationError


def _norm(v: np.ndarray) -> float:
    return math.sqrt(math.fsum(float(x) ** 2 for x in v))


def naive_clipped_mean(updates: np.ndarray, max_norm: float, weights: np.ndarray) -> np.ndarray:
    clipped = [g * min(1.0, max_norm / _norm(g)) if _norm(g) > 0 else g for g in updates]
    return np.asarray(sum(w * g for w, g in zip(weights, clipped, strict=True))) / math.fsum(weights)


def naive_centered_clipping(updates: np.ndarray, tau: float, center: np.ndarray, iterations: int) -> np.ndarray:
    v = center.astype(float)
    for _ in range(iterations):
        step = np.zeros_like(v)
        for x in updates:
            offset = x - v
            norm = _norm(offset)
            step += offset * (min(1.0, tau / norm) if norm > 0 else 1.0)
        v = v + step / len(updates)
    return v


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 3.0, 100.0])
def test_clipped_mean_matches_naive_definition(max_norm: float) -> None:
    rng = np.random.default_rng(int(max_norm * 10))
    updates = rng.standard_normal((9, 5)) * rng.uniform(0.1, 3, size=(9, 1))
    weights = rng.uniform(0, 5, size=9)
    np.testing.assert_allclose(
        clipped_mean(updates, max_norm=max_norm), naive_clipped_mean(updates, max_norm, np.ones(9)), rtol=1e-13
    )
    np.testing.assert_allclose(
        clipped_mean(updates, max_norm=max_norm, weights=weights),
        naive_clipped_mean(updates, max_norm, weights),
        rtol=1e-13,
    )


def test_clipped_mean_norm_is_bounded_even_when_all_point_the_same_way() -> None:
    direction = np.random.default_rng(1).standard_normal(1000)
    updates = np.vstack([direction * s for s in (3.0, 7.0, 1e5, 1e300 / np.abs(direction).max())])
    result = clipped_mean(updates, max_norm=0.7)
    assert np.linalg.norm(result) <= 0.7
    np.testing.assert_allclose(result, direction / np.linalg.norm(direction) * 0.7, rtol=1e-12)


def test_clipped_mean_without_clipping_is_the_mean() -> None:
    updates = np.tile([0.1, -0.2, 0.3], (7, 1))
    np.testing.assert_allclose(clipped_mean(updates, max_norm=1.0), [0.1, -0.2, 0.3], rtol=1e-15)


@pytest.mark.parametrize("iterations", [1, 2, 5])
def test_centered_clipping_matches_naive_definition(iterations: int) -> None:
    rng = np.random.default_rng(iterations)
    updates = rng.standard_normal((10, 6)) * rng.uniform(0.1, 5, size=(10, 1))
    center = rng.standard_normal(6) * 0.5
    for tau in (0.3, 2.0, 50.0):
        np.testing.assert_allclose(
            centered_clipping(updates, tau=tau, center=center, iterations=iterations),
            naive_centered_clipping(updates, tau, center, iterations),
            rtol=1e-12,
            atol=1e-14,
        )


def test_centered_clipping_over_many_column_steps() -> None:
    rng = np.random.default_rng(7)
    updates = rng.standard_normal((3, 200_003))
    center = np.zeros(200_003)
    norms = np.linalg.norm(updates, axis=1)
    tau = float(np.median(norms))
    expected = sum(x * min(1.0, tau / nx) for x, nx in zip(updates, norms, strict=True)) / 3
    np.testing.assert_allclose(centered_clipping(updates, tau=tau, center=center), expected, rtol=1e-12, atol=1e-13)


def test_one_far_update_moves_the_center_by_at_most_tau_over_n() -> None:
    rng = np.random.default_rng(8)
    center = rng.standard_normal(20)
    updates = np.vstack([np.tile(center, (9, 1)), np.full((1, 20), 1e300)])
    result = centered_clipping(updates, tau=0.5, center=center)
    assert np.linalg.norm(result - center) == pytest.approx(0.5 / 10, rel=1e-12)


def test_centered_clipping_large_radius_is_the_mean() -> None:
    updates = np.random.default_rng(9).standard_normal((6, 4))
    np.testing.assert_allclose(
        centered_clipping(updates, tau=1e6, center=np.full(4, 3.0)), updates.mean(axis=0), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tau": 0.0}, r"0 < tau < inf: tau=0.0"),
        ({"tau": math.inf}, "tau"),
        ({"iterations": 0}, r"iterations >= 1: iterations=0"),
        ({"iterations": True}, "iterations must be an integer"),
        ({"center": np.zeros(3)}, r"center has shape \[3\], expected \[2\]"),
        ({"center": [0.0, math.inf]}, r"center\[1\] = inf"),
    ],
)
def test_centered_clipping_settings_outside_bounds(settings: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"tau": 1.0, "center": np.zeros(2), "iterations": 1} | settings
    with pytest.raises(ConfigurationError, match=f"centered_clipping.*{message}"):
        centered_clipping([[1.0, 2.0]], **arguments)


def step_by_step_centered_clipping(updates: np.ndarray, tau: float, center: np.ndarray, iterations: int) -> np.ndarray:
    """The definition, vectorized: distances and offsets recomputed directly at every step."""
    v = center.astype(float)
    for _ in range(iterations):
        offsets = updates - v
        norms = np.sqrt(np.einsum("ij,ij->i", offsets, offsets))
        with np.errstate(divide="ignore"):
            scale = np.minimum(1.0, tau / norms)
        v = v + (scale[:, None] * offsets).sum(axis=0) / len(updates)
    return v


@pytest.mark.parametrize("iterations", [2, 4])
def test_centered_clipping_over_many_chunks_matches_the_step_by_step_definition(iterations: int) -> None:
    # Several column chunks on the threads; the distances of later steps are updated from the earlier ones.
    rng = np.random.default_rng(30 + iterations)
    n, d = 40, 120_001
    updates = rng.standard_normal((n, d)) * rng.uniform(0.01, 3.0, size=(n, 1)) + 5.0
    updates[:4] *= 50.0  # far updates are clipped
    center = np.full(d, 4.0)
    norms = np.linalg.norm(updates - center, axis=1)
    tau = float(np.median(norms))
    expected = step_by_step_centered_clipping(updates, tau, center, iterations)
    got = centered_clipping(updates, tau=tau, center=center, iterations=iterations)
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13 * float(np.abs(expected).max()))


def test_centered_clipping_updates_at_the_new_center_count_as_unclipped() -> None:
    # Seven identical updates pull the center onto themselves in one step (tau large enough for all); in the
    # next step their distance is exactly 0 (recomputed, not left to cancellation), so they stay unclipped.
    rng = np.random.default_rng(31)
    x = rng.standard_normal(1000) * 1e3 + 1e6
    updates = np.tile(x, (7, 1))
    got = centered_clipping(updates, tau=1e9, center=np.zeros(1000), iterations=3)
    np.testing.assert_allclose(got, x, rtol=1e-15)
    # the same with a far-away eighth update: the center moves by at most tau / 8 per step towards it
    far = np.vstack([updates, np.full((1, 1000), -1e8)])
    tau = 10.0
    got = centered_clipping(far, tau=tau, center=x, iterations=3)
    assert np.linalg.norm(got - x) <= 3 * tau / 8 * (1 + 1e-12)
    np.testing.assert_allclose(got, step_by_step_centered_clipping(far, tau, x, 3), rtol=1e-14)


def test_centered_clipping_with_updates_sharing_a_large_offset() -> None:
    # |x_i| is 10^8 times |x_i - v|: the distances from the expanded form would lose their digits, so they are
    # recomputed directly; the result stays at float rounding of the definition.
    rng = np.random.default_rng(32)
    updates = 1e8 + rng.standard_normal((20, 5000))
    updates[:3] += 5.0
    center = np.full(5000, 1e8)
    tau = 0.5 * float(np.median(np.linalg.norm(updates - center, axis=1)))
    expected = step_by_step_centered_clipping(updates, tau, center, 3)
    np.testing.assert_allclose(centered_clipping(updates, tau=tau, center=center, iterations=3), expected, rtol=1e-15)
