"""``fedswarm ledger lineage/blame/export`` on a node's replica of a SecAgg+ federation run by real processes.

The nodes commit each round's contributors without update digests (nobody held an individual update);
the audit commands list them and say the inputs were aggregated privately.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedswarm.cli.main import app
from fedswarm.ledger.audit import PRIVATE_REASON
from fedswarm.node.up import run_local_federation
from fedswarm.spec.schema import load_spec

pytestmark = pytest.mark.integration

MEMBERS = [f"member-{m:05d}" for m in range(4)]
SPEC = """
[federation]
name = "audit-secagg"
members = 4
rounds = 2
seed = 7

[data]
dataset = "breast_cancer"
partition = "iid"

[strategy]
name = "fedavg"
min_members = 3
rule = { name = "mean" }

[privacy]
secure_aggregation = "secagg+"
secagg = { clip = 1.0 }

[baselines]
local_only = false
centralized = false

[network]
round_timeout = 20
evaluate_timeout = 6
rpc_timeout = 2
takeover_grace = 1
probe_interval = 0.3
"""


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["ledger", *args])
    return result.exit_code, result.stdout


def test_audit_commands_on_a_secagg_node_replica(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC, encoding="utf-8")
    spec, _ = load_spec(path)
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=80)
    records = fed.history()
    assert len(records) == 2
    node = tmp_path / "up" / "federation" / "member-00001"  # a kit: its replica is KIT/state/ledger
    final = records[-1]["model_digest"]

    code, out = _cli("lineage", str(node), "--model", final[:12], "--json")
    assert code == 0, out
    steps = json.loads(out)["steps"]
    assert [s["round"] for s in steps] == [1, 2] and steps[-1]["model"] == final
    for step in steps:
        assert step["private"] and step["note"] == PRIVATE_REASON
        assert [c["member"] for c in step["contributors"]] == MEMBERS
        assert all(c["update"] is None and c["entry"] is None for c in step["contributors"])

    code, out = _cli("blame", str(node), "--json")
    assert code == 0, out
    blamed = json.loads(out)
    assert (blamed["previous_round"], blamed["round"], blamed["contributors"]) == (1, 2, [])
    assert blamed["private_rounds"] == [{"round": 2, "contributors": MEMBERS, "reason": PRIVATE_REASON}]
    assert blamed["aggregate_norms"]["2"] > 0

    code, out = _cli("export", str(node), "--format", "json")
    assert code == 0, out
    report = json.loads(out)
    assert report["verification"]["ok"] and report["final_model"] == final
    assert [(r["accepted"], r["private"], r["contributors"]) for r in report["rounds"]] == [(4, True, MEMBERS)] * 2
