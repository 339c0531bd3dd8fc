"""Catching up applies the admission rule a commit's entries meet: every ``member_admitted`` names a member
the manifest lists with that key (current, or revoked since), never a founding member; a refused batch leaves
the local log as it was."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from node_ledger_harness import FED, RevokingFederation, key_of

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.entries import Entry, MemberAdmitted, SignedEntry, sign_entry
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger
from fedswarm.node.ledger_node import NodeLedger
from fedswarm.node.ledger_views import catch_up, missing_models
from fedswarm.node.ledgerlink import parse_records
from fedswarm.node.manifest import Manifest, MemberEntry

FOUR = ("member-00000", "member-00001", "member-00002", "member-00003")
FOUNDER, A, B, LATE = FOUR
NEW = "member-00004"
IMPOSTOR = key_of("impostor").public_key().raw


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[RevokingFederation]:
    """Round 1 by all four founders; NEW added to the manifest and admitted in round 2 (led by A), which LATE
    missed: LATE's log ends with round 1."""
    made = RevokingFederation(tmp_path, FOUR)
    previous = made.rounds([(FOUNDER, FOUR)])
    made.admit_to_manifest(NEW)
    made.start(NEW)
    made.catch_up(NEW, FOUNDER)
    made.rounds([(A, (FOUNDER, A, B, NEW))], previous=previous, start=2)
    yield made
    made.close()


def _records(fed: RevokingFederation, name: str, start: int = 0) -> list[bytes]:
    with LedgerStore(fed.nodes[name].link.folder, readonly=True) as store:
        return [r for _, r in store.records(start)]


def _admission_of(fed: RevokingFederation, name: str) -> int:
    """The position of ``name``'s admission in A's log."""
    entries = [SignedEntry.from_record(r).entry for r in _records(fed, A)]
    (seq,) = [e.seq for e in entries if isinstance(e.body, MemberAdmitted) and e.body.member == name]
    return seq


def _snapshot(fed: RevokingFederation, name: str) -> tuple[int, bytes, list[bytes]]:
    link = fed.nodes[name].link
    return link.size, link.root(), _records(fed, name)


@pytest.mark.parametrize("listed", ["with another key", "not at all"])
def test_a_history_admitting_a_member_the_manifest_does_not_list_is_refused_on_catch_up(
    fed: RevokingFederation, listed: str
) -> None:
    at, before = _admission_of(fed, NEW), _snapshot(fed, LATE)
    assert before[0] <= at  # LATE lacks the admission
    if listed == "with another key":
        fed.manifest[NEW] = IMPOSTOR  # LATE's manifest (shared here) lists NEW with another key
    else:
        del fed.manifest[NEW]  # neither a member nor revoked
    message = f"entry {at}: admits {NEW} with a key that this node's manifest does not list (from {A})"
    with pytest.raises(VerificationError, match=re.escape(message)):
        fed.catch_up(LATE, A)
    assert _snapshot(fed, LATE) == before and fed.nodes[LATE].link.alarm is None  # nothing written
    fed.manifest[NEW] = key_of(NEW).public_key().raw
    fed.catch_up(LATE, A)  # the same records, once the manifest lists NEW with its key
    assert _snapshot(fed, LATE) == _snapshot(fed, A)


def test_a_member_revoked_since_its_admission_is_accepted_on_catch_up(fed: RevokingFederation) -> None:
    fed.revoke(NEW)
    assert NEW not in fed.manifest
    fed.catch_up(LATE, A)
    link = fed.nodes[LATE].link
    assert link.alarm is None and _snapshot(fed, LATE) == _snapshot(fed, A)
    state = link.state()
    assert state is not None and state.members()[NEW] == key_of(NEW).public_key().raw
    fed.close()
    verify_ledger(link.folder)


