"""The privacy accountant: agreement with dp_accounting, the replace-one factor, state, budget and refusals."""

from __future__ import annotations

import math
from typing import Any

import dp_accounting
import pytest
from dp_accounting import pld, rdp
from dp_accounting.pld import privacy_loss_distribution as pld_lib
from scipy.stats import norm  # type: ignore[import-untyped]

from fedswarm.core.errors import ConfigurationError
from fedswarm.privacy.dp.accounting import PLD_DISCRETIZATION, PrivacyAccountant, compute_epsilon

NR = dp_accounting.NeighboringRelation
POP, M, Z, DELTA = 100, 10, 3.0, 1e-5


def _direct(accountant: str, sampling: str, *, population: int, m: int, z: float, delta: float, rounds: int) -> float:
    """Epsilon computed with dp_accounting only, as the module docstring says it should be."""
    q = m / population
    g = dp_accounting.GaussianDpEvent
    if sampling == "poisson":
        event: Any = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, g(z)), rounds)
        acc: Any = (
            rdp.RdpAccountant()
            if accountant == "rdp"
            else pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
        )
        return float(acc.compose(event).get_epsilon(delta))
    if accountant == "rdp":
        wor = dp_accounting.SampledWithoutReplacementDpEvent(population, m, g(z / 2))
        acc = rdp.RdpAccountant(neighboring_relation=NR.REPLACE_ONE)
        return float(acc.compose(dp_accounting.SelfComposedDpEvent(wor, rounds)).get_epsilon(delta))
    base = pld_lib.from_gaussian_mechanism(
        standard_deviation=z / 2, sampling_prob=q, value_discretization_interval=PLD_DISCRETIZATION
    )
    step = pld_lib.PrivacyLossDistribution(base._pmf_remove).compose(pld_lib.PrivacyLossDistribution(base._pmf_add))
    return float(step.self_compose(rounds).get_epsilon_for_delta(delta))


def _tight_remove_only(*, population: int, m: int, z: float, delta: float, rounds: int) -> float:
    """Poisson add/remove PLD at z/2: attained by a concrete pair of neighbours, so a lower bound."""
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(m / population, dp_accounting.GaussianDpEvent(z / 2)), rounds
    )
    acc = pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    return float(acc.compose(event).get_epsilon(delta))


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
@pytest.mark.parametrize("sampling", ["poisson", "fixed_size"])
def test_accountant_equals_dp_accounting(accountant: Any, sampling: Any) -> None:
    acc = PrivacyAccountant(
        accountant=accountant, sampling=sampling, population=POP, sample_size=M, noise_multiplier=Z, delta=DELTA
    )
    acc.step()
    acc.step(29)
    assert acc.rounds == 30
    expected = _direct(accountant, sampling, population=POP, m=M, z=Z, delta=DELTA, rounds=30)
    assert acc.epsilon() == pytest.approx(expected, rel=1e-12)
    spent = acc.spent()
    assert (spent.epsilon, spent.delta, spent.accountant, spent.rounds) == (expected, DELTA, accountant, 30)


def test_fixed_size_uses_half_the_noise_multiplier() -> None:
    # The replace-one sensitivity is 2C: accounting with z instead of z/2 would under-report.
    ours = compute_epsilon(
        accountant="rdp",
        sampling="fixed_size",
        population=POP,
        sample_size=M,
        noise_multiplier=Z,
        delta=DELTA,
        rounds=30,
    )
    naive_event = dp_accounting.SampledWithoutReplacementDpEvent(POP, M, dp_accounting.GaussianDpEvent(Z))
    naive = rdp.RdpAccountant(neighboring_relation=NR.REPLACE_ONE)
    naive.compose(dp_accounting.SelfComposedDpEvent(naive_event, 30))
    assert ours > 1.5 * naive.get_epsilon(DELTA)


@pytest.mark.parametrize(
    ("population", "m", "z", "rounds"), [(100, 10, 3.0, 100), (1000, 100, 5.0, 200), (10, 10, 5.0, 20)]
)
@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_fixed_size_to_poisson_ratio(accountant: Any, population: int, m: int, z: float, rounds: int) -> None:
    kw: Any = dict(accountant=accountant, population=population, sample_size=m, noise_multiplier=z, delta=DELTA)
    ratio = compute_epsilon(sampling="fixed_size", rounds=rounds, **kw) / compute_epsilon(
        sampling="poisson", rounds=rounds, **kw
    )
    # Doubling the sensitivity at least doubles epsilon; the looser bounds stay within a small factor.
    assert 2.0 <= ratio <= 6.0


@pytest.mark.parametrize(
    ("population", "m", "z", "rounds"), [(100, 10, 3.0, 100), (50, 10, 4.0, 50), (1000, 50, 2.0, 100)]
)
def test_fixed_size_pld_between_attainable_and_rdp(population: int, m: int, z: float, rounds: int) -> None:
    kw: Any = dict(sampling="fixed_size", population=population, sample_size=m, noise_multiplier=z, delta=DELTA)
    ours = compute_epsilon(accountant="pld", rounds=rounds, **kw)
    attainable = _tight_remove_only(population=population, m=m, z=z, delta=DELTA, rounds=rounds)
    assert attainable <= ours <= compute_epsilon(accountant="rdp", rounds=rounds, **kw)


