"""Tests of replicas: consistency with peers' checkpoints, catching up, and the fork alarm."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.checkpoint import Checkpoint, TreeHead, sign_tree_head, verify_cosignatures
from fedswarm.ledger.entries import SignedEntry
from fedswarm.ledger.replica import ForkDetected, Replica
from fedswarm.ledger.simkeys import SimulationKeys
from fedswarm.ledger.store import LedgerStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import build_ledger

KEYS = SimulationKeys(0)


def _records(folder: Path) -> list[bytes]:
    with LedgerStore(folder, readonly=True) as store:
        return [record for _, record in store.records()]


def _copy(records: list[bytes], folder: Path) -> LedgerStore:
    store = LedgerStore(folder, create=True, federation="test")
    store.append_many([SignedEntry.from_record(r) for r in records])
    return store


def _head(store: LedgerStore, size: int | None = None) -> Checkpoint:
    n = store.size if size is None else size
    return sign_tree_head(TreeHead("test", n, store.root(n), 1), signer="coordinator", key=KEYS.coordinator())


@pytest.fixture
def honest(tmp_path: Path) -> Path:
    return build_ledger(tmp_path / "honest", rounds=3, members=4, accuracies=[0.5, 0.6, 0.7])[0]


@pytest.fixture
def forked(tmp_path: Path) -> Path:
    # Same seed, so same keys and the same first two rounds; round 3 reports another accuracy.
    return build_ledger(tmp_path / "forked", rounds=3, members=4, accuracies=[0.5, 0.6, 0.1])[0]


def test_same_history_is_accepted_and_a_lagging_replica_catches_up(honest: Path, tmp_path: Path) -> None:
    records = _records(honest)
    lagging = _copy(records[:10], tmp_path / "b")
    replica = Replica(lagging)
    with LedgerStore(honest, readonly=True) as peer:
        latest = peer.latest_checkpoint()
        assert latest is not None
        replica.receive_checkpoint(latest, proof=peer.consistency_proof(10, latest.head.size))
        replica.receive_checkpoint(_head(peer, 5))
        replica.append(records[10 : latest.head.size], checkpoint=latest)
        assert lagging.root() == peer.root()
    assert replica.latest is not None and replica.latest.head.size == len(records)
    assert replica.alarm is None
    lagging.close()


def test_a_checkpoint_of_another_history_raises_the_alarm_and_halts(honest: Path, forked: Path, tmp_path: Path) -> None:
    mine = _copy(_records(honest), tmp_path / "mine")
    replica = Replica(mine)
    with LedgerStore(forked, readonly=True) as other:
        theirs = other.latest_checkpoint()
        assert theirs is not None and theirs.head.size == mine.size
        with pytest.raises(ForkDetected, match="FORK DETECTED") as caught:
            replica.receive_checkpoint(theirs)
        assert theirs in caught.value.evidence
        assert isinstance(caught.value, VerificationError)
        honest_head = _head(mine)
    with pytest.raises(ForkDetected):
        replica.receive_checkpoint(honest_head)
    with pytest.raises(ForkDetected):
        replica.cosign(honest_head, member="member-00000", key=KEYS.member("member-00000"))
    with pytest.raises(ForkDetected):
        replica.append([], checkpoint=honest_head)
    mine.close()


def test_a_larger_checkpoint_that_does_not_extend_the_log_is_a_fork(honest: Path, forked: Path, tmp_path: Path) -> None:
    shared = 23  # both histories agree up to round 3's evaluation (entry 23)
    assert _records(honest)[:shared] == _records(forked)[:shared]
    assert _records(honest)[shared] != _records(forked)[shared]
    lagging = _copy(_records(honest)[: shared + 1], tmp_path / "lagging")
    replica = Replica(lagging)
    with LedgerStore(forked, readonly=True) as other:
        theirs = other.latest_checkpoint()
        assert theirs is not None
        with pytest.raises(ForkDetected, match="does not extend"):
            replica.receive_checkpoint(theirs, proof=other.consistency_proof(shared + 1))
    lagging.close()


def test_equivocating_checkpoints_are_a_fork(honest: Path, tmp_path: Path) -> None:
    store = _copy(_records(honest)[:5], tmp_path / "r")
    replica = Replica(store)
    with LedgerStore(honest, readonly=True) as peer:
        good = _head(peer, 8)
        replica.receive_checkpoint(good, proof=peer.consistency_proof(5, 8))
        other_root = _head(peer, 9).head.root
    liar = sign_tree_head(replace(good.head, root=other_root), signer="coordinator", key=KEYS.coordinator())
    with pytest.raises(ForkDetected, match="different roots") as caught:
        replica.receive_checkpoint(liar, proof=[])
    assert set(caught.value.evidence) == {good, liar}
    store.close()


def test_a_forged_checkpoint_is_refused_without_halting(honest: Path, tmp_path: Path) -> None:
    store = _copy(_records(honest), tmp_path / "r")
    replica = Replica(store)
    forged = sign_tree_head(TreeHead("test", 3, bytes(32), 1), signer="coordinator", key=KEYS.member("member-00001"))
    with pytest.raises(VerificationError, match="registered key") as caught:
        replica.receive_checkpoint(forged)
    assert not isinstance(caught.value, ForkDetected)
    with pytest.raises(VerificationError, match="federation"):
        replica.receive_checkpoint(sign_tree_head(TreeHead("x", 3, bytes(32), 1), signer="c", key=KEYS.coordinator()))
    assert replica.alarm is None
    replica.receive_checkpoint(_head(store))
    cosignature = replica.cosign(_head(store), member="member-00001", key=KEYS.member("member-00001"))
    registry = {"member-00001": KEYS.member("member-00001").public_key().raw}
    assert verify_cosignatures(_head(store).with_cosignatures([cosignature]), registry) == {"member-00001"}
    store.close()


def test_catch_up_refuses_bad_records_and_writes_nothing(honest: Path, forked: Path, tmp_path: Path) -> None:
    records = _records(honest)
    store = _copy(records[:10], tmp_path / "r")
    replica = Replica(store)
    with LedgerStore(honest, readonly=True) as peer:
        target = _head(peer, 12)
    broken = bytearray(records[10])
    broken[-1] ^= 1
    with pytest.raises(VerificationError, match="does not verify"):
        replica.append([bytes(broken), records[11]], checkpoint=target)
    with pytest.raises(VerificationError, match="do not reach"):
        replica.append([records[10]], checkpoint=target)
    assert store.size == 10 and replica.alarm is None
    # Valid, signed records of another history do not yield the checkpoint's root.
    other = _records(forked)
    shared = 23
    store2 = _copy(records[:shared], tmp_path / "r2")
    replica2 = Replica(store2)
    with LedgerStore(honest, readonly=True) as peer:
        target2 = _head(peer, shared + 2)
    with pytest.raises(ForkDetected, match="do not yield"):
        replica2.append(other[shared : shared + 2], checkpoint=target2)
    assert store2.size == shared
    store.close()
    store2.close()


def test_an_empty_replica_needs_the_coordinator_key(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "empty", create=True, federation="test")
    with pytest.raises(VerificationError, match="coordinator's key"):
        Replica(store)
    Replica(store, coordinator_key=KEYS.coordinator().public_key().raw)
    store.close()
