"""The epsilon a run reports equals dp_accounting computed directly for the sampling actually used, and a
budget stops the run before the round that would exceed it."""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

from fedswarm.privacy.dp.accounting import PLD_DISCRETIZATION, compute_epsilon
from fedswarm.privacy.dp.extension import ClientLevelBudget
from fedswarm.privacy.dp.local import SampleLevelBudget, calibrate_dpsgd_noise, dpsgd_epsilon, worst_case_records
from fedswarm.sim.engine import run_simulation

sys.path.insert(0, str(Path(__file__).parents[2] / "fixtures"))
from privtasks import spec

warnings.simplefilter("ignore")

CENTRAL: dict[str, Any] = {"dp": "central", "noise_multiplier": 1.1, "delta": 1e-3, "clip": 1.0}


def _run(privacy: dict[str, Any], **over: Any) -> Any:
    return run_simulation(spec(privacy, **over), write_outputs=False)


def test_fixed_size_sampling_is_accounted_as_fixed_size_rdp() -> None:
    # 10 members, fraction 0.5: the engine draws exactly 5 of 10 each round
    result = _run(
        {**CENTRAL, "accountant": "rdp"}, federation__members=10, federation__rounds=3, strategy__fraction=0.5
    )
    reported = [h["privacy"]["epsilon"] for h in result.history]
    for r, eps in enumerate(reported, start=1):
        acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
        event = dp_accounting.SampledWithoutReplacementDpEvent(10, 5, dp_accounting.GaussianDpEvent(1.1 / 2))
        acc.compose(dp_accounting.SelfComposedDpEvent(event, r))
        assert eps == pytest.approx(acc.get_epsilon(1e-3), rel=1e-9)
    assert result.history[0]["privacy"]["sampling"] == "fixed_size" and reported[0] < reported[1] < reported[2]
    assert result.summary["privacy"]["epsilon"] == reported[-1]
    assert result.summary["privacy"]["delta"] == 1e-3 and result.summary["privacy"]["accountant"] == "rdp"


def test_full_participation_is_the_gaussian_mechanism_under_add_remove() -> None:
    result = _run(CENTRAL, federation__rounds=2)
    acc = pld.PLDAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
        value_discretization_interval=PLD_DISCRETIZATION,
    )
    acc.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.1), 2))
    # (the run composes a Poisson-sampled Gaussian of rate 1: the same mechanism, discretised alike to 1e-6)
    assert result.summary["privacy"]["epsilon"] == pytest.approx(acc.get_epsilon(1e-3), rel=1e-6)
    assert result.history[-1]["privacy"]["sampling"] == "full"


def test_fixed_size_pld_matches_compute_epsilon() -> None:
    result = _run(CENTRAL, federation__members=10, federation__rounds=2, strategy__fraction=0.5)
    expected = compute_epsilon(
        accountant="pld",
        sampling="fixed_size",
        population=10,
        sample_size=5,
        noise_multiplier=1.1,
        delta=1e-3,
        rounds=2,
    )
    assert result.summary["privacy"]["epsilon"] == pytest.approx(expected, rel=1e-12)
    # fixed-size sampling must cost more than the Poisson figure for the same rate: it is not under-reported
    poisson = compute_epsilon(
        accountant="pld", sampling="poisson", population=10, sample_size=5, noise_multiplier=1.1, delta=1e-3, rounds=2
    )
    assert expected > poisson


def test_the_budget_stops_the_run_before_it_is_exceeded() -> None:
    eps = [
        compute_epsilon(
            accountant="pld",
            sampling="poisson",
            population=6,
            sample_size=6,
            noise_multiplier=1.1,
            delta=1e-3,
            rounds=r,
        )
        for r in range(1, 6)
    ]
    budget = 0.5 * (eps[2] + eps[3])  # three rounds fit, a fourth would not
    result = _run({**CENTRAL, "budget_epsilon": budget}, federation__rounds=10)
    assert len(result.history) == 3
    assert all(h["privacy"]["epsilon"] <= budget for h in result.history)
    assert "round 4 would spend epsilon" in result.summary["stopped_early"]
    assert result.summary["privacy"]["epsilon"] == pytest.approx(eps[2], rel=1e-12)


