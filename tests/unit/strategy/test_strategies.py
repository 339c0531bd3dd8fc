from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedswarm.aggregation.fedopt import fedopt_step
from fedswarm.aggregation.mean import weighted_mean
from fedswarm.core.errors import ConfigurationError, RoundAborted
from fedswarm.strategy.base import LocalTraining, Sampling, member_seed, sample_members
from fedswarm.strategy.fedavg import FedAvg
from fedswarm.strategy.fedopt import FedAdagrad, FedAdam, FedYogi
from fedswarm.strategy.fedprox import FedProx

T = LocalTraining()


def test_weighted_mean_known_answer() -> None:
    u = np.array([[1.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(weighted_mean(u, weights=np.array([1.0, 3.0])), [2.5, 3.0])
    np.testing.assert_allclose(weighted_mean(u), [2.0, 2.0])
    with pytest.raises(ConfigurationError, match="sum to zero"):
        weighted_mean(u, weights=np.zeros(2))
    with pytest.raises(ConfigurationError, match="non-negative"):
        weighted_mean(u, weights=np.array([1.0, -1.0]))


def test_fedavg_equals_weighted_mean_of_models() -> None:
    x = np.array([1.0, 1.0])
    models = np.array([[2.0, 0.0], [4.0, 2.0]])
    s = FedAvg(sampling=Sampling(), training=T)
    new = s.aggregate(1, x, models - x, np.array([1.0, 1.0]))
    np.testing.assert_allclose(new, [3.0, 1.0])


@pytest.mark.parametrize(
    ("cls", "v_expected"),
    [
        # v0 = tau^2 = 0.01; delta = [1, -2]; beta2 = 0.5
        (FedAdagrad, [0.01 + 1.0, 0.01 + 4.0]),
        (FedAdam, [0.5 * 0.01 + 0.5 * 1.0, 0.5 * 0.01 + 0.5 * 4.0]),
        (FedYogi, [0.01 + 0.5 * 1.0, 0.01 + 0.5 * 4.0]),  # sign(v - d^2) = -1
    ],
)
def test_fedopt_known_answers(cls: type, v_expected: list[float]) -> None:
    s = cls(sampling=Sampling(), training=T, server_lr=0.1, beta1=0.9, beta2=0.5, tau=0.1)
    x = np.zeros(2)
    delta = np.array([1.0, -2.0])
    new = s.aggregate(1, x, delta[None, :], np.ones(1))
    m = 0.1 * delta
    v = np.array(v_expected)
    np.testing.assert_allclose(new, 0.1 * m / (np.sqrt(v) + 0.1))
    state = s.state_dict()
    np.testing.assert_allclose(state["v"], v)
    t = cls(sampling=Sampling(), training=T, server_lr=0.1, beta1=0.9, beta2=0.5, tau=0.1)
    t.load_state_dict(state)
    np.testing.assert_allclose(
        t.aggregate(2, new, delta[None, :], np.ones(1)), s.aggregate(2, new, delta[None, :], np.ones(1))
    )


def test_fedopt_pure_step_does_not_mutate() -> None:
    m, v = np.zeros(3), np.ones(3)
    fedopt_step(np.zeros(3), np.ones(3), m, v, variant="adam", eta=1, beta1=0.9, beta2=0.9, tau=1e-3)
    assert (m == 0).all() and (v == 1).all()


def test_fedprox_sends_mu() -> None:
    s = FedProx(sampling=Sampling(), training=T, mu=0.3)
    assert s.fit_config(1, 4).proximal_mu == 0.3
    assert FedAvg(sampling=Sampling(), training=T).fit_config(1, 4).proximal_mu == 0.0
    with pytest.raises(ConfigurationError, match="mu"):
        FedProx(sampling=Sampling(), training=T, mu=-1)


def test_sampling_counts_and_bounds() -> None:
    assert Sampling(fraction=0.1, min_members=2).count(100) == 10
    assert Sampling(fraction=0.01, min_members=5).count(100) == 5
    assert Sampling(fraction=1.0, min_members=2).count(7) == 7
    with pytest.raises(ConfigurationError):
        Sampling(fraction=0)
    with pytest.raises(RoundAborted, match="only 1 member"):
        sample_members(1, 1, sampling=Sampling(min_members=2), seed=0)


@given(st.integers(1, 5000), st.integers(0, 10_000), st.floats(0.001, 1.0))
def test_sampling_is_deterministic_sorted_unique(n: int, rnd: int, fraction: float) -> None:
    s = Sampling(fraction=fraction, min_members=1)
    a = sample_members(rnd, n, sampling=s, seed=5)
    b = sample_members(rnd, n, sampling=s, seed=5)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == len(a) == s.count(n)
    assert (np.diff(a) > 0).all() and a.min() >= 0 and a.max() < n


def test_sampling_from_explicit_candidates() -> None:
    ids = np.array([3, 9, 11, 40])
    picked = sample_members(2, ids, sampling=Sampling(fraction=0.5, min_members=1), seed=1)
    assert set(picked) <= set(ids) and len(picked) == 2


def test_sampling_varies_with_round_and_is_roughly_uniform() -> None:
    s = Sampling(fraction=0.1, min_members=1)
    counts = np.zeros(100)
    for r in range(2000):
        counts[sample_members(r, 100, sampling=s, seed=0)] += 1
    # each member expected 200 times; a binomial(2000, 0.1) stays within ±60 with overwhelming probability
    assert np.abs(counts - 200).max() < 60


def test_member_seed_is_distinct_across_members_and_rounds() -> None:
    seeds = {member_seed(0, r, m) for r in range(50) for m in range(200)}
    assert len(seeds) == 50 * 200
    assert member_seed(1, 1, 1) != member_seed(2, 1, 1)
