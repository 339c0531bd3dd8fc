"""Tests of the members a checkpoint is checked against: those registered at its size, by replicas and by
``ledger verify`` alike, however the membership changed after that size."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.checkpoint import Checkpoint, Cosignature, TreeHead, sign_tree_head
from fedswarm.ledger.entries import Body, Entry, MemberAdmitted, MemberRemoved, SignedEntry
from fedswarm.ledger.replica import ForkDetected, Replica
from fedswarm.ledger.simkeys import SimulationKeys
from fedswarm.ledger.state import LedgerState
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import LedgerVerificationError, verify_ledger
from fedswarm.ledger.writer import LedgerWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import build_ledger

KEYS = SimulationKeys(0)
SIZE = 25
"""Entries of the built ledger (3 rounds of 4 members): the checkpoints below are of this size."""
M = [f"member-{m:05d}" for m in range(8)]
"""Members 0-3 are the founding ones; 4-7 are admitted later by the tests."""
RENEWED = "member-00001-renewed"
"""The name whose simulation key member 1 gets when it is admitted again."""


def _public(key_name: str) -> bytes:
    return KEYS.member(key_name).public_key().raw


def _admit(name: str, key_name: str | None = None) -> Body:
    return MemberAdmitted(name, _public(key_name or name), "joined later")


def _remove(name: str) -> Body:
    return MemberRemoved(name, "left")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder: Path = build_ledger(tmp_path_factory.mktemp("membership") / "ledger", rounds=3, members=4)[0]
    with LedgerStore(folder, readonly=True) as store:
        assert store.size == SIZE
    return folder


def _grown(pristine: Path, folder: Path, later: Sequence[Body]) -> Path:
    """A copy of the built ledger with ``later`` entries (by the coordinator) after its ``SIZE`` entries."""
    shutil.copytree(pristine, folder)
    with LedgerStore(folder) as store:
        writer = LedgerWriter(store)
        for body in later:
            writer.add(body, author="coordinator", key=KEYS.coordinator())
        writer.flush()
    return folder


def _checkpoint(folder: Path, size: int, *, signer: str, cosigners: Sequence[tuple[str, str]]) -> Checkpoint:
    """A checkpoint of the log's first ``size`` entries, signed by ``signer`` (with its own simulation key)
    and cosigned by ``(member, key name)`` pairs."""
    with LedgerStore(folder, readonly=True) as store:
        head = TreeHead("test", size, store.root(size), 1_700_000_000_999)
    key = KEYS.coordinator() if signer == "coordinator" else KEYS.member(signer)
    checkpoint = sign_tree_head(head, signer=signer, key=key)
    message = head.encode()
    return checkpoint.with_cosignatures(
        [Cosignature(member, _public(name), KEYS.member(name).sign(message)) for member, name in cosigners]
    )


def _replica_of(folder: Path, target: Path, *, size: int | None = None) -> Replica:
    """A replica holding the first ``size`` entries of ``folder`` (default: all) and no checkpoint."""
    with LedgerStore(folder, readonly=True) as source:
        records = [record for _, record in source.records()][:size]
    store = LedgerStore(target, create=True, federation="test")
    store.append_many([SignedEntry.from_record(r) for r in records])
    return Replica(store)


def _replica_verdict(replica: Replica, checkpoint: Checkpoint, *, checked: bool = False) -> str:
    """``"final"`` when the replica accepts and stores the checkpoint, else why it refuses it."""
    try:
        stored = replica.accept_final(checkpoint, cosignatures_checked=checked)
    except ForkDetected:
        raise
    except VerificationError as exc:
        return str(exc)
    assert stored, "a new checkpoint of the local log is stored"
    assert replica.alarm is None
    return "final"


def _verify_verdict(folder: Path, checkpoint: Checkpoint) -> str:
    """``"final"`` when ``ledger verify`` counts the stored checkpoint final, else why not."""
    with LedgerStore(folder) as store:
        checkpoint_id = store.add_checkpoint(checkpoint)
    try:
        report = verify_ledger(folder, workers=1)
    except LedgerVerificationError as exc:
        assert f"checkpoint #{checkpoint_id} (size {checkpoint.head.size})" in str(exc)
        return str(exc)
    status = report.checkpoints[checkpoint_id - 1]
    assert (status.size, status.time) == (checkpoint.head.size, checkpoint.head.time)
    return "final" if status.final else f"not final: {status.cosigners} of {status.members}"


@dataclass(frozen=True)
class Case:
    later: tuple[Body, ...]
    signer: str
    cosigners: tuple[tuple[str, str], ...]
    verdict: str  # "final", or a fragment of both refusals
    checked: bool = False  # the replica's caller checked the cosignatures (it gathered them)


def _by(*names: str) -> tuple[tuple[str, str], ...]:
    return tuple((name, name) for name in names)


CASES = {
    # 3 of the 4 members registered at 25 is a quorum there; after 2 admissions 3 of 6 is not.
    "quorum_of_its_size_after_admissions": Case(
        (_admit(M[4]), _admit(M[5])), "coordinator", _by(M[0], M[1], M[2]), "final"
    ),
    "quorum_of_its_size_counted_after_admissions": Case(
        (_admit(M[4]), _admit(M[5])), "coordinator", _by(M[0], M[1], M[2]), "final", checked=True
    ),
    # member 1 was registered at 25: its cosignature counts although it was removed since.
    "cosigner_removed_later_counts": Case((_remove(M[1]),), "coordinator", _by(M[0], M[1], M[2]), "final"),
    "cosigner_removed_later_is_counted": Case(
        (_remove(M[1]), _remove(M[2])), "coordinator", _by(M[0], M[1], M[2]), "final", checked=True
    ),
    # member 1 came back with a new key: at 25 its key was the old one.
    "cosigner_with_its_key_of_that_size": Case(
        (_remove(M[1]), _admit(M[1], RENEWED)), "coordinator", _by(M[0], M[1], M[2]), "final"
    ),
    "cosigner_with_its_later_key_is_refused": Case(
        (_remove(M[1]), _admit(M[1], RENEWED)),
        "coordinator",
        ((M[0], M[0]), (M[1], RENEWED), (M[2], M[2])),
        "cosignature by member-00001: the key is not the member's registered key",
    ),
    # 5 of the 7 members registered now would be a quorum; only 2 of them were registered at 25.
    "cosigners_admitted_later_cannot_count": Case(
        (_admit(M[4]), _admit(M[5]), _admit(M[6])),
        "coordinator",
        _by(M[0], M[1], M[4], M[5], M[6]),
        "cosignature by member-00004: not a registered member at that size",
    ),
    # the signer must have been registered at 25, whether it was admitted or removed since.
    "signer_admitted_later_is_refused": Case(
        (_admit(M[4]),),
        M[4],
        _by(M[0], M[1], M[2], M[3]),  # 4 of the 5 members registered now would be a quorum
        "signed by member-00004, who is neither the coordinator nor a member registered at size 25",
    ),
    "signer_removed_later_is_accepted": Case((_remove(M[1]),), M[1], _by(M[0], M[1], M[2]), "final"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_replica_and_verify_check_a_checkpoint_against_the_members_of_its_size(
    name: str, pristine: Path, tmp_path: Path
) -> None:
    case = CASES[name]
    folder = _grown(pristine, tmp_path / "ledger", case.later)
    checkpoint = _checkpoint(folder, SIZE, signer=case.signer, cosigners=case.cosigners)
    replica = _replica_of(folder, tmp_path / "replica")
    assert replica.size == SIZE + len(case.later)
    mine = _replica_verdict(replica, checkpoint, checked=case.checked)
    theirs = _verify_verdict(folder, checkpoint)
    if case.verdict == "final":
        assert (mine, theirs) == ("final", "final")
        assert replica.latest == checkpoint
    else:
        assert case.verdict in mine and case.verdict in theirs, (mine, theirs)
        assert replica.latest is None and replica.alarm is None
    replica.store.close()


def test_cosigners_admitted_later_are_not_counted_when_the_caller_checked_them(pristine: Path, tmp_path: Path) -> None:
    folder = _grown(pristine, tmp_path / "ledger", [_admit(M[4]), _admit(M[5]), _admit(M[6])])
    checkpoint = _checkpoint(folder, SIZE, signer="coordinator", cosigners=_by(M[0], M[1], M[4], M[5], M[6]))
    replica = _replica_of(folder, tmp_path / "replica")
    verdict = _replica_verdict(replica, checkpoint, checked=True)
    assert "is not final: 2 of 4 members registered at that size cosigned, 3 are needed" in verdict
    assert "not a registered member at that size" in _verify_verdict(folder, checkpoint)
    replica.store.close()


def test_each_size_keeps_its_own_members(pristine: Path, tmp_path: Path) -> None:
    later = [_admit(M[4]), _remove(M[1]), _admit(M[5]), _remove(M[4]), _admit(M[1], RENEWED), _admit(M[4], M[7])]
    folder = _grown(pristine, tmp_path / "ledger", later)
    replica = _replica_of(folder, tmp_path / "replica")
    founders = {name: _public(name) for name in M[:4]}
    expected = {
        SIZE: founders,
        SIZE + 1: {**founders, M[4]: _public(M[4])},
        SIZE + 2: {M[0]: _public(M[0]), M[2]: _public(M[2]), M[3]: _public(M[3]), M[4]: _public(M[4])},
        SIZE + 4: {M[0]: _public(M[0]), M[2]: _public(M[2]), M[3]: _public(M[3]), M[5]: _public(M[5])},
        SIZE + 6: {**founders, M[1]: _public(RENEWED), M[4]: _public(M[7]), M[5]: _public(M[5])},
    }
    for size, members in expected.items():
        membership = replica.membership(size)
        assert dict(membership.members) == members, size
        assert membership.coordinator == "coordinator" and membership.quorum == (2, 3)
        assert membership.coordinator_key == KEYS.coordinator().public_key().raw
    assert dict(replica.membership(SIZE + 100).members) == expected[SIZE + 6]  # beyond the log: now
    assert replica.membership(0).members == {} and replica.membership(0).coordinator is None
    assert dict(replica.membership(1).members) == founders
    assert dict(replica.state.membership().members) == replica.state.members()
    replica.store.close()


def test_a_state_copy_keeps_its_own_registry(pristine: Path) -> None:
    state = LedgerState()
    with LedgerStore(pristine, readonly=True) as store:
        for _seq, record in store.records():
            state.apply(SignedEntry.from_record(record).entry)
    copy = state.copy()
    copy.apply(Entry("test", SIZE, "coordinator", KEYS.coordinator().public_key().raw, _admit(M[4])))
    assert M[4] in copy.membership(SIZE + 1).members and copy.size == SIZE + 1
    assert M[4] not in state.membership(SIZE + 1).members and M[4] not in state.members()
    assert state.size == SIZE


def test_a_checkpoint_beyond_the_log_is_checked_against_the_members_now(pristine: Path, tmp_path: Path) -> None:
    folder = _grown(pristine, tmp_path / "ledger", [_admit(M[4]), _admit(M[5])])
    lagging = _replica_of(folder, tmp_path / "replica", size=SIZE)
    with LedgerStore(folder, readonly=True) as peer:
        proof = peer.consistency_proof(SIZE, SIZE + 2)
        records = [record for _, record in peer.records()][SIZE:]
    # Beyond the lagging log, the 4 members registered there are the members: 3 of them are a quorum.
    by_founders = _checkpoint(folder, SIZE + 2, signer="coordinator", cosigners=_by(M[0], M[1], M[2]))
    assert lagging.accept_final(by_founders, proof=proof) is False  # checked, not stored
    # Member 4 signs a checkpoint that includes its admission: refused from beyond, accepted on catching up.
    by_newcomer = _checkpoint(folder, SIZE + 2, signer=M[4], cosigners=_by(M[0], M[1], M[2], M[4], M[5]))
    with pytest.raises(VerificationError, match="neither the coordinator nor"):
        lagging.receive_checkpoint(by_newcomer, proof=proof)
    lagging.append(records, checkpoint=by_newcomer)
    assert lagging.size == SIZE + 2 and lagging.store.latest_checkpoint() == by_newcomer and lagging.alarm is None
    # Now that the log holds the admissions, 3 cosigners of 6 members are not a quorum at that size.
    with pytest.raises(VerificationError, match="is not final: 3 of 6"):
        lagging.accept_final(by_founders)
    assert _verify_verdict(folder, by_newcomer) == "final"
    lagging.store.close()
