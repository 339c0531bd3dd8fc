"""Node ledger replicas: a round's entries signed by their authors, checked against the commit, appended,
cosigned into a final checkpoint; refusals with reasons; the alarm on forks and on an edited ledger."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from node_ledger_harness import FED, Federation, Round, key_of

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.checkpoint import CosignedHead, cosign_head
from fedswarm.ledger.entries import AggregateCommitted, Entry, SignedEntry, UpdateSubmitted, sign_entry
from fedswarm.ledger.replica import ForkDetected
from fedswarm.ledger.verify import verify_ledger
from fedswarm.node.ledger_views import catch_up, compare_view, missing_models, reply_view, request_view
from fedswarm.node.ledgerlink import parse_records
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.wire import encode_update, sha256_hex

NAMES = ("member-00000", "member-00001", "member-00002")


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    made = Federation(tmp_path, NAMES)
    yield made
    made.close()


def test_replicas_agree_verify_and_the_quorum_makes_checkpoints_final(fed: Federation) -> None:
    fed.rounds([(NAMES[0], NAMES), (NAMES[1], NAMES), (NAMES[0], NAMES)])
    roots = {n: node.link.root() for n, node in fed.nodes.items()}
    assert len(set(roots.values())) == 1
    fed.close()
    reports = {n: verify_ledger(node.link.folder) for n, node in fed.nodes.items()}
    for report in reports.values():
        assert report.entries == 1 + 3 * 5  # federation_created; per round: opened, 3 updates, aggregate
        assert report.members == 3 and report.rounds == 3
        assert report.root == roots[NAMES[0]].hex()
        assert report.warnings == () or all("cosigned" in w for w in report.warnings)
    leader = reports[NAMES[0]]  # it gathered the last head's cosignatures: the last checkpoint is final
    assert leader.checkpoints and all(c.final for c in leader.checkpoints)
    assert leader.checkpoints[-1].size == leader.entries and leader.unwitnessed == 0
    # the founding member cosigned every head: every checkpoint, whoever gathered it, is the coordinator's
    assert {c.signer for n in NAMES for c in reports[n].checkpoints} == {"coordinator@member-00000"}


def test_a_dropout_makes_the_leader_renumber_the_entries_after_it(fed: Federation) -> None:
    initial = fed.genesis.initial_model
    r = fed.round(1, leader=NAMES[0], previous=initial, senders=(NAMES[0], NAMES[2]), selected=NAMES)
    seqs = [SignedEntry.from_record(rec).entry for rec in r.body.ledger_entries]
    assert [(e.seq, e.kind, e.author) for e in seqs[:4]] == [
        (0, "federation_created", "coordinator@member-00000"),
        (1, "round_opened", NAMES[0]),
        (2, "update_submitted", NAMES[0]),
        (3, "update_submitted", NAMES[2]),  # predicted 4 (after member-00001), signed again at 3
    ]
    predicted = SignedEntry.from_record(r.headers[NAMES[2]].ledger_entry).entry.seq
    assert predicted == 4
    fed.adopt_all(r, leader=NAMES[0])
    assert {node.link.size for node in fed.nodes.values()} == {len(seqs)}


def _commit_with(r: Round, index: int, record: bytes) -> pb.Commit:
    body = pb.Commit()
    body.CopyFrom(r.body)
    body.ledger_entries[index] = record
    return body


def _resigned(record: bytes, signer: str, **changes: object) -> bytes:
    entry = SignedEntry.from_record(record).entry
    entry = replace(entry, **changes)  # type: ignore[arg-type]
    return sign_entry(entry, key_of(signer)).record


def _adopt(fed: Federation, name: str, r: Round, body: pb.Commit, *, leader: str) -> None:
    fed.adopt(name, Round(r.envelope, body, r.headers, r.data), leader=leader)


def test_entries_that_do_not_match_the_commit_are_refused_with_the_reason(fed: Federation) -> None:
    r = fed.round(1, leader=NAMES[0], previous=fed.genesis.initial_model)
    member = NAMES[1]
    update_at = 3  # member-00001's update_submitted
    entry = SignedEntry.from_record(r.body.ledger_entries[update_at]).entry
    assert entry.author == NAMES[1] and isinstance(entry.body, UpdateSubmitted)

    # wrong author: member-00002 signs member-00001's statement as its own
    forged = _resigned(r.body.ledger_entries[update_at], NAMES[2], author=NAMES[2], key=fed.manifest[NAMES[2]])
    with pytest.raises(VerificationError, match=r"entry 3 \(update_submitted by member-00002\).*(declares|second)"):
        _adopt(fed, member, r, _commit_with(r, update_at, forged), leader=NAMES[0])
    # wrong digest: validly signed by its author, but not the update the commit declares
    other = replace(entry.body, update="ee" * 32)
    forged = _resigned(r.body.ledger_entries[update_at], NAMES[1], body=other)
    with pytest.raises(VerificationError, match=r"entry 3 .*states update eeeeeeeeeeeeeeee, the commit declares"):
        _adopt(fed, member, r, _commit_with(r, update_at, forged), leader=NAMES[0])
    # an entry for another round
    other = replace(entry.body, round=2)
    forged = _resigned(r.body.ledger_entries[update_at], NAMES[1], body=other)
    with pytest.raises(VerificationError, match=r"entry 3 .*about round 2, the commit is of round 1"):
        _adopt(fed, member, r, _commit_with(r, update_at, forged), leader=NAMES[0])
    # a signature that does not verify (the last byte of member-00002's record flipped)
    record = bytearray(r.body.ledger_entries[update_at + 1])
    record[-1] ^= 1
    with pytest.raises(VerificationError, match=r"entry 4 \(update_submitted by member-00002\).*signature"):
        _adopt(fed, member, r, _commit_with(r, update_at + 1, bytes(record)), leader=NAMES[0])
    # a commit from a node that is not the round's opener
    with pytest.raises(VerificationError, match=r"must create the federation as coordinator@member-00002"):
        fed.adopt(member, r, leader=NAMES[2])
    assert fed.nodes[member].link.size == 0  # nothing was written
    fed.adopt(member, r, leader=NAMES[0])
    assert fed.nodes[member].link.size == len(r.body.ledger_entries)


def test_the_leader_refuses_an_update_whose_entry_does_not_describe_it(fed: Federation) -> None:
    data = encode_update(np.ones(4))
    header = pb.UpdateHeader(update_digest=sha256_hex(data), update_size=len(data), num_examples=5)
    fed.nodes[NAMES[1]].link.statements.sign(1, header, data)
    leader = fed.nodes[NAMES[0]].link.statements
    leader.check(NAMES[1], 1, header, data)
    lying = pb.UpdateHeader()
    lying.CopyFrom(header)
    lying.num_examples = 500
    with pytest.raises(VerificationError, match=r"states \(round, digest, examples, bytes\)"):
        leader.check(NAMES[1], 1, lying, data)
    with pytest.raises(VerificationError, match="it is update_submitted by member-00001"):
        leader.check(NAMES[2], 1, header, data)
    with pytest.raises(VerificationError, match="carries no ledger entry"):
        leader.check(NAMES[1], 1, pb.UpdateHeader(update_digest=header.update_digest), data)
    other = encode_update(2 * np.ones(4))
    with pytest.raises(VerificationError, match="L2 norm"):
        leader.check(NAMES[1], 1, header, other)
    forged = bytearray(header.ledger_entry)
    forged[-1] ^= 1
    bad = pb.UpdateHeader()
    bad.CopyFrom(header)
    bad.ledger_entry = bytes(forged)
    with pytest.raises(VerificationError, match="does not verify"):
        leader.check(NAMES[1], 1, bad, data)


def test_a_member_signs_again_only_its_own_statement(fed: Federation) -> None:
    data = encode_update(np.ones(4))
    header = pb.UpdateHeader(update_digest=sha256_hex(data), update_size=len(data), num_examples=5)
    statements = fed.nodes[NAMES[1]].link.statements
    statements.sign(1, header, data)
    entry = SignedEntry.from_record(header.ledger_entry).entry
    moved = replace(entry, seq=7)
    again = SignedEntry.from_record(statements.sign_again(moved))
    assert again.entry == moved
    with pytest.raises(VerificationError, match="did not sign this statement"):
        statements.sign_again(replace(moved, body=replace(entry.body, examples=6)))
    with pytest.raises(VerificationError, match="did not sign this statement"):
        statements.sign_again(replace(moved, author=NAMES[2], key=fed.manifest[NAMES[2]]))


def test_a_member_that_cosigns_another_history_raises_the_alarm(fed: Federation) -> None:
    r = fed.round(1, leader=NAMES[0], previous=fed.genesis.initial_model)
    fed.adopt_all(r, leader=NAMES[0])
    head = CosignedHead.decode(fed.nodes[NAMES[1]].link.witness.cosignature()).head
    forged = cosign_head(replace(head, root=b"\x01" * 32), member=NAMES[2], key=key_of(NAMES[2]))
    leader = fed.nodes[NAMES[0]]
    leader.link.witness.note(forged.encode(), sender=NAMES[2], wait=True)
    assert isinstance(leader.link.alarm, ForkDetected) and "member-00002 cosigned" in str(leader.link.alarm)
    assert leader.alarms == [leader.link.alarm]
    with pytest.raises(ForkDetected):  # the halted replica refuses everything from now on
        fed.adopt(NAMES[0], r, leader=NAMES[0])


def test_a_peer_with_another_history_is_a_fork(fed: Federation) -> None:
    r = fed.round(1, leader=NAMES[0], previous=fed.genesis.initial_model)
    fed.adopt_all(r, leader=NAMES[0])
    link, peer = fed.nodes[NAMES[1]].link, fed.nodes[NAMES[2]].link
    compare_view(link, NAMES[2], peer.size, peer.root())  # same history: fine
    assert fed.nodes[NAMES[1]].alarms == []
    compare_view(link, NAMES[2], 3, b"\x02" * 32)
    alarm = link.alarm
    assert isinstance(alarm, ForkDetected)
    assert "member-00002 holds another history" in str(alarm)


def test_an_edited_ledger_raises_the_alarm_when_its_node_starts(fed: Federation) -> None:
    r = fed.round(1, leader=NAMES[0], previous=fed.genesis.initial_model)
    fed.adopt_all(r, leader=NAMES[0])
    honest_root = fed.nodes[NAMES[0]].link.root()
    victim = fed.nodes[NAMES[2]]
    victim.link.close()
    conn = sqlite3.connect(victim.link.folder / "ledger.sqlite")
    conn.execute("DROP TRIGGER entries_no_update")
    record = conn.execute("SELECT record FROM entries WHERE seq = 5").fetchone()[0]
    conn.execute("UPDATE entries SET record = ? WHERE seq = 5", (record.replace(b'"loss":0.5', b'"loss":0.4'),))
    conn.commit()
    conn.close()
    reopened = fed.start(NAMES[2])
    assert reopened.alarms and "LEDGER ALTERED" in str(reopened.alarms[0])
    assert reopened.link.root() != honest_root  # it reports what its records hash to: peers see the fork
    peer = fed.nodes[NAMES[0]].link
    compare_view(peer, NAMES[2], reopened.link.size, reopened.link.root())
    assert isinstance(peer.alarm, ForkDetected)


def test_a_node_that_missed_a_round_catches_up_from_a_peer(fed: Federation) -> None:
    late, leader = fed.nodes[NAMES[2]].link, fed.nodes[NAMES[0]].link
    initial = fed.genesis.initial_model
    first = fed.round(1, leader=NAMES[0], previous=initial)
    fed.adopt_all(first, leader=NAMES[0])
    second = fed.round(2, leader=NAMES[0], previous=first.body.model_digest, senders=NAMES[:2])
    fed.adopt_all(second, leader=NAMES[0], among=NAMES[:2])
    third = fed.round(3, leader=NAMES[0], previous=second.body.model_digest, senders=NAMES[:2])
    with pytest.raises(VerificationError, match="its entries start at 10, this ledger has 6"):
        fed.adopt(NAMES[2], third, leader=NAMES[0])
    request = request_view(late, records_from=late.size, max_records=100)
    reply = reply_view(leader, request, max_bytes=1 << 20)
    assert reply.size == 10 and len(reply.records) == 4
    items = parse_records(list(reply.records), "reply")
    missing = late.run(lambda: missing_models(late, items))
    assert missing == [second.body.model_digest]
    with pytest.raises(VerificationError, match="is missing"):
        catch_up(late, items)  # objects first
    late.put_object(leader.object_path(missing[0]).read_bytes())
    catch_up(late, items)
    compare_view(late, NAMES[0], int(reply.size), bytes(reply.root), proof=list(reply.consistency), base=request.size)
    fed.adopt(NAMES[2], third, leader=NAMES[0])
    fed.adopt(NAMES[0], third, leader=NAMES[0])
    assert late.alarm is None and late.size == leader.size == 14 and late.root() == leader.root()


def test_a_secure_sum_lists_its_contributors_without_update_entries(fed: Federation) -> None:
    r = fed.round(1, leader=NAMES[0], previous=fed.genesis.initial_model, secure=True)
    entries = [SignedEntry.from_record(rec).entry for rec in r.body.ledger_entries]
    assert [e.kind for e in entries] == ["federation_created", "round_opened", "aggregate_committed"]
    aggregate = entries[-1].body
    assert isinstance(aggregate, AggregateCommitted)
    assert aggregate.inputs == () and aggregate.contributors == NAMES and aggregate.weights == (1.0, 1.0, 1.0)
    fed.adopt_all(r, leader=NAMES[0])
    assert {node.link.size for node in fed.nodes.values()} == {3}


def test_an_entry_to_sign_that_is_not_the_members_own_is_refused(fed: Federation) -> None:
    fed.rounds([(NAMES[0], NAMES)])
    statement = Entry(FED, 9, NAMES[1], fed.manifest[NAMES[1]], UpdateSubmitted(1, "aa" * 32, 1, 1.0, 8))
    with pytest.raises(VerificationError, match="did not sign this statement"):
        fed.ask(NAMES[1], statement.encode())
    with pytest.raises(VerificationError, match="entry to sign"):
        fed.ask(NAMES[1], b"not an entry")
