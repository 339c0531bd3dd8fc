"""A 3-member federation over real processes and mutual TLS, in each topology, matches the simulation."""

from __future__ import annotations

from pathlib import Path

import pytest
from network_harness import write_spec

from fedswarm.cli.up import report
from fedswarm.node.up import run_local_federation
from fedswarm.sim.engine import run_simulation

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("topology", ["star", "swarm"])
def test_three_members_match_the_simulation(tmp_path: Path, topology: str) -> None:
    _, spec = write_spec(tmp_path, name=f"three-{topology}", rounds=3, topology=topology)
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=90)
    summary = report(spec, fed, seconds=1.0)
    simulated = run_simulation(spec, out_dir=tmp_path / "sim").summary

    assert summary["rounds"] == 3 and summary["dropouts"] == 0 and summary["rejected"] == 0
    assert summary["final_model_digest"] == simulated["final_model_digest"]
    assert summary["final"]["accuracy"] == pytest.approx(simulated["final"]["accuracy"], abs=1e-6)
    assert summary["bytes_up"] == simulated["bytes_up"]
    assert set(summary) >= set(simulated) - {"plots"}
    assert summary["flagged"] == simulated["flagged"] and summary["detection"] == simulated["detection"]
    records = fed.history()
    assert [r["selected"] for r in records] == [[0, 1, 2]] * 3
    leaders = {r["leader"] for r in records}
    if topology == "star":
        assert leaders == {"member-00000"}
    else:
        assert len(leaders) >= 2, f"the swarm leader should rotate, got {leaders}"
    for name in fed.kits:  # every member holds the same committed history
        assert [r["model_digest"] for r in fed.history()] == [r["model_digest"] for r in records]
        assert fed.processes[name].returncode == 0, fed.log_tail(name)
