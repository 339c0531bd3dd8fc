"""Node ledgers without a fixed coordinator: checkpoints final without the founding member, members admitted
by whoever leads (exactly once), updates retained where they were sent, each signature verified once."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from node_ledger_harness import FED, Federation, key_of

from fedswarm.core.errors import VerificationError
from fedswarm.crypto import batch as batch_module
from fedswarm.crypto.signing import VerifyKey
from fedswarm.ledger.checkpoint import Checkpoint, CosignedHead, verify_final
from fedswarm.ledger.entries import Entry, MemberAdmitted, SignedEntry
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger

FOUR = ("member-00000", "member-00001", "member-00002", "member-00003")
FOUNDER, A, B, C = FOUR
NEW = "member-00004"


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    made = Federation(tmp_path, FOUR)
    yield made
    made.close()


def _entries(fed: Federation, name: str) -> list[Entry]:
    with LedgerStore(fed.nodes[name].link.folder, readonly=True) as store:
        return [SignedEntry.from_record(r).entry for _, r in store.records()]


def test_checkpoints_become_final_without_the_founding_member(fed: Federation) -> None:
    survivors = (A, B, C)
    previous = fed.rounds([(FOUNDER, FOUR)])
    fed.nodes[FOUNDER].link.close()  # the founding member is down from now on
    del fed.nodes[FOUNDER]
    fed.rounds([(A, survivors), (B, survivors), (C, survivors)], previous=previous, start=2)
    finals = {n: fed.nodes[n].link.witness.latest_final() for n in survivors}
    last = finals[C]  # round 4's leader gathered the last head's cosignatures
    assert last is not None and last.signer == C and last.head.size == fed.nodes[C].link.size
    assert {c.member for c in last.cosignatures} == set(survivors)  # 3 of 4: more than 2/3
    verify_final(last, {n: fed.manifest[n] for n in FOUR})
    fed.close()
    for name in survivors:
        report = verify_ledger(fed.nodes[name].link.folder)
        signers = {c.signer for c in report.checkpoints}
        assert report.checkpoints and all(c.final for c in report.checkpoints), name
        assert signers <= {FOUNDER, A, B, C} and signers & {A, B, C}, signers  # no coordinator needed
    assert len({verify_ledger(fed.nodes[n].link.folder).root for n in survivors}) == 1


def test_a_checkpoint_signed_with_a_key_the_manifest_does_not_list_is_refused(fed: Federation) -> None:
    fed.rounds([(FOUNDER, FOUR), (A, FOUR)])
    final = fed.nodes[A].link.witness.latest_final()  # A gathered the cosignatures of round 2's head
    member = fed.nodes[B].link
    stored = member.witness.latest_final()  # round 1's, which came with round 2's commit
    assert final is not None and stored is not None and stored.head.size < final.head.size
    forged = Checkpoint(final.head, C, fed.manifest[B], final.signature, final.cosignatures)  # C with B's key
    member.run(lambda: member.witness.take(forged.encode(), source=A))
    assert member.witness.latest_final() == stored and member.alarm is None
    member.run(lambda: member.witness.take(final.encode(), source=A))
    assert member.witness.latest_final() == final


def test_a_member_added_later_is_admitted_once_by_whoever_leads(fed: Federation, tmp_path: Path) -> None:
    previous = fed.rounds([(FOUNDER, FOUR)])
    fed.admit_to_manifest(NEW)
    fed.start(NEW)
    five = (*FOUR, NEW)
    fed.catch_up(NEW, FOUNDER)
    previous = fed.rounds([(A, five), (B, five)], previous=previous, start=2)
    admitted = [e for e in _entries(fed, NEW) if isinstance(e.body, MemberAdmitted)]
    assert [(e.author, e.body.member, e.body.key) for e in admitted] == [(A, NEW, fed.manifest[NEW])]  # type: ignore[union-attr]
    opened = next(e for e in _entries(fed, A) if e.kind == "round_opened" and e.seq > admitted[0].seq)
    assert opened.author == A and opened.seq == admitted[0].seq + 1  # right before the round A leads
    cosigned = CosignedHead.decode(fed.nodes[NEW].link.witness.cosignature())  # it cosigns once registered
    assert cosigned.cosignature.member == NEW and cosigned.head.size == fed.nodes[NEW].link.size
    final = fed.nodes[B].link.witness.latest_final()  # 4 of 5 registered members make B's head final
    assert final is not None and final.head.size == cosigned.head.size and len(final.cosignatures) >= 4
    fed.close()
    for name in five:
        verify_ledger(fed.nodes[name].link.folder)


def test_the_founding_member_admits_as_the_coordinator(fed: Federation) -> None:
    previous = fed.rounds([(FOUNDER, FOUR)])
    fed.admit_to_manifest(NEW)
    fed.start(NEW)
    fed.catch_up(NEW, FOUNDER)
    fed.rounds([(FOUNDER, (*FOUR, NEW))], previous=previous, start=2)
    admitted = [e for e in _entries(fed, NEW) if isinstance(e.body, MemberAdmitted)]
    assert [(e.author, e.key) for e in admitted] == [(f"coordinator@{FOUNDER}", fed.manifest[FOUNDER])]


def test_a_newcomer_that_leads_first_has_a_registered_member_sign_its_admission(fed: Federation) -> None:
    previous = fed.rounds([(FOUNDER, FOUR)])
    fed.admit_to_manifest(NEW)
    fed.start(NEW)
    fed.catch_up(NEW, FOUNDER)
    five = (*FOUR, NEW)
    r = fed.round(2, leader=NEW, previous=previous, senders=five)
    entries = [SignedEntry.from_record(rec).entry for rec in r.body.ledger_entries]
    assert (entries[0].kind, entries[0].author, getattr(entries[0].body, "member", None)) == (
        "member_admitted",
        FOUNDER,
        NEW,
    )  # fmt: skip   the first registered member of the round, in member-id order
    assert (entries[1].kind, entries[1].author) == ("round_opened", NEW)
    fed.adopt_all(r, leader=NEW)
    assert len({fed.nodes[n].link.root() for n in five}) == 1


def test_an_admission_is_refused_unless_the_manifest_lists_the_member_with_that_key(fed: Federation) -> None:
    previous = fed.rounds([(FOUNDER, FOUR)])
    fed.admit_to_manifest(NEW)
    fed.start(NEW)
    fed.catch_up(NEW, FOUNDER)
    r = fed.round(2, leader=A, previous=previous, senders=(*FOUR, NEW))
    fed.manifest[NEW] = key_of("impostor").public_key().raw  # B's manifest (shared here) lists another key
    at = fed.nodes[B].link.size
    with pytest.raises(VerificationError, match=rf"entry {at}: admits member-00004 with a key that this node's"):
        fed.adopt(B, r, leader=A)
    size = fed.nodes[C].link.size
    admission = Entry(FED, size, C, fed.manifest[C], MemberAdmitted(NEW, fed.manifest[NEW], "listed"))
    fed.manifest[NEW] = key_of(NEW).public_key().raw
    with pytest.raises(VerificationError, match="not listed with that key"):
        fed.ask(C, admission.encode())  # the key in the entry is the impostor's
    registered = Entry(FED, size, C, fed.manifest[C], MemberAdmitted(A, fed.manifest[A], "listed"))
    with pytest.raises(VerificationError, match="does not admit member-00001 at entry"):
        fed.ask(C, registered.encode())  # already registered
    wrong_author = Entry(FED, size, B, fed.manifest[B], MemberAdmitted(NEW, fed.manifest[NEW], "listed"))
    with pytest.raises(VerificationError, match="does not write entry"):
        fed.ask(C, wrong_author.encode())


def _held(fed: Federation, name: str, digests: dict[str, str]) -> dict[str, bytes]:
    """The updates among ``digests`` that ``name``'s ledger stores (packed or as files), by member."""
    with LedgerStore(fed.nodes[name].link.folder, readonly=True) as store:
        return {m: store.objects.get_bytes(d) for m, d in digests.items() if store.objects.has(d)}


