"""Secure aggregation on real node processes: SecAgg+ with distributed DP in a swarm that loses a member
mid-round, and CKKS with the startup kits' keys, report what ``fedswarm simulate`` reports."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from network_harness import all_done, extension_keys, extension_spec, federation, history, log_text, wait_for

from fedswarm.cli.up import report
from fedswarm.node.leader import leader_order
from fedswarm.node.records import extension_summary
from fedswarm.node.up import run_local_federation
from fedswarm.sim.engine import run_simulation

pytestmark = pytest.mark.integration


def test_secagg_distributed_dp_swarm_recovers_a_member_killed_mid_round(tmp_path: Path) -> None:
    extra = """
[privacy]
dp = "distributed"
noise_multiplier = 1.0
clip = 1.0
delta = 1e-3
secure_aggregation = "secagg+"
min_survivors = 3
"""
    spec = extension_spec(tmp_path, extra, name="secagg-swarm", members=5, rounds=3, topology="swarm", slow=0.6)
    fed = federation(tmp_path, spec)
    try:
        for name in fed.kits:
            fed.start(name)
        wait_for(lambda: min(fed.rounds_done().values()) >= 1, timeout=60, what="round 1", fed=fed)
        digest = (fed.progress("member-00000") or {})["model_digest"]
        victim = leader_order(digest, 2, fed.kits)[-1]  # neither round 2's leader nor its first stand-in
        time.sleep(0.3)  # round 2's SecAgg+ phases are running
        fed.processes[victim].kill()
        fed.processes[victim].wait()
        wait_for(lambda: all_done(fed, 3), timeout=60, what="rounds 2-3 without the victim", fed=fed)
    finally:
        fed.stop()
    survivor = next(n for n in fed.kits if n != victim)
    records = history(fed, survivor)
    assert [r["round"] for r in records] == [1, 2, 3]
    second = records[1]
    victim_id = str(sorted(fed.kits).index(victim))
    assert victim_id in second["dropouts"], second["dropouts"]
    transport = second["annotations"]["privacy"]["transport"]
    assert transport["transport"] == "secagg+" and transport["contributors"] == 4
    assert second["accepted"] == sorted(int(m) for m in range(5) if str(m) != victim_id)

    summary = extension_summary(records)
    simulated = run_simulation(spec, out_dir=tmp_path / "sim").summary
    assert summary["privacy"] == simulated["privacy"], "the privacy budget spent does not depend on who led"
    epsilons = [r["annotations"]["privacy"]["epsilon"] for r in records]
    assert epsilons == pytest.approx([3.13867097, 4.84525243, 6.28392891])


def test_ckks_star_aggregates_with_the_kits_keys(tmp_path: Path) -> None:
    pytest.importorskip("tenseal")
    kit = pytest.importorskip("fedswarm.node.kit")
    if not hasattr(kit, "ckks_material"):
        pytest.skip("startup kits do not carry CKKS keys in this tree (fedswarm.node.kit.ckks_material)")
    extra = """
[privacy]
secure_aggregation = "ckks"
"""
    spec = extension_spec(tmp_path, extra, name="ckks-star", rounds=2, topology="star")
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=90)
    summary = report(spec, fed, seconds=1.0)
    simulated = run_simulation(spec, out_dir=tmp_path / "sim").summary
    assert extension_keys(summary) == extension_keys(simulated)
    assert summary["final"]["accuracy"] == pytest.approx(simulated["final"]["accuracy"], abs=0.02)
    records = fed.history()
    assert [r["annotations"]["privacy"]["transport"]["contributors"] for r in records] == [3, 3]
    assert [r["annotations"]["privacy"]["transport"]["decrypt_requests"] for r in records] == [1, 1]
    aggregator = log_text(fed, "member-00000")
    assert "unsafe" not in aggregator.lower()
    assert "drops out of ckks.decrypt" not in aggregator
