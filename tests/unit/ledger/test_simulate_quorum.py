"""``fedswarm simulate`` with ``ledger.quorum``: entry 0 records the spec's quorum and the checkpoints are
cosigned by, and final with, strictly more than that fraction of the members."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedswarm.ledger.entries import FederationCreated
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import VerifyReport, verify_ledger
from fedswarm.sim.engine import run_simulation
from fedswarm.spec.schema import apply_overrides, parse_spec

MEMBERS = 6  # strictly more than 1/2 of 6 is 4 cosigners, strictly more than 2/3 of 6 is 5
RAW: dict[str, Any] = {
    "federation": {"name": "q", "members": MEMBERS, "rounds": 2, "seed": 1},
    "data": {"dataset": "breast_cancer", "min_samples": 10},
    "training": {"epochs": 1, "batch_size": 32, "learning_rate": 0.1},
    "strategy": {"name": "fedavg", "min_members": 2},
    "baselines": {"local_only": False, "centralized": False},
    "output": {"plots": False},
}


def simulate(tmp: Path, *overrides: str) -> tuple[FederationCreated, VerifyReport]:
    spec = parse_spec(apply_overrides(RAW, overrides))
    run_simulation(spec, out_dir=tmp)
    with LedgerStore(tmp / "ledger", readonly=True) as store:
        body = store.entry(0).entry.body
    assert isinstance(body, FederationCreated)
    return body, verify_ledger(tmp, workers=1)


def test_a_smaller_quorum_is_recorded_and_its_checkpoints_are_final(tmp_path: Path) -> None:
    created, report = simulate(tmp_path, "ledger.quorum=1/2")
    assert created.quorum == (1, 2)
    assert len(created.members) == MEMBERS
    assert report.checkpoints and report.final_checkpoints == len(report.checkpoints)
    assert [(c.cosigners, c.members, c.final) for c in report.checkpoints] == [(4, MEMBERS, True)] * len(
        report.checkpoints
    )
    assert report.unwitnessed == 0


def test_the_default_quorum_is_more_than_two_thirds(tmp_path: Path) -> None:
    created, report = simulate(tmp_path)
    assert created.quorum == (2, 3)
    assert [(c.cosigners, c.final) for c in report.checkpoints] == [(5, True)] * len(report.checkpoints)
