"""Revert across folders: a history whose retained updates are spread over several copies of its ledger (as
a swarm spreads them over the rounds' leaders) reverts exactly as one folder holding them all; an altered
update in another folder, or a folder of another history, is refused naming it."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedswarm.cli.revert import revert_run
from fedswarm.codec.tensors import digest, load
from fedswarm.ledger.audit import load_audit
from fedswarm.ledger.entries import SignedEntry
from fedswarm.ledger.revert import RevertError, load_round_inputs
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.update_folders import UpdateFolderError, open_update_folders
from fedswarm.ledger.verify import verify_ledger
from fedswarm.sim.engine import run_simulation
from fedswarm.spec.schema import parse_spec

ROUNDS = 3
X = "member-00002"


def _raw(*, seed: int = 5, name: str = "rvf") -> dict[str, Any]:
    return {
        "federation": {"name": name, "members": 5, "rounds": ROUNDS, "seed": seed},
        "data": {"dataset": "digits", "partition": "dirichlet", "alpha": 1.0},
        "task": {"name": "numpy_softmax"},
        "strategy": {"name": "fedadam", "server_lr": 0.05, "min_members": 2},
        "baselines": {"local_only": False, "centralized": False},
        "evaluation": {"members": "none"},
    }  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated run: its ledger retained every update (the folder that holds them all)."""
    out = tmp_path_factory.mktemp("revert-folders") / "run"
    run_simulation(parse_spec(_raw()), out_dir=out)
    return out


def _updates_by_round(run: Path) -> dict[int, list[str]]:
    log = load_audit(run)
    return {n: list(r.aggregate.inputs) for n, r in log.rounds.items() if r.aggregate is not None}


def _copy(
    run: Path,
    target: Path,
    *,
    keep: Callable[[str], bool],
    size: int | None = None,
    alter: str | None = None,
    spec: bool = False,
) -> Path:
    """A copy of the run's ledger in ``target/ledger``: its first ``size`` entries (all by default) and their
    checkpoints, the models, and the retained updates for which ``keep(digest)`` holds; the update ``alter``
    is stored with one byte changed under its original name."""
    updates = {d for ds in _updates_by_round(run).values() for d in ds}
    with LedgerStore(run / "ledger", readonly=True) as source:
        records = [SignedEntry.from_record(r) for _, r in source.records(0, size)]
        objects = []
        for name in source.objects.digests():
            if name in updates and not keep(name):
                continue
            data = source.objects.get_bytes(name)
            if name == alter:
                data = data[:-1] + bytes([data[-1] ^ 1])
            objects.append((name, data))
        checkpoints = [c for c in source.checkpoints() if c.head.size <= len(records)]
        with LedgerStore(target / "ledger", create=True, federation=source.federation) as copy:
            copy.append_many(records, objects=objects)
            for checkpoint in checkpoints:
                copy.add_checkpoint(checkpoint)
    if spec:
        shutil.copy(run / "spec.toml", target / "spec.toml")
    return target


def _led_by(run: Path, node: int, nodes: int) -> set[str]:
    """The updates of the rounds 'node' led when leaders rotate over ``nodes`` nodes (round r: (r - 1) % nodes)."""
    return {d for r, ds in _updates_by_round(run).items() if (r - 1) % nodes == node for d in ds}


def _models(folder: Path) -> list[str]:
    return [digest(load(p)) for p in sorted((folder / "models").glob("round-*.safetensors"))]


def test_updates_spread_over_folders_revert_like_one_folder_holding_all(run: Path, tmp_path: Path) -> None:
    reference = revert_run(run, exclude=X, from_round=1, out=tmp_path / "ref")
    led = [_led_by(run, k, 3) for k in range(3)]
    nodes = [_copy(run, tmp_path / f"node-{k}", keep=led[k].__contains__, spec=k == 0) for k in range(3)]
    assert all(len(keys) > 0 for keys in led)
    verify_ledger(nodes[0])  # a copy without the others' updates is a valid ledger

    seen: list[tuple[str, int, int]] = []
    report = revert_run(
        nodes[0],
        exclude=X,
        from_round=1,
        out=tmp_path / "rev",
        updates_from=[nodes[1], nodes[2] / "ledger", nodes[1]],  # a ledger folder works; a repeat is skipped
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )
    assert _models(tmp_path / "rev") == _models(tmp_path / "ref") != _models(run)
    assert [r["reverted_model"] for r in report["rounds"]] == [r["reverted_model"] for r in reference["rounds"]]
    assert report["final_model_digest"] == reference["final_model_digest"]
    verify_ledger(tmp_path / "rev" / "ledger")
    counts = [source["updates"] for source in report["update_sources"]]
    assert counts == [len(keys) for keys in led]
    assert [s["ledger"] for s in report["update_sources"]] == [str(n / "ledger") for n in nodes]
    for stage in ("read", "replay", "revert", "evaluate"):
        assert [(d, t) for s, d, t in seen if s == stage] == [(r, ROUNDS) for r in range(1, ROUNDS + 1)], stage