def test_updates_are_retained_where_they_were_sent(fed: Federation) -> None:
    r = fed.round(1, leader=FOUNDER, previous=fed.genesis.initial_model)
    fed.adopt_all(r, leader=FOUNDER)
    digests = {name: header.update_digest for name, header in r.headers.items()}
    fed.close()
    assert _held(fed, FOUNDER, digests) == r.data  # the leader: every input
    for name in (A, B, C):  # a member: its own update only
        assert _held(fed, name, digests) == {name: r.data[name]}
    verify_ledger(fed.nodes[FOUNDER].link.folder)


def test_without_retain_updates_no_update_is_stored(tmp_path: Path) -> None:
    fed = Federation(tmp_path, FOUR, retain=False)
    r = fed.round(1, leader=FOUNDER, previous=fed.genesis.initial_model)
    fed.adopt_all(r, leader=FOUNDER)
    fed.close()
    digests = {name: header.update_digest for name, header in r.headers.items()}
    assert all(_held(fed, name, digests) == {} for name in FOUR)


def _count_verifications(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[bytes, bytes, bytes]]:
    seen: Counter[tuple[bytes, bytes, bytes]] = Counter()
    single, many = VerifyKey.verify, batch_module.verify_signatures

    def one(self: VerifyKey, message: bytes, signature: bytes) -> None:
        seen[(self.raw, hashlib.sha256(message).digest(), bytes(signature))] += 1
        single(self, message, signature)

    def batched(items: Any) -> None:
        for public, message, signature in items:
            seen[(bytes(public), hashlib.sha256(message).digest(), bytes(signature))] += 1
        many(items)

    monkeypatch.setattr(VerifyKey, "verify", one)
    for module in ("fedswarm.node.ledgerlink", "fedswarm.node.ledger_witness"):
        monkeypatch.setattr(f"{module}.verify_signatures", batched)
    return seen


