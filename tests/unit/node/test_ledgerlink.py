"""Node ledger replicas: a round's entries signed by their authors, checked against the commit, appended,
cosigned into a final checkpoint; refusals with reasons; the alarm on forks and on an edited ledger."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from fedswarm.codec import tensors
from fedswarm.core.errors import VerificationError
from fedswarm.core.parameters import Parameters
from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.checkpoint import CosignedHead, cosign_head
from fedswarm.ledger.entries import AggregateCommitted, MemberKey, SignedEntry, UpdateSubmitted
from fedswarm.ledger.replica import ForkDetected
from fedswarm.ledger.verify import verify_ledger
from fedswarm.node.ledger_block import GenesisFacts
from fedswarm.node.ledgerlink import LedgerLink
from fedswarm.node.persist import NodeStore
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.wire import encode_update, sha256_hex

NAMES = ("member-00000", "member-00001", "member-00002")
FED = "ab" * 16


def _key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(name.encode()).digest())


KEYS = {n: _key(n) for n in NAMES}
PUBLIC = {n: k.public_key().raw for n, k in KEYS.items()}


def _model(value: float) -> bytes:
    return tensors.encode(Parameters({"w": np.full(4, value, dtype=np.float32)}))


INITIAL = _model(0.0)
GENESIS = GenesisFacts(
    spec_digest="11" * 32,
    population=3,
    members=tuple(MemberKey(n, PUBLIC[n]) for n in NAMES),
    strategy="fedavg",
    initial_model=sha256_hex(INITIAL),
    config_digest="22" * 32,
)


@dataclass
class Node:
    name: str
    link: LedgerLink
    blobs: NodeStore
    alarms: list[VerificationError] = field(default_factory=list)


def _node(tmp: Path, name: str) -> Node:
    blobs = NodeStore(tmp / name)
    blobs.put(INITIAL)
    alarms: list[VerificationError] = []
    link = LedgerLink(
        tmp / name / "ledger",
        me=name,
        key=KEYS[name],
        federation=FED,
        genesis=GENESIS,
        keys=lambda: PUBLIC,
        member_id=NAMES.index,
        blobs=blobs,
        due=lambda rnd: True,
        on_alarm=alarms.append,
    )
    return Node(name, link, blobs, alarms)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, Node]]:
    made = {n: _node(tmp_path, n) for n in NAMES}
    yield made
    for node in made.values():
        node.link.close()


@dataclass
class Round:
    envelope: pb.Envelope
    body: pb.Commit
    headers: dict[str, pb.UpdateHeader]


def _run_round(
    nodes: dict[str, Node],
    rnd: int,
    *,
    leader: str,
    previous: str,
    senders: tuple[str, ...] = NAMES,
    secure: bool = False,
) -> Round:
    """Members sign their updates, the leader checks them and builds the block; nobody adopts yet.

    ``secure``: the updates came as a secure sum (no update in the clear, no member statement)."""
    rows = {n: np.full(4, 0.1 * (i + 1) + rnd, dtype=np.float64) for i, n in enumerate(NAMES)}
    headers: dict[str, pb.UpdateHeader] = {}
    digests: dict[int, str] = {}
    for name in () if secure else senders:
        data = encode_update(rows[name])
        header = pb.UpdateHeader(
            base_digest=previous,
            update_digest=sha256_hex(data),
            update_size=len(data),
            num_examples=10 + NAMES.index(name),
        )
        nodes[name].link.sign_update(rnd, header, data)
        nodes[leader].link.note_update(name, rnd, header, data)
        headers[name] = header
        digests[NAMES.index(name)] = header.update_digest
    model = _model(float(rnd))
    for node in nodes.values():
        node.blobs.put(model)
    accepted = [NAMES.index(n) for n in senders]
    outcome = RoundOutcome(
        round=rnd, selected=np.arange(len(NAMES), dtype=np.int64), accepted=accepted,
        dropouts={i: "no reply" for i in range(len(NAMES)) if i not in accepted}, rejected={},
        parameters=tensors.decode(model),
        updates=np.stack([rows[NAMES[i]] for i in accepted])[: 1 if secure else None],
        weights=np.asarray([10.0 + i for i in accepted]), train_metrics={"loss": 0.5}, bytes_up=0, bytes_down=0,
        central=None, members_eval=None, seconds=0.0,
    )  # fmt: skip
    body = pb.Commit(
        previous_digest=previous,
        model_digest=sha256_hex(model),
        inputs=[pb.Input(member=NAMES[m], update_digest=d, accepted=True) for m, d in sorted(digests.items())],
    )

    def renumber(member: str, entry: bytes) -> bytes:
        return nodes[member].link.sign_renumbered(entry)

    body.ledger_entries.extend(
        nodes[leader].link.block(
            outcome, digests=digests, names=NAMES.__getitem__, strategy="fedavg", previous=previous,
            model=body.model_digest, renumber=renumber,
        )
    )  # fmt: skip
    body.checkpoint = nodes[leader].link.commit_checkpoint()
    envelope = pb.Envelope(round=rnd, sender=leader, timestamp_ms=1_000 * rnd)
    return Round(envelope, body, headers)


def _adopt_all(nodes: dict[str, Node], r: Round, *, leader: str) -> None:
    for node in nodes.values():
        node.link.adopt(r.envelope, r.body, leader=leader)
    for name, node in nodes.items():  # cosignatures travel with the next updates
        if name != leader:
            nodes[leader].link.note_cosignature(node.link.cosignature(), sender=name, wait=True)


def _three_rounds(nodes: dict[str, Node]) -> str:
    previous = GENESIS.initial_model
    for rnd, leader in ((1, NAMES[0]), (2, NAMES[1]), (3, NAMES[0])):
        r = _run_round(nodes, rnd, leader=leader, previous=previous)
        _adopt_all(nodes, r, leader=leader)
        previous = r.body.model_digest
    return previous


def test_replicas_agree_verify_and_the_quorum_makes_checkpoints_final(nodes: dict[str, Node]) -> None:
    _three_rounds(nodes)
    roots = {n: node.link.root() for n, node in nodes.items()}
    assert len(set(roots.values())) == 1
    for node in nodes.values():
        node.link.close()
    reports = {n: verify_ledger(node.link.folder) for n, node in nodes.items()}
    for report in reports.values():
        assert report.entries == 1 + 3 * 5  # federation_created; per round: opened, 3 updates, aggregate
        assert report.members == 3 and report.rounds == 3
        assert report.root == roots[NAMES[0]].hex()
        assert report.warnings == () or all("cosigned" in w for w in report.warnings)
    leader = reports[NAMES[0]]  # it gathered every head's cosignatures: the last one is final
    assert leader.checkpoints and all(c.final for c in leader.checkpoints)
    assert leader.checkpoints[-1].size == leader.entries and leader.unwitnessed == 0


def test_a_dropout_makes_the_leader_renumber_the_entries_after_it(nodes: dict[str, Node]) -> None:
    r = _run_round(nodes, 1, leader=NAMES[0], previous=GENESIS.initial_model, senders=(NAMES[0], NAMES[2]))
    seqs = [SignedEntry.from_record(rec).entry for rec in r.body.ledger_entries]
    assert [(e.seq, e.kind, e.author) for e in seqs[:4]] == [
        (0, "federation_created", "coordinator@member-00000"),
        (1, "round_opened", NAMES[0]),
        (2, "update_submitted", NAMES[0]),
        (3, "update_submitted", NAMES[2]),  # predicted 4 (after member-00001), signed again at 3
    ]
    predicted = SignedEntry.from_record(r.headers[NAMES[2]].ledger_entry).entry.seq
    assert predicted == 4
    _adopt_all(nodes, r, leader=NAMES[0])
    assert {node.link.size for node in nodes.values()} == {len(seqs)}


def _commit_with(r: Round, index: int, record: bytes) -> pb.Commit:
    body = pb.Commit()
    body.CopyFrom(r.body)
    body.ledger_entries[index] = record
    return body


def _resigned(record: bytes, signer: str, **changes: object) -> bytes:
    from dataclasses import replace

    from fedswarm.ledger.entries import sign_entry

    entry = SignedEntry.from_record(record).entry
    entry = replace(entry, **changes)  # type: ignore[arg-type]
    return sign_entry(entry, KEYS[signer]).record


def test_entries_that_do_not_match_the_commit_are_refused_with_the_reason(nodes: dict[str, Node]) -> None:
    r = _run_round(nodes, 1, leader=NAMES[0], previous=GENESIS.initial_model)
    member = nodes[NAMES[1]].link
    update_at = 3  # member-00001's update_submitted
    entry = SignedEntry.from_record(r.body.ledger_entries[update_at]).entry
    assert entry.author == NAMES[1] and isinstance(entry.body, UpdateSubmitted)

    # wrong author: member-00002 signs member-00001's statement as its own
    forged = _resigned(r.body.ledger_entries[update_at], NAMES[2], author=NAMES[2], key=PUBLIC[NAMES[2]])
    with pytest.raises(VerificationError, match=r"entry 3 \(update_submitted by member-00002\).*(declares|second)"):
        member.adopt(r.envelope, _commit_with(r, update_at, forged), leader=NAMES[0])
    # wrong digest: validly signed by its author, but not the update the commit declares
    from dataclasses import replace as dc_replace

    other = dc_replace(entry.body, update="ee" * 32)
    forged = _resigned(r.body.ledger_entries[update_at], NAMES[1], body=other)
    with pytest.raises(VerificationError, match=r"entry 3 .*states update eeeeeeeeeeeeeeee, the commit declares"):
        member.adopt(r.envelope, _commit_with(r, update_at, forged), leader=NAMES[0])
    # an entry for another round
    other = dc_replace(entry.body, round=2)
    forged = _resigned(r.body.ledger_entries[update_at], NAMES[1], body=other)
    with pytest.raises(VerificationError, match=r"entry 3 .*about round 2, the commit is of round 1"):
        member.adopt(r.envelope, _commit_with(r, update_at, forged), leader=NAMES[0])
    # a signature that does not verify (the record's last byte flipped)
    record = bytearray(r.body.ledger_entries[update_at])
    record[-1] ^= 1
    with pytest.raises(VerificationError, match=r"entry 3 \(update_submitted by member-00001\).*signature"):
        member.adopt(r.envelope, _commit_with(r, update_at, bytes(record)), leader=NAMES[0])
    # a commit from a node that is not the round's opener
    with pytest.raises(VerificationError, match=r"must create the federation as coordinator@member-00002"):
        member.adopt(r.envelope, r.body, leader=NAMES[2])
    assert member.size == 0  # nothing was written
    member.adopt(r.envelope, r.body, leader=NAMES[0])
    assert member.size == len(r.body.ledger_entries)


def test_the_leader_refuses_an_update_whose_entry_does_not_describe_it(nodes: dict[str, Node]) -> None:
    data = encode_update(np.ones(4))
    header = pb.UpdateHeader(update_digest=sha256_hex(data), update_size=len(data), num_examples=5)
    nodes[NAMES[1]].link.sign_update(1, header, data)
    leader = nodes[NAMES[0]].link
    leader.note_update(NAMES[1], 1, header, data)
    lying = pb.UpdateHeader()
    lying.CopyFrom(header)
    lying.num_examples = 500
    with pytest.raises(VerificationError, match=r"states \(round, digest, examples, bytes\)"):
        leader.note_update(NAMES[1], 1, lying, data)
    with pytest.raises(VerificationError, match="it is update_submitted by member-00001"):
        leader.note_update(NAMES[2], 1, header, data)
    with pytest.raises(VerificationError, match="carries no ledger entry"):
        leader.note_update(NAMES[1], 1, pb.UpdateHeader(update_digest=header.update_digest), data)
    other = encode_update(2 * np.ones(4))
    with pytest.raises(VerificationError, match="L2 norm"):
        leader.note_update(NAMES[1], 1, header, other)


def test_a_member_that_cosigns_another_history_raises_the_alarm(nodes: dict[str, Node]) -> None:
    r = _run_round(nodes, 1, leader=NAMES[0], previous=GENESIS.initial_model)
    _adopt_all(nodes, r, leader=NAMES[0])
    head = CosignedHead.decode(nodes[NAMES[1]].link.cosignature()).head
    from dataclasses import replace

    forged = cosign_head(replace(head, root=b"\x01" * 32), member=NAMES[2], key=KEYS[NAMES[2]])
    leader = nodes[NAMES[0]]
    leader.link.note_cosignature(forged.encode(), sender=NAMES[2], wait=True)
    assert isinstance(leader.link.alarm, ForkDetected) and "member-00002 cosigned" in str(leader.link.alarm)
    assert leader.alarms == [leader.link.alarm]
    with pytest.raises(ForkDetected):  # the halted replica refuses everything from now on
        leader.link.adopt(r.envelope, r.body, leader=NAMES[0])


def test_a_peer_with_another_history_is_a_fork(nodes: dict[str, Node]) -> None:
    r = _run_round(nodes, 1, leader=NAMES[0], previous=GENESIS.initial_model)
    _adopt_all(nodes, r, leader=NAMES[0])
    link = nodes[NAMES[1]].link
    link.compare(NAMES[2], nodes[NAMES[2]].link.size, nodes[NAMES[2]].link.root())  # same history: fine
    assert nodes[NAMES[1]].alarms == []
    link.compare(NAMES[2], 3, b"\x02" * 32)
    alarm = link.alarm
    assert isinstance(alarm, ForkDetected)
    assert "member-00002 holds another history" in str(alarm)


def test_an_edited_ledger_raises_the_alarm_when_its_node_starts(tmp_path: Path, nodes: dict[str, Node]) -> None:
    r = _run_round(nodes, 1, leader=NAMES[0], previous=GENESIS.initial_model)
    _adopt_all(nodes, r, leader=NAMES[0])
    honest_root = nodes[NAMES[0]].link.root()
    victim = nodes[NAMES[2]]
    victim.link.close()
    db = victim.link.folder / "ledger.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER entries_no_update")
    record = conn.execute("SELECT record FROM entries WHERE seq = 5").fetchone()[0]
    conn.execute("UPDATE entries SET record = ? WHERE seq = 5", (record.replace(b'"loss":0.5', b'"loss":0.4'),))
    conn.commit()
    conn.close()
    reopened = _node(tmp_path, NAMES[2])
    try:
        assert reopened.alarms and "LEDGER ALTERED" in str(reopened.alarms[0])
        assert reopened.link.root() != honest_root  # it reports what its records hash to: peers see the fork
        peer = nodes[NAMES[0]].link
        peer.compare(NAMES[2], reopened.link.size, reopened.link.root())
        assert isinstance(peer.alarm, ForkDetected)
    finally:
        reopened.link.close()


def test_a_node_that_missed_a_round_catches_up_from_a_peer(nodes: dict[str, Node]) -> None:
    late = nodes[NAMES[2]].link
    leader = nodes[NAMES[0]]
    first = _run_round(nodes, 1, leader=NAMES[0], previous=GENESIS.initial_model)
    _adopt_all(nodes, first, leader=NAMES[0])
    second = _run_round(nodes, 2, leader=NAMES[0], previous=first.body.model_digest, senders=NAMES[:2])
    for name in NAMES[:2]:
        nodes[name].link.adopt(second.envelope, second.body, leader=NAMES[0])
    third = _run_round(nodes, 3, leader=NAMES[0], previous=second.body.model_digest, senders=NAMES[:2])
    with pytest.raises(VerificationError, match="its entries start at 10, this ledger has 6"):
        late.adopt(third.envelope, third.body, leader=NAMES[0])
    request = late.request(records_from=late.size, max_records=100)
    reply = leader.link.reply(request, max_bytes=1 << 20)
    assert reply.size == 10 and len(reply.records) == 4
    missing = late.models_named(list(reply.records))
    assert missing == [second.body.model_digest]
    with pytest.raises(VerificationError, match="is missing"):
        late.extend(list(reply.records))  # objects first
    late.put_object(leader.link.object_path(missing[0]).read_bytes())
    late.extend(list(reply.records))
    late.compare(NAMES[0], int(reply.size), bytes(reply.root), proof=list(reply.consistency), base=int(request.size))
    late.adopt(third.envelope, third.body, leader=NAMES[0])
    leader.link.adopt(third.envelope, third.body, leader=NAMES[0])
    assert late.alarm is None and late.size == leader.link.size == 14 and late.root() == leader.link.root()


def test_a_secure_sum_lists_its_contributors_without_update_entries(nodes: dict[str, Node]) -> None:
    r = _run_round(nodes, 1, leader=NAMES[0], previous=GENESIS.initial_model, secure=True)
    entries = [SignedEntry.from_record(rec).entry for rec in r.body.ledger_entries]
    assert [e.kind for e in entries] == ["federation_created", "round_opened", "aggregate_committed"]
    aggregate = entries[-1].body
    assert isinstance(aggregate, AggregateCommitted)
    assert aggregate.inputs == () and aggregate.contributors == NAMES and aggregate.weights == (1.0, 1.0, 1.0)
    _adopt_all(nodes, r, leader=NAMES[0])
    assert {node.link.size for node in nodes.values()} == {3}
