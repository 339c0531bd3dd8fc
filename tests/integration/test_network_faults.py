"""Fault tolerance over real processes: killed and restarted members, a killed swarm leader, a restart of
the whole federation, and a member whose model has the wrong shape.

The tests act on what the nodes write, not on elapsed time: the progress and history files in a node's
state folder say which rounds are committed and who took part, and a test acts as soon as they change
(each round's fits are slowed down so that "as soon as" falls inside the round). Where a test must not
depend on how fast a loaded machine restarts a process, it pauses (``SIGSTOP``) a member so that no
round can complete without the restarted one. Deadlines are generous (a loaded 2-core machine takes
seconds to start a node process) but bounded, and only a failing test waits for them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from network_harness import all_done, federation, history, log_text, wait_for, write_spec

from fedswarm.node.leader import leader_order
from fedswarm.sim.engine import run_simulation
from fedswarm.spec.schema import Spec

pytestmark = pytest.mark.integration


def _patient(spec: Spec) -> Spec:
    """``spec`` with deadlines long enough that a member slowed down by a loaded machine is never dropped.

    The comparison with the simulation needs every member in every round; the nodes move on as soon as
    everyone answered, so long deadlines cost nothing when the machine is fast.
    """
    network = spec.network.model_copy(update={"gather_timeout": 120.0, "round_timeout": 60.0, "evaluate_timeout": 60.0})
    return spec.model_copy(update={"network": network})


def test_member_killed_mid_round_then_restarted(tmp_path: Path) -> None:
    _, spec = write_spec(tmp_path, name="kill", rounds=10, slow=1.0)
    fed = federation(tmp_path, spec)
    victim, bystander = "member-00002", "member-00001"
    frozen = False
    try:
        for name in fed.kits:
            fed.start(name)
        # round 1 is committed: the commit and round 2's assignment are on their way to the victim, which then
        # trains for a second; killed now, it delivers nothing for round 2
        wait_for(lambda: fed.rounds_done()["member-00000"] >= 1, timeout=90, what="round 1", fed=fed)
        fed.processes[victim].kill()
        fed.processes[victim].wait()
        wait_for(lambda: fed.rounds_done()["member-00000"] >= 3, timeout=60, what="round 3 without the victim", fed=fed)
        # Hold the federation while the victim restarts, however long a loaded machine takes to start it: with the
        # bystander paused no round reaches strategy.min_members = 2 until the restarted victim takes part.
        os.kill(fed.processes[bystander].pid, signal.SIGSTOP)
        frozen = True
        fed.start(victim)  # restarted: catches up and rejoins
        wait_for(
            lambda: any(2 in r["accepted"] for r in history(fed, "member-00000")[3:]),
            timeout=120,
            what="a round with the restarted victim",
            fed=fed,
        )
        os.kill(fed.processes[bystander].pid, signal.SIGCONT)
        frozen = False
        wait_for(lambda: all_done(fed, 10), timeout=120, what="all 10 rounds", fed=fed)
    finally:
        if frozen:
            os.kill(fed.processes[bystander].pid, signal.SIGCONT)
        fed.stop()
    records = history(fed, "member-00000")
    second = records[1]
    assert second["accepted"] == [0, 1]
    assert "2" in second["dropouts"] and "member-00002" in second["dropouts"]["2"]
    assert 2 in records[-1]["accepted"], "the restarted member must take part again"
    assert fed.rounds_done()[victim] == 10
    assert "caught up to round" in log_text(fed, victim) or "resumes after round" in log_text(fed, victim)


def test_swarm_leader_killed_mid_round_next_leader_completes_it(tmp_path: Path) -> None:
    _, spec = write_spec(tmp_path, name="leader", rounds=3, topology="swarm", slow=2.0)
    fed = federation(tmp_path, spec)
    try:
        for name in fed.kits:
            fed.start(name)
        # as soon as round 1 is committed, round 2's leader is known and starts it (its members train for 2 s)
        wait_for(lambda: max(fed.rounds_done().values()) >= 1, timeout=90, what="round 1", fed=fed)
        first = next(p for p in (fed.progress(n) for n in sorted(fed.kits)) if p is not None and p["round"] >= 1)
        order = leader_order(first["model_digest"], 2, fed.kits)
        fed.processes[order[0]].kill()
        fed.processes[order[0]].wait()
        survivors = [n for n in fed.kits if n != order[0]]
        wait_for(lambda: all(fed.rounds_done()[n] >= 3 for n in survivors), timeout=90, what="rounds 2-3", fed=fed)
    finally:
        fed.stop()
    second = history(fed, survivors[0])[1]
    assert second["leader"] == order[1], f"round 2 should be completed by the next leader {order[1]}"
    killed = fed.kits and sorted(fed.kits).index(order[0])
    assert killed not in second["accepted"]
    assert "taking over as leader" in log_text(fed, order[1])


def test_whole_federation_restart_resumes_from_the_last_round(tmp_path: Path) -> None:
    rounds = 6  # stopped once round 2 is committed: four more rounds of 0.3 s fits leave a wide margin
    _, spec = write_spec(tmp_path, name="resume", rounds=rounds, slow=0.3)
    fed = federation(tmp_path, _patient(spec))
    try:
        for name in fed.kits:
            fed.start(name)
        wait_for(lambda: fed.rounds_done()["member-00000"] >= 2, timeout=120, what="round 2", fed=fed)
        fed.stop()
        stopped = fed.rounds_done()
        assert 2 <= stopped["member-00000"] < rounds, stopped
        for name in fed.kits:
            fed.start(name)
        wait_for(lambda: all_done(fed, rounds), timeout=180, what=f"all {rounds} rounds after the restart", fed=fed)
        assert all(p.poll() is None for p in fed.processes.values()), "no node may die after the restart"
    finally:
        fed.stop()
    for name in fed.kits:
        assert f"resumes after round {stopped[name]}" in log_text(fed, name), name
    records = history(fed, "member-00001")
    assert [r["round"] for r in records] == list(range(1, rounds + 1))
    assert all(r["accepted"] == [0, 1, 2] for r in records), [r["accepted"] for r in records]
    _, fast = write_spec(tmp_path, name="resume-sim", rounds=rounds, slow=0.0)
    simulated = run_simulation(fast, out_dir=tmp_path / "sim").summary
    assert records[-1]["model_digest"] == simulated["final_model_digest"]


def test_member_with_a_wrong_shape_is_excluded_with_the_reason(tmp_path: Path) -> None:
    _, spec = write_spec(tmp_path, name="shape", rounds=2)
    fed = federation(tmp_path, spec)
    try:
        for name in fed.kits:
            fed.start(name, env={"FEDSWARM_TEST_WRONG_SHAPE": "1"} if name == "member-00001" else None)
        wait_for(lambda: all_done(fed, 2), timeout=90, what="2 rounds", fed=fed)
    finally:
        fed.stop()
    for record in history(fed, "member-00000"):
        assert record["accepted"] == [0, 2]
        reason = record["dropouts"]["1"]
        assert "member-00001" in reason and "has shape [3], expected" in reason, reason
