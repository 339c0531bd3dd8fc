"""A swarm's ledger goes on without its founding member: killed after round 1, the survivors' later
checkpoints still become final (more than 2/3 of the 4 registered members, signed by the member that
gathered them), their replicas are identical and ``fedswarm ledger verify`` passes on each."""

from __future__ import annotations

from pathlib import Path

import pytest
from network_harness import federation, start_all_and_kill_round_one_leader, wait_for, write_spec
from typer.testing import CliRunner

from fedswarm.cli.main import app
from fedswarm.core.errors import VerificationError
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger
from fedswarm.node.up import LocalFederation
from fedswarm.spec.schema import load_spec

pytestmark = pytest.mark.integration


def _ledger_spec(tmp: Path, *, name: str, rounds: int, members: int) -> Path:
    path, _ = write_spec(tmp, name=name, rounds=rounds, members=members, topology="swarm", slow=0.5)
    path.write_text(path.read_text().replace("[ledger]\nenabled = false", "[ledger]\nenabled = true"))
    return path


def _final_covers_the_log(fed: LocalFederation, name: str) -> bool:
    try:
        with LedgerStore(fed.state_dir(name) / "ledger", readonly=True) as store:
            latest = store.latest_checkpoint()
            return latest is not None and latest.head.size == store.size
    except VerificationError:  # not created yet
        return False


def test_checkpoints_become_final_after_the_founding_member_is_killed(tmp_path: Path) -> None:
    rounds = 4
    spec, _ = load_spec(_ledger_spec(tmp_path, name="ledger-founder", rounds=rounds, members=4))
    fed = federation(tmp_path, spec)
    try:
        founder = start_all_and_kill_round_one_leader(fed)
        survivors = sorted(n for n in fed.kits if n != founder)
        wait_for(
            lambda: all(fed.rounds_done()[n] >= rounds for n in survivors), timeout=120, what="the rounds", fed=fed
        )
        wait_for(
            lambda: all(_final_covers_the_log(fed, n) for n in survivors), timeout=30, what="final checkpoints", fed=fed
        )
    finally:
        fed.stop()
    reports = {n: verify_ledger(fed.state_dir(n)) for n in survivors}
    with LedgerStore(fed.state_dir(founder) / "ledger") as store:  # killed: its write-ahead log is recovered
        seen_by_founder = store.size
    with LedgerStore(fed.state_dir(survivors[0]) / "ledger", readonly=True) as store:
        records = [r for _, r in store.records()]
        assert store.entry(0).entry.author == f"coordinator@{founder}"  # the killed member founded the ledger
    for name in survivors:
        with LedgerStore(fed.state_dir(name) / "ledger", readonly=True) as store:
            assert [r for _, r in store.records()] == records, f"{name}'s entries differ"
        report = reports[name]
        assert report.root == reports[survivors[0]].root and report.rounds == rounds
        assert report.unwitnessed == 0 and all(c.final for c in report.checkpoints), report.checkpoints
        later = [c for c in report.checkpoints if c.size > seen_by_founder]  # heads the founder never saw
        assert later and all(c.signer in survivors and c.cosigners >= 3 and c.members == 4 for c in later), later
        result = CliRunner().invoke(app, ["ledger", "verify", str(fed.state_dir(name))])
        assert result.exit_code == 0, result.output
