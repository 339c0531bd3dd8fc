"""FLTrust against a naive re-implementation of Cao et al. 2021."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedswarm.aggregation.fltrust import fltrust
from fedswarm.core.errors import ConfigurationError


def naive_fltrust(updates: np.ndarray, server: np.ndarray) -> np.ndarray:
    norm0 = math.sqrt(math.fsum(float(x) ** 2 for x in server))
    total = 0.0
    acc = np.zeros(len(server))
    for g in updates:
        norm = math.sqrt(math.fsum(float(x) ** 2 for x in g))
        if norm == 0 or norm0 == 0:
            continue
        cosine = math.fsum(float(a) * float(b) for a, b in zip(g, server, strict=True)) / (norm * norm0)
        trust = max(cosine, 0.0)
        total += trust
        acc += trust * (norm0 / norm) * g
    return acc / total if total > 0 else acc


@pytest.mark.parametrize("n", [1, 3, 10])
def test_matches_naive_definition(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(5):
        updates = rng.standard_normal((n, 16)) * rng.uniform(0.1, 10, size=(n, 1))
        server = rng.standard_normal(16) + updates.mean(axis=0)
        np.testing.assert_allclose(
            fltrust(updates, server_update=server), naive_fltrust(updates, server), rtol=1e-12, atol=1e-14
        )


def test_norm_is_at_most_the_server_norm() -> None:
    rng = np.random.default_rng(1)
    updates = rng.standard_normal((8, 30)) * np.array([[1e-3], [1], [1e3], [1e6], [1], [1], [1], [1]])
    server = rng.standard_normal(30)
    assert np.linalg.norm(fltrust(updates, server_update=server)) <= np.linalg.norm(server) * (1 + 1e-12)


def test_positive_rescaling_of_an_update_changes_nothing() -> None:
    rng = np.random.default_rng(2)
    updates = rng.standard_normal((5, 9))
    server = updates.mean(axis=0)
    scaled = updates.copy()
    scaled[3] *= 1e5
    np.testing.assert_allclose(
        fltrust(scaled, server_update=server), fltrust(updates, server_update=server), rtol=1e-12, atol=1e-14
    )


def test_opposed_updates_get_no_trust() -> None:
    rng = np.random.default_rng(3)
    honest = rng.standard_normal((4, 12))
    server = honest.mean(axis=0)
    attackers = -np.vstack([server * 1e3, server * 7])
    np.testing.assert_allclose(
        fltrust(np.vstack([honest, attackers]), server_update=server),
        fltrust(honest, server_update=server),
        rtol=1e-13,
    )


def test_huge_updates_keep_their_direction() -> None:
    server = np.array([1.0, 0.0])
    result = fltrust([[1e300, 1e300], [0.0, -1.0]], server_update=server)
    np.testing.assert_allclose(result, [math.sqrt(0.5), math.sqrt(0.5)], rtol=1e-14)


def test_zero_update_gets_no_trust() -> None:
    np.testing.assert_allclose(fltrust([[0.0, 0.0], [0.0, 4.0]], server_update=[1.0, 1.0]), [0.0, math.sqrt(2)])


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ([1.0, 2.0, 3.0], r"server_update has shape \[3\], expected \[2\]"),
        ([1.0, math.nan], r"server_update\[1\] = nan"),
    ],
)
def test_bad_server_update(server: list[float], message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"fltrust: {message}"):
        fltrust([[1.0, 2.0]], server_update=server)
