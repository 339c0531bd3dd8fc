"""Sample-level DP (``privacy.dp = "local"``: DP-SGD through Opacus on every member) on real node processes
reports what ``fedswarm simulate`` reports for the same spec: the same privacy block and ε after every
round (the accounting is deterministic), and a final model of the same quality. The models themselves
differ: DP-SGD draws its record sampling and noise from the operating system, never from the run seed."""

from __future__ import annotations

from pathlib import Path

import pytest
from network_harness import extension_keys, task_spec

from fedswarm.cli.up import report
from fedswarm.node.up import run_local_federation
from fedswarm.sim.engine import run_simulation

pytestmark = pytest.mark.integration

EXTRA = """
[privacy]
dp = "local"
noise_multiplier = 1.0
clip = 1.0
delta = 1e-3
"""
TASK = {"task": "torch_mlp", "options": "hidden_layers = 0, momentum = 0.0"}  # a linear model: cheap DP-SGD


def test_local_dp_star_spends_the_simulations_epsilon(tmp_path: Path) -> None:
    pytest.importorskip("opacus")
    spec = task_spec(tmp_path, EXTRA, **TASK, name="dp-local", members=3, rounds=2, topology="star")
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=120)
    summary = report(spec, fed, seconds=1.0)
    simulated = run_simulation(spec, out_dir=tmp_path / "sim")

    assert extension_keys(summary) == extension_keys(simulated.summary)
    privacy = summary["privacy"]
    assert (privacy["dp"], privacy["level"], privacy["accountant"], privacy["delta"]) == (
        "local",
        "sample",
        "pld",
        1e-3,
    )
    assert privacy["epsilon"] == pytest.approx(3.6154543490681283) and privacy["min_records"] == 121
    records = fed.history()
    assert [r["annotations"]["privacy"]["epsilon"] for r in records] == [
        row["privacy"]["epsilon"] for row in simulated.history
    ]
    assert [r["accepted"] for r in records] == [[0, 1, 2], [0, 1, 2]]
    # the same quality as the simulation (its accuracy is 0.939 on the 114 held-out records, one record 0.009)
    assert summary["final"]["accuracy"] == pytest.approx(simulated.summary["final"]["accuracy"], abs=0.05)
    assert summary["final"]["loss"] == pytest.approx(simulated.summary["final"]["loss"], abs=0.05)

    # the nodes really trained with DP-SGD: the non-private run of the same spec is deterministic, and differs
    plain = task_spec(tmp_path, "", **TASK, name="plain", members=3, rounds=2, topology="star")
    reference = run_simulation(plain, out_dir=tmp_path / "plain-sim").summary["final_model_digest"]
    assert reference == run_simulation(plain, out_dir=tmp_path / "plain-sim-2").summary["final_model_digest"]
    assert summary["final_model_digest"] not in (reference, simulated.summary["final_model_digest"])
    for name in fed.kits:
        assert fed.processes[name].returncode == 0, fed.log_tail(name)
