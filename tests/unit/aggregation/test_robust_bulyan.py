"""Bulyan against a naive re-implementation of El Mhamdi et al. 2018 with the documented details."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedswarm.aggregation.bulyan import bulyan, bulyan_select
from fedswarm.aggregation.median import median
from fedswarm.core.errors import ConfigurationError


def _sq(a: np.ndarray, b: np.ndarray) -> float:
    return math.fsum((float(x) - float(y)) ** 2 for x, y in zip(a, b, strict=True))


def naive_selection(updates: np.ndarray, f: int) -> list[int]:
    """Iterated Krum: |R| - f - 2 neighbours, at least 1; ties to the lowest index."""
    remaining = list(range(len(updates)))
    picked = []
    for _ in range(len(updates) - 2 * f):
        neighbours = min(max(len(remaining) - f - 2, 1), len(remaining) - 1)
        best, best_score = -1, math.inf
        for i in remaining:
            dists = sorted(_sq(updates[i], updates[j]) for j in remaining if j != i)
            score = math.fsum(dists[:neighbours])
            if best < 0 or score < best_score:
                best, best_score = i, score
        picked.append(best)
        remaining.remove(best)
    return picked


def naive_bulyan(updates: np.ndarray, f: int) -> np.ndarray:
    selected = updates[naive_selection(updates, f)]
    theta = len(selected)
    beta = theta - 2 * f
    out = []
    for j in range(updates.shape[1]):
        values = sorted(float(v) for v in selected[:, j])
        med = (values[(theta - 1) // 2] + values[theta // 2]) / 2
        closest = sorted(values, key=lambda v: (abs(v - med), v))[:beta]
        out.append(math.fsum(closest) / beta)
    return np.array(out)


@pytest.mark.parametrize(("n", "f"), [(3, 0), (7, 1), (9, 1), (11, 2), (15, 3)])
def test_matches_naive_definition(n: int, f: int) -> None:
    rng = np.random.default_rng(n + 100 * f)
    for _ in range(3):
        updates = rng.standard_normal((n, 9)) * rng.uniform(0.5, 3, size=(n, 1))
        assert bulyan_select(updates, f=f).tolist() == naive_selection(updates, f)
        np.testing.assert_allclose(bulyan(updates, f=f), naive_bulyan(updates, f), rtol=1e-13, atol=1e-15)


def test_matches_naive_definition_with_ties_in_the_coordinates() -> None:
    rng = np.random.default_rng(5)
    for _ in range(5):
        updates = rng.integers(-3, 4, size=(11, 15)).astype(float)
        np.testing.assert_allclose(bulyan(updates, f=2), naive_bulyan(updates, 2), rtol=1e-13, atol=1e-15)


def test_coordinate_stage_over_many_column_chunks() -> None:
    # Wide enough for several column chunks on the thread pool; the selection is checked against the
    # naive one elsewhere, here a few columns are checked against the naive coordinate rule.
    rng = np.random.default_rng(6)
    updates = rng.standard_normal((7, 300_011))
    result = bulyan(updates, f=1)
    selected = updates[bulyan_select(updates, f=1)]
    for j in (0, 1, 150_000, 299_999, 300_010):
        values = sorted(selected[:, j].tolist())
        closest = sorted(values, key=lambda v: (abs(v - values[2]), v))[:3]
        assert result[j] == pytest.approx(math.fsum(closest) / 3, rel=1e-14)


def test_f_zero_is_the_mean() -> None:
    updates = np.random.default_rng(7).standard_normal((5, 8))
    np.testing.assert_allclose(bulyan(updates, f=0), updates.mean(axis=0), rtol=1e-13)


def test_selection_is_distinct_and_of_size_theta() -> None:
    updates = np.random.default_rng(8).standard_normal((19, 4))
    chosen = bulyan_select(updates, f=4)
    assert len(chosen) == 11 and len(set(chosen.tolist())) == 11
    assert chosen.dtype == np.intp


def test_far_attackers_are_not_selected_and_result_stays_near_honest() -> None:
    rng = np.random.default_rng(9)
    honest = rng.standard_normal((9, 25)) * 0.1
    attackers = np.vstack([rng.standard_normal(25) * 100 + 500, np.full(25, 1e300)])
    updates = np.vstack([attackers[:1], honest, attackers[1:]])  # n = 11, f = 2
    assert not {0, 10} & set(bulyan_select(updates, f=2).tolist())
    result = bulyan(updates, f=2)
    assert (result >= honest.min(axis=0)).all() and (result <= honest.max(axis=0)).all()


def test_colluding_attackers_stay_bounded_by_the_coordinate_stage() -> None:
    # Identical attackers score 0 among themselves and can enter the last Krum selections; the
    # median-centred average keeps every coordinate inside the honest range all the same.
    rng = np.random.default_rng(10)
    honest = rng.standard_normal((12, 30))
    attackers = np.tile(np.full(30, 40.0), (3, 1))
    updates = np.vstack([honest, attackers])  # n = 15, f = 3
    result = bulyan(updates, f=3)
    assert (result >= honest.min(axis=0)).all() and (result <= honest.max(axis=0)).all()
    assert np.abs(result - median(honest)).max() < 2.0


def test_all_equal() -> None:
    np.testing.assert_array_equal(bulyan(np.tile([1.0, -2.0, 0.5], (11, 1)), f=2), [1.0, -2.0, 0.5])


@pytest.mark.parametrize(("n", "f"), [(6, 1), (10, 2), (2, 0)])
def test_too_few_updates(n: int, f: int) -> None:
    with pytest.raises(ConfigurationError, match=rf"bulyan needs n >= 4f \+ 3: n={n}, f={f}"):
        bulyan(np.zeros((n, 3)), f=f)
    with pytest.raises(ConfigurationError, match=r"n >= 4f \+ 3"):
        bulyan_select(np.zeros((n, 3)), f=f)