def _attack_delta(*, rate: float, z: float, eps: float) -> float:
    """Exact delta(eps) of one fixed-size round on a concrete pair of neighbouring federations.

    In one dimension with C = 1, every member of D' sends -1; D replaces one member by +1. The sum over
    a cohort is N(-m, z^2) under D', and (1 - rate) N(-m, z^2) + rate N(-m + 2, z^2) under D.
    Shifted by m: P = (1 - rate) N(0, z^2) + rate N(2, z^2) against Q = N(0, z^2). P/Q > e^eps exactly
    when x > x*, so delta = P(x > x*) - e^eps Q(x > x*).
    """
    x_star = 1.0 + z * z / 2.0 * math.log((math.exp(eps) - 1.0 + rate) / rate)
    p_tail = (1 - rate) * norm.sf(x_star / z) + rate * norm.sf((x_star - 2.0) / z)
    return float(p_tail - math.exp(eps) * norm.sf(x_star / z))


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_concrete_neighbours_respect_reported_epsilon(accountant: Any) -> None:
    population, m, z, delta = 20, 5, 1.0, 1e-3
    ours = compute_epsilon(
        accountant=accountant,
        sampling="fixed_size",
        population=population,
        sample_size=m,
        noise_multiplier=z,
        delta=delta,
        rounds=1,
    )
    assert _attack_delta(rate=m / population, z=z, eps=ours) <= delta
    # The same pair breaks an accountant that forgets the factor 2 of replace-one.
    naive = rdp.RdpAccountant(neighboring_relation=NR.REPLACE_ONE)
    naive.compose(dp_accounting.SampledWithoutReplacementDpEvent(population, m, dp_accounting.GaussianDpEvent(z)))
    assert _attack_delta(rate=m / population, z=z, eps=naive.get_epsilon(delta)) > delta


def test_epsilon_grows_with_rounds_and_starts_at_zero() -> None:
    acc = PrivacyAccountant(
        accountant="rdp", sampling="poisson", population=POP, sample_size=M, noise_multiplier=Z, delta=DELTA
    )
    assert acc.epsilon() == 0.0
    seen = []
    for _ in range(3):
        acc.step(10)
        seen.append(acc.epsilon())
    assert seen[0] < seen[1] < seen[2]


def test_would_exceed() -> None:
    acc = PrivacyAccountant(
        accountant="rdp", sampling="poisson", population=POP, sample_size=M, noise_multiplier=Z, delta=DELTA
    )
    acc.step(10)
    now = acc.epsilon()
    after = compute_epsilon(
        accountant="rdp", sampling="poisson", population=POP, sample_size=M, noise_multiplier=Z, delta=DELTA, rounds=11
    )
    assert now < after
    assert acc.would_exceed((now + after) / 2)
    assert not acc.would_exceed(after)
    assert acc.would_exceed(after, rounds=5)
    assert acc.rounds == 10  # asking does not spend
    with pytest.raises(ConfigurationError, match="budget_epsilon"):
        acc.would_exceed(0.0)


def _acc(**overrides: Any) -> PrivacyAccountant:
    kw: dict[str, Any] = dict(
        accountant="pld", sampling="fixed_size", population=POP, sample_size=M, noise_multiplier=Z, delta=DELTA
    )
    kw.update(overrides)
    return PrivacyAccountant(**kw)


def test_state_dict_round_trip() -> None:
    a = _acc(accountant="rdp", sampling="poisson")
    a.step(7)
    b = _acc(accountant="rdp", sampling="poisson")
    b.load_state_dict(a.state_dict())
    assert b.rounds == 7
    assert b.epsilon() == a.epsilon()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("accountant", "rdp"),
        ("sampling", "poisson"),
        ("population", 101),
        ("sample_size", 11),
        ("noise_multiplier", 2.5),
        ("delta", 1e-6),
        ("version", 99),
        ("rounds", -1),
    ],
)
def test_load_state_dict_refuses_mismatch(key: str, value: Any) -> None:
    state = _acc().state_dict()
    state[key] = value
    with pytest.raises(ConfigurationError, match=key):
        _acc().load_state_dict(state)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"accountant": "moments"}, "accountant"),
        ({"sampling": "shuffle"}, "sampling"),
        ({"population": 0}, "population"),
        ({"sample_size": 0}, "sample_size"),
        ({"sample_size": POP + 1}, "sample_size"),
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"noise_multiplier": math.nan}, "noise_multiplier"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
    ],
)
def test_refuses_invalid_parameters(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        _acc(**overrides)


def test_refuses_invalid_rounds() -> None:
    with pytest.raises(ConfigurationError, match="rounds"):
        _acc().step(0)
    with pytest.raises(ConfigurationError, match="rounds"):
        compute_epsilon(
            accountant="rdp",
            sampling="poisson",
            population=POP,
            sample_size=M,
            noise_multiplier=Z,
            delta=DELTA,
            rounds=-1,
        )
