"""Tests of the ledger recorder: what a run writes, lazy admission, update digests, engine integration."""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedswarm.codec.tensors import decode, digest
from fedswarm.core.errors import ConfigurationError
from fedswarm.core.parameters import Parameters
from fedswarm.ledger import recorder as recorder_module
from fedswarm.ledger.entries import AggregateCommitted, FederationCreated, RoundOpened, UpdateSubmitted
from fedswarm.ledger.recorder import LedgerRecorder, LedgerRecorderError, float64_schema, update_digest
from fedswarm.ledger.simkeys import SimulationKeys
from fedswarm.ledger.store import DB_NAME, LedgerStore
from fedswarm.ledger.verify import verify_ledger
from fedswarm.sim.engine import run_simulation
from fedswarm.spec.schema import parse_spec

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import FakeStart, Settings, build_ledger, initial_model


def _entries(folder: Path) -> list[Any]:
    with LedgerStore(folder, readonly=True) as store:
        return [store.entry(i).entry for i in range(store.size)]


def test_update_digest_is_the_canonical_float64_safetensors_digest() -> None:
    schema = initial_model().schema
    row = np.arange(8, dtype=np.float64) / 7
    schema64 = float64_schema(schema)
    assert [t.dtype for t in schema64.tensors] == ["<f8", "<f8"]
    expected = digest(Parameters({"b": row[:2], "w": row[2:].reshape(3, 2)}))
    assert update_digest(row, schema64) == expected
    assert update_digest(row.astype(np.float32), schema64) != update_digest(row + 1e-9, schema64)


def test_a_run_writes_the_expected_entries(tmp_path: Path) -> None:
    folder, models = build_ledger(tmp_path / "l", rounds=2, members=3)
    entries = _entries(folder)
    kinds = [e.kind for e in entries]
    round_kinds = [
        "round_opened",
        *["update_submitted"] * 3,
        "aggregate_committed",
        "evaluation_reported",
        "evaluation_reported",
    ]
    assert kinds == ["federation_created", *round_kinds, *round_kinds]
    created = entries[0].body
    assert isinstance(created, FederationCreated)
    assert [m.name for m in created.members] == ["member-00000", "member-00001", "member-00002"]
    keys = SimulationKeys(0)
    assert created.members[1].key == keys.member("member-00001").public_key().raw
    assert entries[0].key == keys.coordinator().public_key().raw and created.keys == "simulated"
    assert created.initial_model == digest(models[0])
    opened, aggregate = entries[8].body, entries[12].body
    assert isinstance(opened, RoundOpened) and isinstance(aggregate, AggregateCommitted)
    assert opened.base_model == digest(models[1]) and aggregate.model == digest(models[2])
    submitted = [e for e in entries[9:12]]
    assert [e.author for e in submitted] == list(aggregate.contributors)
    for entry in submitted:
        body = entry.body
        assert isinstance(body, UpdateSubmitted)
        assert entry.key == keys.member(entry.author).public_key().raw
        stored = _packed(folder, body.update)  # the table of format 2, read directly
        assert hashlib.sha256(stored).hexdigest() == body.update and len(stored) == body.bytes
        assert np.isclose(np.linalg.norm(decode(stored).flatten()), body.norm)
    assert not (folder / "objects").exists()  # every object is packed in the database
    with LedgerStore(folder, readonly=True) as store:
        assert [c.head.size for c in store.checkpoints()] == [8, 15]
        assert all(len(c.cosignatures) == 3 for c in store.checkpoints())


def _packed(folder: Path, digest: str) -> bytes:
    conn = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT data FROM objects WHERE digest = ?", (digest,)).fetchone()
    finally:
        conn.close()
    assert row is not None, f"object {digest} is not packed"
    return bytes(row[0])


def test_checkpoint_every_and_final_checkpoint(tmp_path: Path) -> None:
    folder, _ = build_ledger(tmp_path / "l", rounds=5, members=3, checkpoint_every=2)
    with LedgerStore(folder, readonly=True) as store:
        assert [c.head.size for c in store.checkpoints()] == [15, 29, 36]
    assert verify_ledger(folder).unwitnessed == 0


def test_without_retained_updates_only_models_are_stored(tmp_path: Path) -> None:
    folder, _ = build_ledger(tmp_path / "l", rounds=2, members=3, retain=False)
    report = verify_ledger(folder)
    assert report.objects == 3 == report.models


def test_large_federations_admit_members_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "EAGER_MEMBERS", 4)
    folder, _ = build_ledger(tmp_path / "l", rounds=3, members=10, per_round=3)
    entries = _entries(folder)
    created = entries[0].body
    assert isinstance(created, FederationCreated) and created.members == () and created.population == 10
    admitted = [e.body.member for e in entries if e.kind == "member_admitted"]
    selected = {name for e in entries if isinstance(e.body, RoundOpened) for name in e.body.selected}
    assert sorted(admitted) == sorted(selected) and len(admitted) < 10
    report = verify_ledger(folder)
    assert report.members == len(admitted) and report.final_checkpoints == 3


