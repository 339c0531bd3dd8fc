"""``ledger.retain_updates`` on real nodes: the leader keeps every update it aggregated and each member its
own, so ``fedswarm ledger revert`` works on the star aggregator's data folder and, on a member's, names the
round, the update and who keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from network_harness import write_spec
from typer.testing import CliRunner

from fedswarm.cli.main import app
from fedswarm.ledger.entries import AggregateCommitted, SignedEntry
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger
from fedswarm.node.up import run_local_federation
from fedswarm.spec.schema import load_spec

pytestmark = pytest.mark.integration


def test_updates_are_retained_where_they_were_sent_and_revert_works_on_the_aggregator(tmp_path: Path) -> None:
    rounds = 3
    path, _ = write_spec(tmp_path, name="ledger-retain", rounds=rounds, topology="star")
    path.write_text(path.read_text().replace("[ledger]\nenabled = false", "[ledger]\nenabled = true"))
    spec, _ = load_spec(path)
    assert spec.ledger.retain_updates  # the default
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=90)
    aggregator, members = "member-00000", ("member-00001", "member-00002")
    with LedgerStore(fed.state_dir(aggregator) / "ledger", readonly=True) as store:
        aggregates = [
            e.entry.body
            for _, r in store.records()
            if (e := SignedEntry.from_record(r)).entry.kind == "aggregate_committed"
        ]
    inputs = [
        (body.round, member, digest)
        for body in aggregates
        if isinstance(body, AggregateCommitted)
        for member, digest in zip(body.contributors, body.inputs, strict=True)
    ]
    assert len(inputs) == 3 * rounds

    def kept(name: str) -> set[tuple[int, str, str]]:
        with LedgerStore(fed.state_dir(name) / "ledger", readonly=True) as store:
            return {i for i in inputs if store.objects.has(i[2])}

    assert kept(aggregator) == set(inputs)  # the leader of every round: every input
    for name in members:
        assert kept(name) == {i for i in inputs if i[1] == name}  # a member: its own updates only
        verify_ledger(fed.state_dir(name))

    out = tmp_path / "reverted"
    result = CliRunner().invoke(
        app, ["ledger", "revert", str(fed.state_dir(aggregator)), "--exclude", members[1], "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "revert.json").read_text())
    assert (
        report["rounds_changed"] == rounds
        and report["original_final_model_digest"] == fed.history()[-1]["model_digest"]
    )
    assert report["final_model_digest"] != report["original_final_model_digest"]
    verify_ledger(out)

    refused = CliRunner().invoke(
        app, ["ledger", "revert", str(fed.state_dir(members[0])), "--exclude", members[1], "--out", str(tmp_path / "x")]
    )
    assert refused.exit_code != 0
    text = " ".join(refused.output.split())
    assert f"round 1: the update {inputs[0][2][:16]}... of {aggregator} is not stored with the ledger" in text, (
        text
    )  # not its own
    assert f"kept only by its author and by the leader of its round ({aggregator})" in text, text