def test_a_shorter_consistent_copy_is_searched_too(run: Path, tmp_path: Path) -> None:
    """A node that stopped early holds a prefix of the history: still the same history."""
    second = _updates_by_round(run)[2]
    node = _copy(run, tmp_path / "a", keep=lambda d: d not in second, spec=True)
    log = load_audit(run)
    assert log.rounds[2].aggregate_seq is not None
    prefix = _copy(run, tmp_path / "b", keep=lambda d: d in second, size=log.rounds[2].aggregate_seq + 1)
    folders = open_update_folders(load_audit(node), [prefix])
    assert folders[0].size == log.rounds[2].aggregate_seq + 1 < log.size
    report = revert_run(node, exclude=X, from_round=2, out=tmp_path / "rev", updates_from=[prefix])
    assert report["update_sources"][1]["updates"] == len(second)


def test_a_missing_update_names_the_round_the_member_and_the_leader(run: Path, tmp_path: Path) -> None:
    node = _copy(run, tmp_path / "a", keep=lambda d: d in _led_by(run, 0, 3), spec=True)
    other = _copy(run, tmp_path / "b", keep=lambda d: d in _led_by(run, 1, 3))
    log = load_audit(node)
    third = log.rounds[3].aggregate
    assert third is not None
    with pytest.raises(RevertError) as caught:
        revert_run(node, exclude=X, from_round=1, out=tmp_path / "rev", updates_from=[other])
    text = str(caught.value)
    assert f"round 3: the update {third.inputs[0][:16]}... of {third.contributors[0]} is not stored" in text, text
    assert "nor in the 1 other folder(s) given" in text
    # written by real nodes, the message names who keeps the update: its author and the round's leader
    log.created = dataclasses.replace(log.created, keys="provisioned")
    opened = log.rounds[3].opened
    assert opened is not None
    with pytest.raises(RevertError) as caught:
        load_round_inputs(log, schema=log.objects.get_parameters(log.created.initial_model).schema)
    text = str(caught.value)
    assert f"round 2: the update {log.rounds[2].aggregate.inputs[0][:16]}..." in text  # type: ignore[union-attr]
    assert f"kept only by its author ({log.rounds[2].aggregate.contributors[0]})" in text  # type: ignore[union-attr]
    assert f"the leader of its round ({opened.leader})" in text and "--updates-from" in text


def test_an_altered_update_in_another_folder_is_refused_naming_folder_and_digest(run: Path, tmp_path: Path) -> None:
    node = _copy(run, tmp_path / "a", keep=lambda d: d in _led_by(run, 0, 2), spec=True)
    victim = sorted(_led_by(run, 1, 2))[0]
    other = _copy(run, tmp_path / "b", keep=lambda d: d in _led_by(run, 1, 2), alter=victim)
    with LedgerStore(other / "ledger", readonly=True) as store:  # stored under its name, with other bytes
        assert store.objects.has(victim)
        assert hashlib.sha256(store.objects.packed.get(victim) or b"").hexdigest() != victim  # type: ignore[union-attr]
    with pytest.raises(UpdateFolderError) as caught:
        revert_run(node, exclude=X, from_round=1, out=tmp_path / "rev", updates_from=[other])
    text = str(caught.value)
    assert f"update {victim} in {other / 'ledger'} hashes to" in text and "altered copy" in text, text
    assert not (tmp_path / "rev").exists()


def test_a_folder_of_another_history_is_refused(run: Path, tmp_path: Path) -> None:
    node = _copy(run, tmp_path / "a", keep=lambda d: False, spec=True)
    rerun = tmp_path / "rerun"  # the same federation name, another seed: another history
    run_simulation(parse_spec(_raw(seed=6)), out_dir=rerun)
    with pytest.raises(UpdateFolderError) as caught:
        revert_run(node, exclude=X, from_round=1, out=tmp_path / "rev", updates_from=[rerun])
    text = str(caught.value)
    assert text.startswith(f"updates folder {rerun}: its ledger is not the same history") and "roots differ" in text
    other = tmp_path / "other"
    run_simulation(parse_spec(_raw(name="another")), out_dir=other)
    with pytest.raises(UpdateFolderError, match=f"updates folder {other}: its ledger is of federation 'another'"):
        open_update_folders(load_audit(node), [other])
    with pytest.raises(UpdateFolderError, match=f"updates folder {tmp_path}: .*no ledger found"):
        open_update_folders(load_audit(node), [tmp_path])
