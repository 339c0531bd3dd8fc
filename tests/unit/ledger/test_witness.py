"""Cosigned heads and their wire form, gathering them into final checkpoints, and peers' views of a replica."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.checkpoint import Checkpoint, CosignedHead, TreeHead, cosign_head, verify_final
from fedswarm.ledger.entries import SignedEntry
from fedswarm.ledger.replica import ForkDetected, Replica
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.witness import Coordinator, WitnessPool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import build_ledger

KEYS = {n: SigningKey.from_seed(hashlib.sha256(n.encode()).digest()) for n in ("m0", "m1", "m2", "m3")}
REGISTRY = {n: k.public_key().raw for n, k in KEYS.items()}
# on the network the coordinator is the founding member m0 under a name of its own, with m0's key
COORDINATOR = Coordinator("coordinator@m0", REGISTRY["m0"], "m0")
HEAD = TreeHead("fed", 12, b"\x07" * 32, 1234)


def _pool(*heads: TreeHead, signer: str = "m0") -> WitnessPool:
    pool = WitnessPool(signer=signer)
    for head in heads:
        pool.record(head, due=True)
    return pool


def _add(pool: WitnessPool, member: str, head: TreeHead = HEAD) -> Checkpoint | None:
    item = cosign_head(head, member=member, key=KEYS[member])
    return pool.add(item, registry=REGISTRY, coordinator=COORDINATOR, quorum=(2, 3))


def test_wire_forms_round_trip_and_refuse_other_bytes() -> None:
    item = cosign_head(HEAD, member="m1", key=KEYS["m1"])
    assert CosignedHead.decode(item.encode()) == item
    item.verify(REGISTRY["m1"])
    with pytest.raises(VerificationError, match="registered key"):
        item.verify(REGISTRY["m2"])
    with pytest.raises(VerificationError, match="does not parse"):
        CosignedHead.decode(item.encode().replace(b"cosigned-head", b"checkpoint"))
    pool = _pool(HEAD)
    for member in ("m0", "m1", "m2"):
        final = _add(pool, member)
    assert final is not None
    assert Checkpoint.decode(final.encode()) == final
    with pytest.raises(VerificationError, match="does not parse"):
        Checkpoint.decode(final.encode()[:-2])


def test_a_quorum_with_the_founding_member_makes_the_coordinators_checkpoint() -> None:
    pool = _pool(HEAD, signer="m2")
    assert _add(pool, "m1") is None and _add(pool, "m0") is None
    final = _add(pool, "m3")  # 3 of 4 with m0
    assert final is not None and pool.latest_final == final
    assert final.signer == "coordinator@m0" and final.key == REGISTRY["m0"]
    assert final.signature == cosign_head(HEAD, member="m0", key=KEYS["m0"]).cosignature.signature
    assert [c.member for c in final.cosignatures] == ["m0", "m1", "m3"]
    final.verify_signature(signer_key=REGISTRY["m0"])
    verify_final(final, REGISTRY)
    assert _add(pool, "m2") is None  # nothing new after finality


def test_without_the_founding_member_the_gathering_member_signs() -> None:
    pool = _pool(HEAD, signer="m2")
    assert _add(pool, "m1") is None and _add(pool, "m3") is None
    final = _add(pool, "m2")  # m0, the founding member, never cosigned
    assert final is not None and final.signer == "m2" and final.key == REGISTRY["m2"]
    assert final.signature == cosign_head(HEAD, member="m2", key=KEYS["m2"]).cosignature.signature
    assert {c.member for c in final.cosignatures} == {"m1", "m2", "m3"}
    final.verify_signature(signer_key=REGISTRY["m2"])
    verify_final(final, REGISTRY)


def test_a_quorum_without_the_founder_or_this_node_makes_no_checkpoint_here() -> None:
    pool = _pool(HEAD, signer="m2")
    assert _add(pool, "m1") is None and _add(pool, "m3") is None
    assert (
        pool.add(
            cosign_head(HEAD, member="m0", key=KEYS["m1"]),
            registry={**REGISTRY, "m0": REGISTRY["m1"]},
            coordinator=COORDINATOR,
            quorum=(2, 3),
        )
        is None
    )  # m0 registered with another key than the coordinator's: not the coordinator's signature
    assert pool.latest_final is None


def test_a_cosignature_sent_again_is_not_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = _pool(HEAD, signer="m1")
    item = cosign_head(HEAD, member="m2", key=KEYS["m2"])
    assert pool.add(item, registry=REGISTRY, coordinator=COORDINATOR, quorum=(2, 3)) is None
    calls = []
    monkeypatch.setattr(CosignedHead, "verify", lambda self, key: calls.append(key))
    assert pool.add(item, registry=REGISTRY, coordinator=COORDINATOR, quorum=(2, 3)) is None
    assert calls == []
    other = cosign_head(HEAD, member="m3", key=KEYS["m3"])
    pool.add(other, registry=REGISTRY, coordinator=COORDINATOR, quorum=(2, 3))
    assert calls == [REGISTRY["m3"]]


def test_too_few_cosigners_and_heads_not_due_make_no_checkpoint() -> None:
    pool = _pool(HEAD)
    assert _add(pool, "m0") is None and _add(pool, "m1") is None  # 2 of 4: more than 2/3 needs 3
    assert _add(pool, "m2") is not None
    other = TreeHead("fed", 20, b"\x08" * 32, 99)
    pool.record(other, due=False)
    assert all(_add(pool, m, other) is None for m in REGISTRY)


def test_a_cosignature_of_another_root_is_a_fork_and_bad_ones_are_refused() -> None:
    pool = _pool(HEAD)
    with pytest.raises(ForkDetected, match="m2 cosigned a log of 12 entries with root 0808"):
        _add(pool, "m2", replace(HEAD, root=b"\x08" * 32))
    with pytest.raises(VerificationError, match="time 99, not 1234"):
        _add(pool, "m2", replace(HEAD, time=99))
    stranger = cosign_head(HEAD, member="m9", key=KEYS["m1"])
    with pytest.raises(VerificationError, match="m9, who is not a registered member"):
        pool.add(stranger, registry=REGISTRY, coordinator=COORDINATOR, quorum=(2, 3))
    forged = CosignedHead(HEAD, replace(cosign_head(HEAD, member="m1", key=KEYS["m2"]).cosignature, key=REGISTRY["m1"]))
    with pytest.raises(VerificationError, match="does not verify"):
        pool.add(forged, registry=REGISTRY, coordinator=COORDINATOR, quorum=(2, 3))
    assert _add(pool, "m1", replace(HEAD, size=3)) is None  # a head this node does not know: ignored


def test_peers_views_of_a_replica(tmp_path: Path) -> None:
    folder = build_ledger(tmp_path / "honest", rounds=3, members=4, accuracies=[0.5, 0.6, 0.7])[0]
    with LedgerStore(folder, readonly=True) as source:
        records = [r for _, r in source.records()]
        size, root, proof = source.size, source.root(), source.consistency_proof(10)
        root10 = source.root(10)
    local = LedgerStore(tmp_path / "local", create=True, federation="test")
    local.append_many([SignedEntry.from_record(r) for r in records[:10]])
    replica = Replica(local)
    replica.check_peer("p", 10, root10)  # the same log
    replica.check_peer("p", size, root, proof=proof)  # a longer one that extends it
    replica.extend(records[10:12])  # appended since this node asked: the proof still starts at 10
    replica.check_peer("p", size, root, proof=proof, base=10)
    with pytest.raises(VerificationError, match="entry 12"):
        replica.extend([records[13]])  # a gap: the rules refuse the sequence number
    assert replica.size == 12
    with pytest.raises(ForkDetected, match="p holds another history: its 8 entries hash to 0909"):
        replica.check_peer("p", 8, b"\x09" * 32)
    with pytest.raises(ForkDetected):
        replica.extend(records[12:13])  # halted