def test_target_epsilon_is_reached_not_exceeded() -> None:
    result = _run({"dp": "central", "target_epsilon": 4.0, "delta": 1e-3, "clip": 1.0}, federation__rounds=3)
    final = result.summary["privacy"]["epsilon"]
    assert 4.0 * 0.99 <= final <= 4.0


def test_no_budget_no_stop_and_no_stop_after_the_last_round() -> None:
    budget = ClientLevelBudget(
        accountant="pld",
        population=10,
        cohort=10,
        noise_multiplier=1.0,
        delta=1e-5,
        budget_epsilon=1e9,
        planned_rounds=2,
    )
    budget.check_first_round()
    budget.record_round()
    budget.record_round()
    assert budget.stop_reason() is None
    tight = ClientLevelBudget(
        accountant="pld",
        population=10,
        cohort=10,
        noise_multiplier=1.0,
        delta=1e-5,
        budget_epsilon=None,
        planned_rounds=9,
    )
    tight.record_round()
    assert tight.stop_reason() is None


def test_sample_level_epsilon_equals_dp_accounting_and_agrees_with_opacus() -> None:
    from opacus.accountants.analysis import rdp as opacus_rdp  # type: ignore[import-untyped]

    z, records, batch, epochs, rounds = 1.2, 45, 16, 2, 3
    ours = dpsgd_epsilon(
        accountant="rdp",
        records=records,
        batch_size=batch,
        epochs=epochs,
        participations=rounds,
        noise_multiplier=z,
        delta=1e-5,
    )
    q, steps = batch / records, epochs * math.ceil(records / batch) * rounds
    acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    acc.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), steps
        )
    )
    assert ours == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)
    # an independent implementation of the same RDP analysis (Opacus's) agrees to within its order grid
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    opacus_eps, _ = opacus_rdp.get_privacy_spent(
        orders=orders, rdp=opacus_rdp.compute_rdp(q=q, noise_multiplier=z, steps=steps, orders=orders), delta=1e-5
    )
    assert ours == pytest.approx(opacus_eps, rel=0.05)


def test_sample_level_budget_reports_the_worst_member() -> None:
    budget = SampleLevelBudget(
        accountant="rdp",
        records=[40, 200, 1000],
        batch_size=16,
        epochs=1,
        noise_multiplier=1.0,
        delta=1e-5,
        budget_epsilon=None,
        planned_rounds=5,
    )
    note = budget.record_round([1, 2])
    expected = max(
        dpsgd_epsilon(
            accountant="rdp", records=r, batch_size=16, epochs=1, participations=1, noise_multiplier=1.0, delta=1e-5
        )
        for r in (200, 1000)
    )
    assert note["epsilon"] == pytest.approx(expected) and note["level"] == "sample"
    assert budget.participations.tolist() == [0, 1, 1]


def test_dpsgd_calibration_meets_the_target_for_every_member() -> None:
    records = [45, 47, 60, 300]
    assert worst_case_records(records, batch_size=16) == [45, 60, 300]  # 47 runs as many steps as 45
    z = calibrate_dpsgd_noise(
        target_epsilon=3.0, delta=1e-5, records=records, batch_size=16, epochs=1, rounds=2, accountant="pld"
    )
    worst = max(
        dpsgd_epsilon(
            accountant="pld", records=r, batch_size=16, epochs=1, participations=2, noise_multiplier=z, delta=1e-5
        )
        for r in records
    )
    assert 3.0 * 0.98 <= worst <= 3.0
    lower = max(
        dpsgd_epsilon(
            accountant="pld",
            records=r,
            batch_size=16,
            epochs=1,
            participations=2,
            noise_multiplier=z * 0.99,
            delta=1e-5,
        )
        for r in records
    )
    assert lower > 3.0
    assert not np.isnan(z)