def test_the_readmission_of_a_founding_member_is_refused_on_catch_up(fed: RevokingFederation) -> None:
    link, before = fed.nodes[LATE].link, _snapshot(fed, LATE)
    items = parse_records(_records(fed, A, start=before[0]), "records")
    seq = items[-1].entry.seq + 1
    again = Entry(FED, seq, B, fed.manifest[B], MemberAdmitted(FOUNDER, fed.manifest[FOUNDER], "listed"))
    forged = sign_entry(again, key_of(B))  # B signs it: only the manifest rule stands in the way
    for digest in link.run(lambda: missing_models(link, items)):
        link.put_object(fed.nodes[A].link.object_path(digest).read_bytes())
    message = f"entry {seq}: admits {FOUNDER}, a founding member registered by the creation (from {A})"
    with pytest.raises(VerificationError, match=re.escape(message)):
        catch_up(link, [*items, forged], peer=A)
    assert _snapshot(fed, LATE) == before and link.alarm is None


def test_a_commit_admitting_a_member_revoked_since_is_adopted_as_it_is_caught_up(tmp_path: Path) -> None:
    fed = RevokingFederation(tmp_path, FOUR)
    previous = fed.rounds([(FOUNDER, FOUR)])
    fed.admit_to_manifest(NEW)
    fed.start(NEW)
    fed.catch_up(NEW, FOUNDER)
    r = fed.round(2, leader=A, previous=previous, senders=(*FOUR, NEW))
    fed.adopt_all(r, leader=A, among=(FOUNDER, A, B, NEW))
    fed.revoke(NEW)  # before LATE takes the commit that admits NEW
    fed.adopt(LATE, r, leader=A)
    assert fed.nodes[LATE].link.alarm is None and _snapshot(fed, LATE) == _snapshot(fed, A)
    fed.close()


def _entry(name: str, since: int) -> MemberEntry:
    key = SigningKey.from_seed(name.encode().ljust(32, b".")).public_key().raw.hex()
    return MemberEntry(name, "member", "127.0.0.1:7000", "ab" * 32, key, since)


def test_the_node_ledger_gives_its_replica_the_revoked_members_keys() -> None:
    founders, revoked = (_entry("bank-a", 1), _entry("bank-b", 1)), (_entry("bank-c", 2),)
    manifest = Manifest("ab" * 16, "f", "2031-03-01T09:30:00Z", 3, "cd" * 32, founders, revoked)
    node = SimpleNamespace(kit=SimpleNamespace(manifest=manifest))
    ledger = object.__new__(NodeLedger)
    ledger.node, ledger._manifest_keys = node, None  # type: ignore[assignment]  # only the kit is read
    assert ledger._keys() == {e.name: bytes.fromhex(e.signing_key) for e in founders}
    assert ledger._revoked_keys() == {"bank-c": bytes.fromhex(revoked[0].signing_key)}
    node.kit.manifest = Manifest(
        "ab" * 16, "f", "2031-03-01T09:30:00Z", 4, "cd" * 32, founders[:1], (founders[1], *revoked)
    )
    assert set(ledger._revoked_keys()) == {"bank-b", "bank-c"} and set(ledger._keys()) == {"bank-a"}  # a reloaded kit


def test_a_joiner_whose_first_batch_is_refused_stays_without_a_history(fed: RevokingFederation) -> None:
    joiner = "member-00005"
    fed.admit_to_manifest(joiner)
    link = fed.nodes[fed.start(joiner).name].link
    items = parse_records(_records(fed, LATE), "records")  # round 1 only: NEW is not registered there
    seq = items[-1].entry.seq + 1
    by_new = Entry(FED, seq, NEW, fed.manifest[NEW], MemberAdmitted(joiner, fed.manifest[joiner], "listed"))
    for digest in link.run(lambda: missing_models(link, items)):
        link.put_object(fed.nodes[LATE].link.object_path(digest).read_bytes())
    with pytest.raises(VerificationError, match=rf"entry {seq} \(member_admitted by {NEW}\): author {NEW} is not"):
        catch_up(link, [*items, sign_entry(by_new, key_of(NEW))], peer=LATE)
    assert link.size == 0 and link.state() is None and link.coordinator is None
    fed.catch_up(joiner, A)
    assert _snapshot(fed, joiner) == _snapshot(fed, A)
