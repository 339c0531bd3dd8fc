"""Group-wise robust aggregation over SecAgg+ on real node processes: every round, the leader splits the
members into random groups (seeded by the run seed and the round, so every swarm leader draws the same
split), runs one SecAgg+ session per group and applies the robust rule to the group means; the nodes end
with ``fedswarm simulate``'s model bit for bit (deterministic rounding, no DP)."""

from __future__ import annotations

from pathlib import Path

import pytest
from network_harness import SECAGG_PLUS, extension_keys, extension_spec

from fedswarm.cli.up import report
from fedswarm.node.up import run_local_federation
from fedswarm.rounds.robust.groupwise import split_groups
from fedswarm.sim.engine import run_simulation

pytestmark = pytest.mark.integration

EXTRA = (
    SECAGG_PLUS
    + """
[robustness.groupwise]
groups = 2
rule = "median"
"""
)


def test_groupwise_secagg_swarm_gives_the_simulations_model(tmp_path: Path) -> None:
    spec = extension_spec(tmp_path, EXTRA, name="groupwise", members=6, rounds=2, topology="swarm")
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=120)
    summary = report(spec, fed, seconds=1.0)
    simulated = run_simulation(spec, out_dir=tmp_path / "sim")

    assert summary["final_model_digest"] == simulated.summary["final_model_digest"]
    assert extension_keys(summary) == extension_keys(simulated.summary)
    records = fed.history()
    assert [r["model_digest"] for r in records] == [row["model_digest"] for row in simulated.history]
    assert [r["accepted"] for r in records] == [list(range(6))] * 2
    for r in records:
        groups = split_groups(range(6), groups=2, seed=spec.federation.seed, rnd=r["round"])
        assert [len(g) for g in groups] == [3, 3]
        transport = r["annotations"]["privacy"]["transport"]
        # one SecAgg+ session per group: the last session summed the last group's 3 members, not all 6
        assert transport["transport"] == "secagg+" and transport["contributors"] == 3
    assert "anomalies" not in records[0]["annotations"], "groups hide individual updates: nothing to score"
    for name in fed.kits:
        assert fed.processes[name].returncode == 0, fed.log_tail(name)