def test_each_node_verifies_each_signature_once(fed: Federation, monkeypatch: pytest.MonkeyPatch) -> None:
    previous = fed.rounds([(FOUNDER, FOUR), (A, FOUR)])
    seen = _count_verifications(monkeypatch)
    r = fed.round(3, leader=A, previous=previous)
    assert sum(seen.values()) == len(FOUR) - 1  # the leader checked each other member's statement on arrival
    seen.clear()
    fed.adopt(A, r, leader=A)
    assert sum(seen.values()) == 0  # its own block: every signature in it was checked or made there
    fed.adopt(B, r, leader=A)
    fed.nodes[B].link.run(lambda: None)  # the commit's checkpoint, checked in the background
    checkpoint = Checkpoint.decode(r.body.checkpoint)
    own = fed.nodes[B].link.statements.own_records()
    entries = [SignedEntry.from_record(x) for x in r.body.ledger_entries]
    assert not any(
        (fed.manifest[B], hashlib.sha256(e.message).digest(), e.signature) in seen for e in entries if e.record in own
    )
    signer = (checkpoint.key, hashlib.sha256(checkpoint.head.encode()).digest(), checkpoint.signature)
    repeated = {k: n for k, n in seen.items() if n > 1 and k != signer}  # the store checks the signer's once more
    assert repeated == {}
    assert sum(seen.values()) <= len(entries) - 1 + len(checkpoint.cosignatures) + 1


def test_a_member_added_before_the_first_round_is_admitted_right_after_the_creation(fed: Federation) -> None:
    fed.admit_to_manifest(NEW)
    fed.start(NEW)
    five = (*FOUR, NEW)
    fed.rounds([(FOUNDER, five)])
    entries = _entries(fed, NEW)
    assert [e.kind for e in entries[:3]] == ["federation_created", "member_admitted", "round_opened"]
    created, admitted = entries[0].body, entries[1].body
    assert [m.name for m in created.members] == list(FOUR)  # type: ignore[union-attr]  only the founders
    assert (entries[1].author, admitted.member, admitted.key) == (  # type: ignore[union-attr]
        f"coordinator@{FOUNDER}",
        NEW,
        fed.manifest[NEW],
    )
    assert len({fed.nodes[n].link.root() for n in five}) == 1
    fed.close()
    for name in five:
        verify_ledger(fed.nodes[name].link.folder)
