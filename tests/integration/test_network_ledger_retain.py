"""``ledger.retain_updates`` on real nodes: the leader keeps every update it aggregated and each member its
own, so ``fedswarm ledger revert`` works on the star aggregator's data folder and, on a member's, names the
round, the update and who keeps it; a swarm, whose leaders rotate, is reverted on any member's folder given
the folders of the other leaders (``--updates-from``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from network_harness import write_spec
from typer.testing import CliRunner

from fedswarm.cli.main import app
from fedswarm.ledger.entries import AggregateCommitted, RoundOpened, SignedEntry
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger
from fedswarm.node.up import LocalFederation, run_local_federation
from fedswarm.spec.schema import Spec, load_spec

pytestmark = pytest.mark.integration


def test_updates_are_retained_where_they_were_sent_and_revert_works_on_the_aggregator(tmp_path: Path) -> None:
    rounds = 3
    spec = _ledger_spec(tmp_path, name="ledger-retain", rounds=rounds, topology="star")
    assert spec.ledger.retain_updates  # the default
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=90)
    aggregator, members = "member-00000", ("member-00001", "member-00002")
    inputs = _inputs(_bodies(fed, aggregator))
    assert len(inputs) == 3 * rounds
    assert _kept(fed, aggregator, inputs) == inputs  # the leader of every round: every input
    for name in members:
        assert _kept(fed, name, inputs) == [i for i in inputs if i[1] == name]  # a member: its own updates only
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
    assert f"kept only by its author ({aggregator}) and by the leader of its round ({aggregator})" in text, text


def _ledger_spec(tmp: Path, *, name: str, rounds: int, topology: str) -> Spec:
    path, _ = write_spec(tmp, name=name, rounds=rounds, topology=topology)
    path.write_text(path.read_text().replace("[ledger]\nenabled = false", "[ledger]\nenabled = true"))
    spec, _ = load_spec(path)
    return spec


def _bodies(fed: LocalFederation, name: str) -> list[object]:
    with LedgerStore(fed.state_dir(name) / "ledger", readonly=True) as store:
        return [SignedEntry.from_record(r).entry.body for _, r in store.records()]


def _inputs(bodies: list[object]) -> list[tuple[int, str, str]]:
    """``(round, member, update digest)`` of every accepted update, in log order."""
    return [
        (b.round, member, digest)
        for b in bodies
        if isinstance(b, AggregateCommitted)
        for member, digest in zip(b.contributors, b.inputs, strict=True)
    ]


def _kept(fed: LocalFederation, name: str, inputs: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The ``inputs`` whose update ``name``'s ledger holds."""
    with LedgerStore(fed.state_dir(name) / "ledger", readonly=True) as store:
        return [i for i in inputs if store.objects.has(i[2])]


def test_a_swarm_is_reverted_on_a_member_s_folder_with_the_other_leaders_folders(tmp_path: Path) -> None:
    rounds = 3
    spec = _ledger_spec(tmp_path, name="ledger-retain-swarm", rounds=rounds, topology="swarm")
    fed = run_local_federation(spec, out_dir=tmp_path / "up", timeout=90)
    names = sorted(fed.kits)
    bodies = _bodies(fed, names[0])
    leaders = {b.round: b.leader for b in bodies if isinstance(b, RoundOpened)}
    assert leaders == {h["round"]: h["leader"] for h in fed.history()} and len(set(leaders.values())) > 1
    inputs = _inputs(bodies)
    assert len(inputs) == 3 * rounds

    def kept(name: str) -> list[tuple[int, str, str]]:
        return _kept(fed, name, inputs)

    for name in names:  # its own updates and those of the rounds it led, nothing else
        assert kept(name) == [i for i in inputs if name in (i[1], leaders[i[0]])], name
    me, excluded = names[0], names[1]
    others = [n for n in names if n != me]

    # alone, the member's folder lacks the rounds others led: the first missing update is named with its leader
    round_, member, digest = next(i for i in inputs if i not in kept(me))
    refused = CliRunner().invoke(
        app, ["ledger", "revert", str(fed.kits[me]), "--exclude", excluded, "--out", str(tmp_path / "x"), "-q"]
    )
    assert refused.exit_code != 0
    text = " ".join(refused.output.split())
    assert f"round {round_}: the update {digest[:16]}... of {member} is not stored" in text, text
    assert f"the leader of its round ({leaders[round_]})" in text, text

    out = tmp_path / "reverted"
    args = ["ledger", "revert", str(fed.kits[me]), "--exclude", excluded, "--out", str(out), "--json"]
    args += ["--updates-from", str(fed.kits[others[0]]), "--updates-from", str(fed.state_dir(others[1]))]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "revert.json").read_text())
    # the replay of the unchanged inputs reproduced every recorded model (checked by revert), the nodes' models
    assert [r["model"] for r in report["rounds"]] == [h["model_digest"] for h in fed.history()]
    assert report["rounds_changed"] == rounds and report["final_model_digest"] != report["original_final_model_digest"]
    # each update was read from the first folder holding it: PATH's, then the --updates-from folders in order
    holders = {n: set(kept(n)) for n in [me, *others]}
    first = [next(n for n in holders if i in holders[n]) for i in inputs]
    used = {s["ledger"]: s["updates"] for s in report["update_sources"]}
    assert used == {str(fed.state_dir(n) / "ledger"): first.count(n) for n in holders}
    verify_ledger(out)
