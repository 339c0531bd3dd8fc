"""The swarm leader killed in the middle of a SecAgg+ round, with real node processes.

Five members in a swarm aggregate with SecAgg+ (deterministic rounding, no DP, so every sum is exact and
reproducible). As soon as round 1 is committed, round 2's leader is known (the leader order is a function
of round 1's model); the test waits until round 2's members are training, which they do only after that
leader has sent the SecAgg+ key, share and fit assignments, and kills the leader (``SIGKILL``). The next
member in the order must take over, restart the protocol from ``secagg.advertise`` and complete the round
over the four survivors, and the run must finish. What the protocol promises is then checked exactly:
every round's model equals the one the round engine computes in one process for the same members
(round 1 with all five, rounds 2 and 3 with the survivors), bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from network_harness import SECAGG_PLUS, all_done, federation, history, log_text, task_spec, wait_for
from network_marking_task import MARKERS_ENV, marker_name

from fedswarm.codec.tensors import digest
from fedswarm.node.leader import leader_order
from fedswarm.rounds.coordinator import Coordinator
from fedswarm.sim.backends import InProcessBackend
from fedswarm.sim.engine import drive
from fedswarm.sim.world import build_world, member_name
from fedswarm.spec.build import build_strategy
from fedswarm.spec.extensions import resolve_collector
from fedswarm.spec.schema import Spec
from fedswarm.strategy.base import member_seed

pytestmark = pytest.mark.integration


def _reference_digests(spec: Spec, members: list[list[int]]) -> list[str]:
    """The model digest after each round when round ``r`` aggregates exactly ``members[r - 1]``."""
    world = build_world(spec)
    coordinator = Coordinator(
        build_strategy(spec),
        schema=world.schema,
        population=world.data.members,
        member_name=member_name,
        collector=resolve_collector(world.extensions),
        evaluate_members="none",
    )
    backend = InProcessBackend(world.runtime)
    params = world.task.init_parameters(seed=spec.federation.seed)
    out = []
    for rnd, ids in enumerate(members, start=1):
        gen = coordinator.run_round(rnd, params, candidates=np.asarray(ids, dtype=np.int64), evaluate=False)
        outcome = drive(gen, backend, params.flatten())
        assert outcome.accepted == ids
        params = outcome.parameters
        out.append(digest(params))
    return out


def test_secagg_swarm_leader_killed_after_its_assignments_next_leader_completes_the_round(tmp_path: Path) -> None:
    spec = task_spec(
        tmp_path,
        SECAGG_PLUS,
        task="network_marking_task:make",
        options="slow_seconds = 1.0",
        name="secagg-leader-kill",
        members=5,
        rounds=3,
        topology="swarm",
        slow=0.0,
    )
    markers = tmp_path / "markers"
    markers.mkdir()
    fed = federation(tmp_path, spec)
    names = sorted(fed.kits)
    try:
        for name in names:
            fed.start(name, env={MARKERS_ENV: str(markers)})
        wait_for(lambda: max(fed.rounds_done().values()) >= 1, timeout=60, what="round 1", fed=fed)
        first = next(p for p in (fed.progress(n) for n in names) if p is not None and p["round"] >= 1)
        order = leader_order(first["model_digest"], 2, names)
        victim = order[0]
        survivors = [m for m in range(5) if names[m] != victim]
        fits = {m: markers / marker_name(2, member_seed(spec.federation.seed, 2, m)) for m in range(5)}
        # round 2's members train only once its leader has sent them the key, share and fit assignments;
        # each trains for a second: the leader dies while it waits for their masked inputs
        wait_for(lambda: all(fits[m].exists() for m in survivors), timeout=60, what="round 2's fit phase", fed=fed)
        assert all(r <= 1 for r in fed.rounds_done().values()), "round 2 must still be open when its leader dies"
        os.kill(fed.processes[victim].pid, 9)
        fed.processes[victim].wait()
        wait_for(lambda: all_done(fed, 3), timeout=90, what="rounds 2-3 without the killed leader", fed=fed)
    finally:
        fed.stop()

    records = history(fed, order[1])
    assert [r["round"] for r in records] == [1, 2, 3]
    second = records[1]
    assert second["leader"] == order[1], f"round 2 should be completed by the next leader {order[1]}"
    assert "taking over as leader" in log_text(fed, order[1])
    # the new leader ran SecAgg+ again from its first phase; at its fit phase members reused their update
    assert all(len(fits[m].read_text().splitlines()) == 1 for m in survivors)
    assert [r["accepted"] for r in records] == [list(range(5)), survivors, survivors]
    transports = [r["annotations"]["privacy"]["transport"] for r in records]
    assert [t["transport"] for t in transports] == ["secagg+"] * 3
    assert [t["contributors"] for t in transports] == [5, 4, 4]
    for name in names:
        if name != victim:
            assert [r["model_digest"] for r in history(fed, name)] == [r["model_digest"] for r in records], name

    expected = _reference_digests(spec, [list(range(5)), survivors, survivors])
    assert [r["model_digest"] for r in records] == expected, "the survivors' exact SecAgg+ aggregate"
