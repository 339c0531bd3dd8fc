"""Run extensions on real node processes: client-level DP, SecAgg+, CKKS and robust-aggregation detection
report over the network what ``fedswarm simulate`` reports for the same spec."""

from __future__ import annotations

from pathlib import Path

import pytest
from network_harness import extension_keys, extension_spec

from fedswarm.cli.up import report
from fedswarm.node.up import run_local_federation
from fedswarm.sim.engine import run_simulation

pytestmark = pytest.mark.integration


def test_central_dp_star_spends_the_simulations_epsilon_and_stops_at_the_budget(tmp_path: Path) -> None:
    extra = """
[privacy]
dp = "central"
noise_multiplier = 1.0
clip = 1.0
delta = 1e-3
budget_epsilon = 5.5
"""
    spec = extension_spec(tmp_path, extra, name="dp-central", rounds=3, topology="star")
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=90)
    summary = report(spec, fed, seconds=1.0)
    simulated = run_simulation(spec, out_dir=tmp_path / "sim")

    assert simulated.summary["stopped_early"].startswith("privacy budget exhausted")
    assert extension_keys(summary) == extension_keys(simulated.summary)
    assert summary["rounds"] == 2 and summary["privacy"]["epsilon"] == pytest.approx(4.845252428291651)
    records = fed.history()
    assert [r["annotations"]["privacy"]["epsilon"] for r in records] == [
        row["privacy"]["epsilon"] for row in simulated.history
    ]
    assert records[-1]["stopped_early"] == summary["stopped_early"]
    assert all(r == 2 for r in fed.rounds_done().values()), "every node stops after the round that spent the budget"
    for name in fed.kits:
        assert fed.processes[name].returncode == 0, fed.log_tail(name)


def test_secagg_star_gives_the_simulations_model_bit_for_bit(tmp_path: Path) -> None:
    extra = """
[privacy]
secure_aggregation = "secagg+"

[privacy.secagg]
rounding = "deterministic"
clip = 2.0
"""
    spec = extension_spec(tmp_path, extra, name="secagg-star", rounds=3, topology="star")
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=90)
    summary = report(spec, fed, seconds=1.0)
    simulated = run_simulation(spec, out_dir=tmp_path / "sim").summary
    assert summary["final_model_digest"] == simulated["final_model_digest"]
    assert extension_keys(summary) == extension_keys(simulated)
    assert [r["annotations"]["privacy"]["transport"]["contributors"] for r in fed.history()] == [3, 3, 3]


def test_robust_rule_and_detection_flag_the_simulations_members(tmp_path: Path) -> None:
    extra = """
[strategy.rule]
name = "median"
"""
    options = "slow_seconds = 0.0, evil_member = 3, evil_scale = 25.0, federation_seed = 7"
    spec = extension_spec(tmp_path, extra, task_options=options, name="robust", members=4, rounds=3, topology="star")
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=90)
    summary = report(spec, fed, seconds=1.0)
    simulated = run_simulation(spec, out_dir=tmp_path / "sim")

    assert summary["flagged"] == ["member-00003"]
    assert extension_keys(summary) == extension_keys(simulated.summary)
    assert summary["final_model_digest"] == simulated.summary["final_model_digest"]
    anomalies = [a["member"] for r in fed.history() for a in r["annotations"]["anomalies"]]
    assert anomalies == [a["member"] for row in simulated.history for a in row["anomalies"]]
    assert anomalies == ["member-00003"] * 3


def test_stateful_rule_continues_across_rotating_swarm_leaders(tmp_path: Path) -> None:
    # Centered clipping keeps its center and bucketing its round counter in the strategy's state; in a
    # swarm each round's leader loads that state from the previous commit, so the models equal simulate's
    # only if the state travels with the commits. tau is small so that clipping is active: without it the
    # output is the plain mean whatever the center.
    extra = """
[strategy.rule]
name = "centered_clipping"
options = { tau = 0.01, bucket_size = 2 }
"""
    spec = extension_spec(tmp_path, extra, name="stateful-rule", members=4, rounds=4, topology="swarm")
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=120)
    summary = report(spec, fed, seconds=1.0)
    simulated = run_simulation(spec, out_dir=tmp_path / "sim")

    leaders = [r["leader"] for r in fed.history()]
    assert len(leaders) == 4 and len(set(leaders)) > 1, leaders
    assert [r["model_digest"] for r in fed.history()] == [row["model_digest"] for row in simulated.history]
    assert summary["final_model_digest"] == simulated.summary["final_model_digest"]
