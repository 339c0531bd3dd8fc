"""Tests of chain anchoring on the embedded chain (eth-tester with py-evm) and of the Vyper contract."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("web3")
pytest.importorskip("eth_tester")

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.anchor import (
    ANCHORS_FILE,
    SOURCE,
    AnchorStatus,
    Chain,
    anchor_ledger,
    contract_artifact,
    federation_id,
    member_id,
    open_chain,
    open_ledger_chain,
    verify_anchors,
)
from fedswarm.ledger.checkpoint import TreeHead, cosign, sign_tree_head
from fedswarm.ledger.entries import MemberRemoved
from fedswarm.ledger.simkeys import SimulationKeys
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger
from fedswarm.ledger.writer import LedgerWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import build_ledger


def test_committed_bytecode_is_what_the_vyper_source_compiles_to() -> None:
    vyper = pytest.importorskip("vyper")
    compiled = vyper.compile_code(SOURCE.read_text(encoding="utf-8"), output_formats=["abi", "bytecode"])
    artifact = contract_artifact()
    assert artifact["bytecode"] == compiled["bytecode"]
    assert artifact["abi"] == compiled["abi"]
    assert artifact["compiler"] == f"vyper {vyper.__version__}"


def test_anchor_then_verify_on_a_replayed_embedded_chain(tmp_path: Path) -> None:
    folder, _ = build_ledger(tmp_path / "a", rounds=2, members=3, accuracies=[0.5, 0.6])
    status = anchor_ledger(folder, chain=open_ledger_chain(folder))
    with LedgerStore(folder, readonly=True) as store:
        assert (status.index, status.size, status.root) == (0, store.size, store.root().hex())
        fid = federation_id(store)
    receipts = json.loads((folder / ANCHORS_FILE).read_text())
    target = receipts["targets"]["embedded"]
    assert target["federation_id"] == fid.hex() and len(target["transactions"]) == 4
    # A new process would start a new embedded chain: replaying the saved transactions restores it.
    chain = open_ledger_chain(folder)
    assert [s.size for s in verify_anchors(folder, chain=chain)] == [status.size]
    contract = chain.contract(target["contract"])
    keys = SimulationKeys(0)
    assert bytes(contract.functions.member_key(fid, member_id("member-00001")).call()) == (
        keys.member("member-00001").public_key().raw
    )
    # Anchoring again without news adds nothing; after new entries and a checkpoint it adds one.
    assert anchor_ledger(folder, chain=chain).index == 0
    with LedgerStore(folder) as store:
        writer = LedgerWriter(store)
        writer.add(MemberRemoved("member-00002", "left"), author="coordinator", key=keys.coordinator())
        writer.flush()
    assert verify_ledger(folder).unwitnessed == 1
    second = _checkpoint_and_anchor(folder, chain)
    assert second.index == 1
    assert [s.index for s in verify_anchors(folder, chain=open_ledger_chain(folder))] == [0, 1]


def _checkpoint_and_anchor(folder: Path, chain: Chain) -> AnchorStatus:
    keys = SimulationKeys(0)
    with LedgerStore(folder) as store:
        head = TreeHead("test", store.size, store.root(), 1_700_000_000_001)
        checkpoint = sign_tree_head(head, signer="coordinator", key=keys.coordinator())
        members = ["member-00000", "member-00001"]
        store.add_checkpoint(
            checkpoint.with_cosignatures([cosign(checkpoint, member=m, key=keys.member(m)) for m in members])
        )
    return anchor_ledger(folder, chain=chain)


def test_a_rewritten_ledger_no_longer_matches_its_anchor(tmp_path: Path) -> None:
    honest, _ = build_ledger(tmp_path / "honest", rounds=3, members=3, accuracies=[0.5, 0.6, 0.7])
    anchor_ledger(honest, chain=open_ledger_chain(honest))
    # The forger rewrites round 3's evaluation and re-signs everything with the (public) simulation keys:
    # the forged copy verifies on its own, shares the federation id, but not the anchored root.
    forged, _ = build_ledger(tmp_path / "forged", rounds=3, members=3, accuracies=[0.5, 0.6, 0.99])
    shutil.copy(honest / ANCHORS_FILE, forged / ANCHORS_FILE)
    verify_ledger(forged)
    with LedgerStore(honest, readonly=True) as a, LedgerStore(forged, readonly=True) as b:
        assert federation_id(a) == federation_id(b) and a.root() != b.root()
    with pytest.raises(VerificationError, match=r"anchored checkpoint #0 \(size \d+\) does not match the local log"):
        verify_anchors(forged, chain=open_ledger_chain(forged))
    with pytest.raises(VerificationError, match="does not match the local log"):
        anchor_ledger(forged, chain=open_ledger_chain(forged))  # the forger cannot anchor over the old root
    verify_anchors(honest, chain=open_ledger_chain(honest))


def test_a_truncated_copy_is_caught(tmp_path: Path) -> None:
    full, _ = build_ledger(tmp_path / "full", rounds=2, members=2)
    anchor_ledger(full, chain=open_ledger_chain(full))
    short, _ = build_ledger(tmp_path / "short", rounds=1, members=2)
    shutil.copy(full / ANCHORS_FILE, short / ANCHORS_FILE)
    with pytest.raises(VerificationError, match="covers 13 entries, the local log has only 7"):
        verify_anchors(short, chain=open_ledger_chain(short))


def test_the_contract_enforces_operator_and_monotone_sizes() -> None:
    chain = open_chain()
    contract = chain.contract(chain.deploy())
    fid = b"\x01" * 32
    chain.send(contract.functions.register_federation(fid))
    chain.send(contract.functions.anchor(fid, 10, b"\x02" * 32))
    with pytest.raises(VerificationError, match="must not decrease"):
        chain.send(contract.functions.anchor(fid, 9, b"\x03" * 32))
    with pytest.raises(VerificationError, match="already registered"):
        chain.send(contract.functions.register_federation(fid))
    chain.send(contract.functions.register_members(fid, [b"\x04" * 32], [b"\x05" * 32]))
    with pytest.raises(VerificationError, match="another key"):
        chain.send(contract.functions.register_members(fid, [b"\x04" * 32], [b"\x06" * 32]))
    other = chain.w3.eth.accounts[1]
    with pytest.raises(Exception, match="operator"):
        contract.functions.anchor(fid, 11, b"\x02" * 32).transact({"from": other})
    assert contract.functions.anchor_count(fid).call() == 1
    assert contract.functions.member_count(fid).call() == 1


def test_verify_without_anchors_says_so(tmp_path: Path) -> None:
    folder, _ = build_ledger(tmp_path / "a", rounds=1, members=2)
    with pytest.raises(VerificationError, match="no anchor contract known"):
        verify_anchors(folder, chain=open_chain())
