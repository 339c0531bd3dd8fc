"""A secure-aggregated run's ledger: contributors without individual update digests, still verifiable."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedswarm.ledger.audit import load_audit
from fedswarm.ledger.verify import verify_ledger
from fedswarm.sim.engine import run_simulation
from fedswarm.spec.schema import parse_spec


def test_secagg_run_records_contributors_and_verifies(tmp_path: Path) -> None:
    pytest.importorskip("fedswarm.rounds.privacy.secagg")
    spec = parse_spec(
        {
            "federation": {"name": "sa", "members": 5, "rounds": 2, "seed": 2},
            "data": {"dataset": "breast_cancer"},
            "privacy": {"secure_aggregation": "secagg+", "secagg": {"clip": 1.0}},
            "baselines": {"local_only": False, "centralized": False},
        }
    )
    res = run_simulation(spec, out_dir=tmp_path)
    verify_ledger(tmp_path / "ledger")
    log = load_audit(tmp_path / "ledger")
    for number, record in log.rounds.items():
        agg = record.aggregate
        assert agg is not None
        assert agg.inputs == ()
        assert len(agg.contributors) == res.history[number - 1]["accepted"] == 5
