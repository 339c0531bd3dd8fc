"""Krum and Multi-Krum against a naive re-implementation of Blanchard et al. 2017."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedswarm.aggregation.krum import krum, krum_select, multi_krum
from fedswarm.core.errors import ConfigurationError


def naive_scores(updates: np.ndarray, f: int) -> list[float]:
    n = len(updates)
    scores = []
    for i in range(n):
        dists = sorted(
            math.fsum((float(a) - float(b)) ** 2 for a, b in zip(updates[i], updates[j], strict=True))
            for j in range(n)
            if j != i
        )
        scores.append(math.fsum(dists[: n - f - 2]))
    return scores


def naive_select(updates: np.ndarray, f: int, m: int) -> list[int]:
    scores = naive_scores(updates, f)
    return sorted(range(len(updates)), key=lambda i: (scores[i], i))[:m]


@pytest.mark.parametrize(("n", "f"), [(3, 0), (5, 1), (8, 2), (11, 4), (12, 3)])
def test_selection_matches_naive_definition(n: int, f: int) -> None:
    rng = np.random.default_rng(n * 10 + f)
    for _ in range(4):
        updates = rng.standard_normal((n, 12)) * rng.uniform(0.5, 5, size=(n, 1))
        expected = naive_select(updates, f, n - f)
        assert krum_select(updates, f=f, m=n - f).tolist() == expected
        np.testing.assert_array_equal(krum(updates, f=f), updates[expected[0]])
        for m in (1, 2, n - f):
            np.testing.assert_allclose(
                multi_krum(updates, f=f, m=m), updates[expected[:m]].mean(axis=0), rtol=1e-13, atol=1e-15
            )


def test_multi_krum_with_m_one_is_krum() -> None:
    updates = np.random.default_rng(1).standard_normal((9, 20))
    np.testing.assert_array_equal(multi_krum(updates, f=2, m=1), krum(updates, f=2))


def test_krum_returns_an_exact_copy_of_an_update() -> None:
    updates = np.random.default_rng(2).standard_normal((7, 5))
    result = krum(updates, f=2)
    assert any(np.array_equal(result, row) for row in updates)
    result[:] = 0
    assert not (updates == 0).all(axis=1).any()


def test_ties_go_to_the_lowest_index() -> None:
    # Two identical clusters of updates, mirrored: every score ties with its mirror image.
    base = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    updates = np.vstack([base, -base + 10.0, [[5.0, 5.0]]])
    scores = naive_scores(updates, 1)
    assert scores[0] == scores[3] and scores[1] == scores[4]
    assert krum_select(updates, f=1, m=6).tolist() == naive_select(updates, 1, 6)


def test_honest_update_chosen_with_f_far_attackers() -> None:
    rng = np.random.default_rng(3)
    honest = rng.standard_normal((8, 30)) * 0.1
    attackers = np.vstack([np.full(30, 50.0), np.full(30, 50.0), np.full(30, -1e300)])
    updates = np.vstack([attackers[:2], honest, attackers[2:]])  # n = 11, f = 3
    chosen = krum_select(updates, f=3, m=8)
    assert set(chosen.tolist()) == set(range(2, 10))
    assert any(np.array_equal(krum(updates, f=3), row) for row in honest)


def test_selection_under_a_large_common_offset_matches_exact_distances() -> None:
    rng = np.random.default_rng(4)
    updates = 1e7 + rng.standard_normal((9, 40)) * rng.uniform(1e-4, 1e-2, size=(9, 1))
    assert krum_select(updates, f=2, m=7).tolist() == naive_select(updates, 2, 7)


def test_all_equal_updates() -> None:
    updates = np.tile([3.0, -1.0], (6, 1))
    assert krum_select(updates, f=1, m=5).tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(multi_krum(updates, f=1, m=5), [3.0, -1.0])


@pytest.mark.parametrize(("n", "f"), [(4, 1), (6, 2), (2, 0), (1, 0)])
def test_too_few_updates_for_f(n: int, f: int) -> None:
    updates = np.zeros((n, 2))
    for name, call in (
        ("krum", lambda: krum(updates, f=f)),
        ("multi_krum", lambda: multi_krum(updates, f=f, m=1)),
        ("krum_select", lambda: krum_select(updates, f=f, m=1)),
    ):
        with pytest.raises(ConfigurationError, match=rf"{name} needs n >= 2f \+ 3: n={n}, f={f}"):
            call()


@pytest.mark.parametrize(
    ("m", "message"),
    [(5, "needs 1 <= m <= n - f: m=5, n=5, f=1"), (0, "needs m >= 1: m=0"), (-1, "needs m >= 1: m=-1")],
)
def test_m_outside_bounds(m: int, message: str) -> None:
    updates = np.zeros((5, 2))
    with pytest.raises(ConfigurationError, match=f"multi_krum {message}"):
        multi_krum(updates, f=1, m=m)
    with pytest.raises(ConfigurationError, match=f"krum_select {message}"):
        krum_select(updates, f=1, m=m)
    assert len(krum_select(updates, f=1, m=4)) == 4


def test_selected_indices_are_intp_best_first() -> None:
    updates = np.array([[0.0], [10.0], [1.0], [2.0], [3.0]])
    chosen = krum_select(updates, f=1, m=3)
    assert chosen.dtype == np.intp
    assert chosen.tolist() == naive_select(updates, 1, 3)
