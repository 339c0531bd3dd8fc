"""A member that joins a running swarm (``fedswarm provision join-request``, ``add-member``,
``complete-join``) is admitted on the ledger exactly once, by whoever leads the first round it takes part in,
even with the founding member down; its key is the manifest's, and every replica verifies."""

from __future__ import annotations

from pathlib import Path

import pytest
from network_harness import start_all_and_kill_round_one_leader, wait_for, write_spec
from typer.testing import CliRunner

from fedswarm.cli.main import app
from fedswarm.core.errors import VerificationError
from fedswarm.ledger.entries import MemberAdmitted, RoundOpened, SignedEntry
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger
from fedswarm.node.kit import load_kit
from fedswarm.node.provisioning import provision_from_spec
from fedswarm.node.provisioning import write_spec as write_spec_toml
from fedswarm.node.up import LocalFederation, free_ports
from fedswarm.spec.schema import load_spec

pytestmark = pytest.mark.integration

NEW = "member-00003"
NO_PASSWORDS = {"FEDSWARM_KIT_PASSWORD": None, "FEDSWARM_CA_PASSWORD": None}


def _final_covers_the_log(fed: LocalFederation, name: str) -> bool:
    try:
        with LedgerStore(fed.state_dir(name) / "ledger", readonly=True) as store:
            latest = store.latest_checkpoint()
            return latest is not None and latest.head.size == store.size
    except VerificationError:
        return False


def _invoke(*args: str) -> None:
    result = CliRunner().invoke(app, list(args), env=NO_PASSWORDS)
    assert result.exit_code == 0, (args, result.output)


def test_a_member_that_joins_is_admitted_once_by_whoever_leads(tmp_path: Path) -> None:
    rounds = 3
    path, _ = write_spec(tmp_path, name="ledger-join", rounds=rounds, members=4, topology="swarm", slow=0.5)
    # three founding members; with min_members = 3 no round completes after round 1 until the newcomer takes part
    text = path.read_text().replace("[ledger]\nenabled = false", "[ledger]\nenabled = true")
    # the newcomer starts while the founding member is down: a short gather timeout spares it the 20 s wait for
    # every listed member to be reachable before it takes part (not what this test is about)
    text = text.replace("min_members = 2", "min_members = 3").replace("gather_timeout = 20", "gather_timeout = 2")
    path.write_text(text)
    spec, _ = load_spec(path)
    three = spec.model_copy(update={"federation": spec.federation.model_copy(update={"members": 3})})
    out = tmp_path / "up"
    ports = free_ports(4)
    provisioned = provision_from_spec(three, out / "federation", ports=ports[:3])
    for kit in provisioned.kits.values():
        write_spec_toml(spec, kit / "spec.toml")  # every node runs the same job: the four-member spec
    fed = LocalFederation(out_dir=out, kits=dict(provisioned.kits), logs=out / "logs")
    newcomer = out / "federation-join" / NEW
    try:
        founder = start_all_and_kill_round_one_leader(fed)
        _invoke("provision", "join-request", str(newcomer), "--name", NEW, "--address", f"127.0.0.1:{ports[3]}")
        _invoke("provision", "add-member", str(out / "federation"), str(newcomer / "join-request.json"))
        admission = out / "federation" / "ca" / "admissions" / f"{NEW}.json"
        _invoke("provision", "complete-join", str(newcomer), str(admission), "--spec", str(path))
        fed.kits[NEW] = newcomer
        fed.start(NEW)
        running = sorted(n for n in fed.kits if n != founder)
        wait_for(lambda: all(fed.rounds_done()[n] >= rounds for n in running), timeout=120, what="rounds", fed=fed)
        wait_for(lambda: all(_final_covers_the_log(fed, n) for n in running), timeout=30, what="checkpoints", fed=fed)
    finally:
        fed.stop()
    with LedgerStore(fed.state_dir(NEW) / "ledger", readonly=True) as store:
        records = [r for _, r in store.records()]
    entries = [SignedEntry.from_record(r).entry for r in records]
    admitted = [e for e in entries if isinstance(e.body, MemberAdmitted)]
    assert [e.body.member for e in admitted] == [NEW]  # type: ignore[union-attr]  # exactly once
    admission_entry = admitted[0]
    listed = next(e for e in load_kit(newcomer).manifest.members if e.name == NEW)
    assert admission_entry.body.key == listed.verify_key().raw  # type: ignore[union-attr]
    opened = next(e for e in entries[admission_entry.seq + 1 :] if isinstance(e.body, RoundOpened))
    assert isinstance(opened.body, RoundOpened) and opened.seq == admission_entry.seq + 1
    assert admission_entry.author not in (founder, f"coordinator@{founder}")  # the founding member was down
    assert admission_entry.author == opened.author or (
        opened.author == NEW and admission_entry.author in opened.body.selected
    )
    assert NEW in opened.body.selected
    for name in running:
        with LedgerStore(fed.state_dir(name) / "ledger", readonly=True) as store:
            assert [r for _, r in store.records()] == records, f"{name}'s entries differ"
        report = verify_ledger(fed.state_dir(name))
        assert report.unwitnessed == 0 and report.checkpoints[-1].members == 4 and report.checkpoints[-1].final
