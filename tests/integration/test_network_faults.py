"""Fault tolerance over real processes: killed and restarted members, a killed swarm leader, a restart of
the whole federation, and a member whose model has the wrong shape."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from network_harness import all_done, federation, history, log_text, wait_for, write_spec

from fedswarm.node.leader import leader_order
from fedswarm.sim.engine import run_simulation

pytestmark = pytest.mark.integration


def test_member_killed_mid_round_then_restarted(tmp_path: Path) -> None:
    _, spec = write_spec(tmp_path, name="kill", rounds=10, slow=0.6)
    fed = federation(tmp_path, spec)
    victim = "member-00002"
    try:
        for name in fed.kits:
            fed.start(name)
        wait_for(lambda: fed.rounds_done()["member-00000"] >= 1, timeout=40, what="round 1", fed=fed)
        time.sleep(0.25)  # round 2: members are training
        fed.processes[victim].kill()
        fed.processes[victim].wait()
        wait_for(lambda: fed.rounds_done()["member-00000"] >= 3, timeout=40, what="round 3 without the victim", fed=fed)
        fed.start(victim)  # restarted: catches up and rejoins
        wait_for(lambda: all_done(fed, 10), timeout=60, what="all 10 rounds", fed=fed)
    finally:
        fed.stop()
    records = history(fed, "member-00000")
    second = records[1]
    assert second["accepted"] == [0, 1]
    assert "2" in second["dropouts"] and "member-00002" in second["dropouts"]["2"]
    assert 2 in records[-1]["accepted"], "the restarted member must take part again"
    assert fed.rounds_done()[victim] == 10
    assert "caught up to round" in log_text(fed, victim) or "resumes after round" in log_text(fed, victim)


def test_swarm_leader_killed_mid_round_next_leader_completes_it(tmp_path: Path) -> None:
    _, spec = write_spec(tmp_path, name="leader", rounds=3, topology="swarm", slow=0.8)
    fed = federation(tmp_path, spec)
    try:
        for name in fed.kits:
            fed.start(name)
        wait_for(lambda: min(fed.rounds_done().values()) >= 1, timeout=40, what="round 1", fed=fed)
        digest = (fed.progress("member-00000") or {})["model_digest"]
        order = leader_order(digest, 2, fed.kits)
        time.sleep(0.3)  # round 2 is running under order[0]
        fed.processes[order[0]].kill()
        fed.processes[order[0]].wait()
        survivors = [n for n in fed.kits if n != order[0]]
        wait_for(lambda: all(fed.rounds_done()[n] >= 3 for n in survivors), timeout=60, what="rounds 2-3", fed=fed)
    finally:
        fed.stop()
    second = history(fed, survivors[0])[1]
    assert second["leader"] == order[1], f"round 2 should be completed by the next leader {order[1]}"
    killed = fed.kits and sorted(fed.kits).index(order[0])
    assert killed not in second["accepted"]
    assert "taking over as leader" in log_text(fed, order[1])


def test_whole_federation_restart_resumes_from_the_last_round(tmp_path: Path) -> None:
    _, spec = write_spec(tmp_path, name="resume", rounds=4, slow=0.3)
    fed = federation(tmp_path, spec)
    try:
        for name in fed.kits:
            fed.start(name)
        wait_for(lambda: fed.rounds_done()["member-00000"] >= 2, timeout=40, what="round 2", fed=fed)
        fed.stop()
        stopped_at = fed.rounds_done()["member-00000"]
        assert 2 <= stopped_at < 4
        for name in fed.kits:
            fed.start(name)
        wait_for(lambda: all_done(fed, 4), timeout=60, what="all 4 rounds after the restart", fed=fed)
    finally:
        fed.stop()
    assert "resumes after round" in log_text(fed, "member-00000")
    _, fast = write_spec(tmp_path, name="resume-sim", rounds=4, slow=0.0)
    simulated = run_simulation(fast, out_dir=tmp_path / "sim").summary
    assert history(fed, "member-00001")[-1]["model_digest"] == simulated["final_model_digest"]


def test_member_with_a_wrong_shape_is_excluded_with_the_reason(tmp_path: Path) -> None:
    _, spec = write_spec(tmp_path, name="shape", rounds=2)
    fed = federation(tmp_path, spec)
    try:
        for name in fed.kits:
            fed.start(name, env={"FEDSWARM_TEST_WRONG_SHAPE": "1"} if name == "member-00001" else None)
        wait_for(lambda: all_done(fed, 2), timeout=40, what="2 rounds", fed=fed)
    finally:
        fed.stop()
    for record in history(fed, "member-00000"):
        assert record["accepted"] == [0, 2]
        reason = record["dropouts"]["1"]
        assert "member-00001" in reason and "has shape [3], expected" in reason, reason
