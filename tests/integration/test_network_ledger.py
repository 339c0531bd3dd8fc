"""Real nodes write the ledger: every replica verifies, all are identical and end with a final checkpoint;
a replica edited while its node was down is caught by its peers when the nodes start again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from network_harness import log_text, wait_for, write_spec
from typer.testing import CliRunner

from fedswarm.cli.main import app
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger
from fedswarm.node.status import query_status
from fedswarm.node.up import LocalFederation, run_local_federation
from fedswarm.spec.schema import Spec, load_spec

pytestmark = pytest.mark.integration


def _ledger_spec(tmp: Path, *, name: str, topology: str, rounds: int) -> Spec:
    path, _ = write_spec(tmp, name=name, rounds=rounds, topology=topology)
    path.write_text(path.read_text().replace("[ledger]\nenabled = false", "[ledger]\nenabled = true"))
    spec, _ = load_spec(path)
    assert spec.ledger.enabled
    return spec


def _records(fed: LocalFederation, name: str) -> list[bytes]:
    with LedgerStore(fed.state_dir(name) / "ledger", readonly=True) as store:
        return [record for _, record in store.records()]


@pytest.mark.parametrize("topology", ["star", "swarm"])
def test_every_node_keeps_an_identical_verified_ledger_with_a_final_checkpoint(tmp_path: Path, topology: str) -> None:
    rounds = 3
    spec = _ledger_spec(tmp_path, name=f"ledger-{topology}", topology=topology, rounds=rounds)
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=90)
    names = sorted(fed.kits)
    reports = {n: verify_ledger(fed.state_dir(n)) for n in names}
    first = reports[names[0]]
    records = _records(fed, names[0])
    assert first.entries == len(records) == 1 + rounds * (1 + 3 + 1 + 2)  # opened, 3 updates, aggregate, 2 evals
    assert first.kinds["update_submitted"] == 3 * rounds and first.members == 3 and first.rounds == rounds
    assert first.warnings == ()  # provisioned keys, and nothing left unwitnessed
    for name in names:
        report = reports[name]
        assert fed.processes[name].returncode == 0, fed.log_tail(name)
        assert _records(fed, name) == records, f"{name}'s entries differ"
        assert report.root == first.root
        last = report.checkpoints[-1]
        assert last.final and last.size == report.entries and last.cosigners == 3 and report.unwitnessed == 0
    history = fed.history()
    authors = {LedgerStore(fed.state_dir(names[0]) / "ledger", readonly=True).entry(0).entry.author}
    assert authors == {f"coordinator@{history[0]['leader']}"}  # the first round's leader founded the ledger
    result = CliRunner().invoke(app, ["ledger", "verify", str(fed.kits[names[1]])])  # a kit folder works too
    assert result.exit_code == 0, result.output
    assert f"root {first.root}" in result.output


def _edit_an_entry(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TRIGGER entries_no_update")
        seq, record = conn.execute(
            "SELECT seq, record FROM entries WHERE kind = 'evaluation_reported' ORDER BY seq LIMIT 1"
        ).fetchone()
        edited = record.replace(b'"accuracy":0.', b'"accuracy":1.', 1)
        assert edited != record
        conn.execute("UPDATE entries SET record = ? WHERE seq = ?", (edited, seq))
        conn.commit()
    finally:
        conn.close()


def test_a_ledger_edited_while_its_node_was_down_is_caught_by_its_peers(tmp_path: Path) -> None:
    spec = _ledger_spec(tmp_path, name="ledger-tamper", topology="star", rounds=2)
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=90)
    victim, honest = "member-00002", ("member-00000", "member-00001")
    _edit_an_entry(fed.state_dir(victim) / "ledger" / "ledger.sqlite")
    try:
        for name in fed.kits:
            fed.start(name)
        wait_for(
            lambda: all(f"{victim} holds another history" in log_text(fed, n) for n in honest),
            timeout=60, what="the peers' fork alarms", fed=fed,
        )  # fmt: skip
        for name in honest:
            status = query_status(fed.kits[name])
            assert "FORK DETECTED" in (status["last_error"] or ""), status
        assert "LEDGER ALTERED" in log_text(fed, victim)
    finally:
        fed.stop()
    for name in fed.kits:  # a node that raised the alarm exits non-zero
        assert fed.processes[name].returncode not in (0, None), (name, fed.log_tail(name))
    result = CliRunner().invoke(app, ["ledger", "verify", str(fed.state_dir(victim))])
    assert result.exit_code == 3, result.output