def test_background_writer_gives_the_same_ledger(tmp_path: Path) -> None:
    inline, _ = build_ledger(tmp_path / "inline", rounds=3, members=4)
    background, _ = build_ledger(tmp_path / "background", rounds=3, members=4, background=True)
    with LedgerStore(inline, readonly=True) as a, LedgerStore(background, readonly=True) as b:
        assert a.size == b.size and a.root() == b.root()
        assert [c.head for c in a.checkpoints()] == [c.head for c in b.checkpoints()]
    assert verify_ledger(background).final_checkpoints == 3


def test_background_writer_errors_surface(tmp_path: Path) -> None:
    folder = tmp_path / "l"
    recorder = LedgerRecorder(folder, spec=Settings(), schema=initial_model().schema, background=True)
    start = FakeStart("t", {}, "0" * 64, ["member-00000"], "fedavg", initial_model(), "f" * 64, 0)
    recorder.on_start(start)  # the digest does not match the model: the writer fails
    with pytest.raises(LedgerRecorderError, match="initial model digest"):
        recorder.close()


def test_anomaly_and_privacy_annotations_become_entries(tmp_path: Path) -> None:
    def annotate(rnd: int) -> dict[str, Any]:
        flagged = {
            "member": "member-00001",
            "round": rnd,
            "norm_z": 4.5,
            "cosine": None,
            "flagged": True,
            "reason": "norm",
        }
        quiet = {"member": "member-00002", "round": rnd, "norm_z": 0.1, "flagged": False, "reason": ""}
        privacy = {"epsilon": 0.5 * rnd, "delta": 1e-5, "accountant": "rdp", "level": "client"}
        return {"anomalies": [flagged, quiet] if rnd == 2 else [], "privacy": privacy}

    folder, _ = build_ledger(tmp_path / "l", rounds=3, members=3, annotate=annotate)
    entries = _entries(folder)
    anomalies = [e.body for e in entries if e.kind == "anomaly_flagged"]
    assert len(anomalies) == 1
    assert (anomalies[0].round, anomalies[0].member, anomalies[0].reason) == (2, "member-00001", "norm")
    assert anomalies[0].scores == {"cosine": None, "norm_z": 4.5}
    spent = [e.body for e in entries if e.kind == "privacy_spent"]
    assert [(p.round, p.epsilon, p.accountant, p.member) for p in spent] == [
        (1, 0.5, "rdp", None),
        (2, 1.0, "rdp", None),
        (3, 1.5, "rdp", None),
    ]
    assert verify_ledger(folder).kinds["privacy_spent"] == 3
    from fedswarm.ledger.audit import load_audit
    from fedswarm.ledger.report import audit_report

    report = audit_report(load_audit(folder), None, error="not checked")
    assert report["privacy"] == {"round": 3, "epsilon": 1.5, "delta": 1e-5}
    assert report["rounds"][1]["anomalies"][0]["member"] == "member-00001"


def test_recorder_guards(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="checkpoint_every"):
        LedgerRecorder(tmp_path / "x", spec=Settings(True, 0), schema=initial_model().schema)
    recorder = LedgerRecorder(tmp_path / "y", spec=Settings(), schema=initial_model().schema)
    with pytest.raises(LedgerRecorderError, match="before on_start"):
        recorder.on_round(None, model=initial_model(), model_digest="")  # type: ignore[arg-type]
    recorder.close()
    recorder.close()
    folder, _ = build_ledger(tmp_path / "z", rounds=1, members=2)
    with pytest.raises(ConfigurationError, match="already holds a ledger"):
        LedgerRecorder(folder, spec=Settings(), schema=initial_model().schema)


def test_simulate_writes_a_ledger_that_verifies(tmp_path: Path) -> None:
    spec = parse_spec(
        {
            "federation": {"name": "t", "members": 5, "rounds": 3, "seed": 3},
            "data": {"dataset": "breast_cancer", "partition": "dirichlet", "alpha": 1.0, "min_samples": 10},
            "training": {"epochs": 1, "batch_size": 16, "learning_rate": 0.1},
            "strategy": {"name": "fedavg", "fraction": 0.6, "min_members": 2},
            "baselines": {"centralized": False, "local_only": False},
            "ledger": {"checkpoint_every": 2},
        }
    )
    result = run_simulation(spec, out_dir=tmp_path / "run")
    report = verify_ledger(tmp_path / "run")
    assert report.rounds == 3 and report.members == 5
    assert [c.size for c in report.checkpoints][-1] == report.entries
    entries = _entries(tmp_path / "run" / "ledger")
    last_aggregate = [e.body for e in entries if isinstance(e.body, AggregateCommitted)][-1]
    assert last_aggregate.model == result.summary["final_model_digest"]
    assert sum(1 for e in entries if e.kind == "update_submitted") == sum(h["accepted"] for h in result.history)
