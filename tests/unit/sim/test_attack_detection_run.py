"""Detection in small simulated runs: scaling and sign-flipping attackers are flagged, honest members not;
the per-round anomaly records reach metrics.jsonl in the format the ledger records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import fedswarm.sim.attacks  # noqa: F401  (registers the attack library)
from fedswarm.sim.attacks import choose_attackers
from fedswarm.sim.engine import run_simulation
from fedswarm.spec.schema import parse_spec

KEYS = {
    "member", "round", "distance", "cosine", "norm_z", "norm_ratio", "distance_ratio", "cosine_z", "reputation",
    "flagged", "reason",
}  # fmt: skip


def _spec(kind: str | None, partition: str = "iid", parameters: dict[str, Any] | None = None) -> Any:
    raw: dict[str, Any] = {
        "federation": {"name": "d", "members": 12, "rounds": 5, "seed": 2},
        "data": {"dataset": "digits", "partition": partition, "alpha": 0.5},
        "strategy": {"name": "fedavg", "min_members": 2, "rule": {"name": "median"}},
        "baselines": {"local_only": False, "centralized": False},
        "evaluation": {"members": "none"},
    }
    if kind is not None:
        raw["attack"] = {"kind": kind, "members": 3, "parameters": parameters or {}}
    return parse_spec(raw)


@pytest.mark.parametrize(
    ("kind", "parameters"),
    [
        ("scaling", {"factor": 12.0}),  # model replacement, each attacker at n / eta (as if it were alone)
        ("scaling", {"factor": 25.0, "poison": "none"}),  # a boosted honest update
        ("sign_flip", {}),
    ],
)
def test_attackers_are_flagged_and_honest_members_are_not(
    kind: str, parameters: dict[str, Any], tmp_path: Path
) -> None:
    spec = _spec(kind, parameters=parameters)
    assert spec.attack is not None
    attackers = {f"member-{m:05d}" for m in choose_attackers(spec.attack, members=12, seed=2)}
    res = run_simulation(spec, out_dir=tmp_path)
    assert set(res.summary["flagged"]) == attackers
    assert res.summary["attack"]["members"] == sorted(attackers)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        names = {a["member"] for a in line["anomalies"]}
        assert names == attackers
        for record in line["anomalies"]:
            assert set(record) == KEYS and record["round"] == line["round"] and record["flagged"] is True
            assert isinstance(record["reason"], str) and record["reason"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["flagged"] == sorted(attackers)


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_clean_runs_flag_nobody(partition: str) -> None:
    res = run_simulation(_spec(None, partition), write_outputs=False)
    assert res.summary["flagged"] == []
    assert all(h["anomalies"] == [] for h in res.history)
