"""Tests of whole-ledger verification: a clean ledger passes, and every kind of tampering is caught."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from fedswarm.ledger.entries import MemberRemoved, SignedEntry, UpdateSubmitted, sign_entry
from fedswarm.ledger.models import ObjectStore
from fedswarm.ledger.simkeys import SimulationKeys
from fedswarm.ledger.store import DB_NAME, LedgerStore
from fedswarm.ledger.verify import LedgerVerificationError, verify_ledger
from fedswarm.ledger.writer import LedgerWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import build_ledger, tamper

KEYS = SimulationKeys(0)
D = "cd" * 32


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return build_ledger(tmp_path / "run" / "ledger", rounds=3, members=4)[0]


def _records(folder: Path) -> list[bytes]:
    with LedgerStore(folder, readonly=True) as store:
        return [record for _, record in store.records()]


def _fails(folder: Path, match: str, *, entry: int | None = None, **options: Any) -> LedgerVerificationError:
    with pytest.raises(LedgerVerificationError, match=match) as caught:
        verify_ledger(folder, **options)
    if entry is not None:
        assert caught.value.entry == entry, str(caught.value)
    return caught.value


def test_a_clean_ledger_verifies(ledger: Path) -> None:
    report = verify_ledger(ledger.parent)
    assert report.entries == 25 and report.rounds == 3 and report.members == 4
    assert report.kinds == {
        "aggregate_committed": 3,
        "evaluation_reported": 6,
        "federation_created": 1,
        "round_opened": 3,
        "update_submitted": 12,
    }
    assert len(report.checkpoints) == 3 and report.final_checkpoints == 3
    assert all(c.cosigners == 3 and c.members == 4 for c in report.checkpoints)  # more than 2/3 of 4
    assert report.unwitnessed == 0
    assert report.models == 4 and report.objects == 4 + 12
    with LedgerStore(ledger, readonly=True) as store:
        assert report.root == store.root().hex()
    assert any("simulation keys" in w for w in report.warnings)


def test_parallel_verification_agrees(ledger: Path) -> None:
    one = verify_ledger(ledger, workers=1, chunk=4)
    two = verify_ledger(ledger, workers=2, chunk=4)
    assert (one.root, one.entries, one.kinds) == (two.root, two.entries, two.kinds)
    tamper(ledger, "UPDATE entries SET record = ? WHERE seq = 13", [_records(ledger)[12]])
    _fails(ledger, "entry 13: the record says it is entry 12", entry=13, workers=2, chunk=4)


def test_every_changed_byte_of_every_entry_is_caught_and_named(tmp_path: Path) -> None:
    ledger = build_ledger(tmp_path / "small", rounds=2, members=3)[0]
    records = _records(ledger)
    rng = random.Random(0)
    for seq, record in enumerate(records):
        positions = {0, len(record) - 1, len(record) - 64, rng.randrange(len(record) - 64)}
        for position in sorted(positions):
            changed = bytearray(record)
            changed[position] = (changed[position] + 1 + rng.randrange(255)) % 256
            tamper(ledger, "UPDATE entries SET record = ? WHERE seq = ?", [bytes(changed), seq])
            error = _fails(ledger, f"entry {seq}", entry=seq)
            assert str(error).startswith(f"entry {seq}")
        tamper(ledger, "UPDATE entries SET record = ? WHERE seq = ?", [record, seq])
    verify_ledger(ledger)


def test_deleted_inserted_and_reordered_entries_are_caught(ledger: Path) -> None:
    records = _records(ledger)
    tamper(ledger, "DELETE FROM entries WHERE seq = 5")
    _fails(ledger, "entry 5: missing", entry=5)
    author = SignedEntry.from_record(records[5]).entry.author
    tamper(ledger, "INSERT INTO entries VALUES (5, ?, 'update_submitted', ?, 1)", [records[5], author])
    tamper(ledger, "DELETE FROM entries WHERE seq = 24")
    _fails(ledger, "checkpoint #3 covers 25 entries, the log has 24")
    tamper(ledger, "INSERT INTO entries VALUES (24, ?, 'evaluation_reported', 'coordinator', 3)", [records[24]])
    tamper(ledger, "INSERT INTO entries VALUES (25, ?, 'evaluation_reported', 'coordinator', 3)", [records[24]])
    _fails(ledger, "entry 25: the record says it is entry 24", entry=25)
    tamper(ledger, "DELETE FROM entries WHERE seq = 25")
    verify_ledger(ledger)
    tamper(ledger, "UPDATE entries SET record = ? WHERE seq = 3", [records[4]])
    tamper(ledger, "UPDATE entries SET record = ? WHERE seq = 4", [records[3]])
    _fails(ledger, "entry 3: the record says it is entry 4", entry=3)


def test_index_columns_must_match_the_record(ledger: Path) -> None:
    tamper(ledger, "UPDATE entries SET author = 'member-00003' WHERE seq = 2")
    _fails(ledger, "entry 2: index columns", entry=2)


def test_a_re_signed_rewrite_is_caught_by_the_tree_and_checkpoints(ledger: Path) -> None:
    """Simulation keys are public: a rewritten entry can be re-signed, but the tree no longer matches."""
    original = SignedEntry.from_record(_records(ledger)[3])
    body = original.entry.body
    assert isinstance(body, UpdateSubmitted)
    rewritten = type(original.entry)(
        original.entry.federation,
        original.entry.seq,
        original.entry.author,
        original.entry.key,
        UpdateSubmitted(body.round, body.update, body.examples * 100, body.norm, body.bytes),
    )
    forged = sign_entry(rewritten, KEYS.member(original.entry.author))
    tamper(ledger, "UPDATE entries SET record = ? WHERE seq = 3", [forged.record])
    _fails(ledger, r"checkpoint #1 \(size 9\): its root", entry=None)
    tamper(ledger, "DELETE FROM checkpoints")
    tamper(ledger, "DELETE FROM cosignatures")
    _fails(ledger, r"Merkle node \(0, 3\) over entries 3\.\.3 differs", entry=3)


def test_tampered_nodes_checkpoints_and_cosignatures_are_caught(ledger: Path) -> None:
    tamper(ledger, "UPDATE nodes SET hash = ? WHERE level = 2 AND idx = 1", [bytes(32)])
    _fails(ledger, r"Merkle node \(2, 1\) over entries 4\.\.7")
    tamper(ledger, "DELETE FROM nodes WHERE level = 2 AND idx = 1")
    _fails(ledger, "holds 46 Merkle nodes, the tree has 47")
    tamper(ledger, "INSERT INTO nodes VALUES (9, 9, ?)", [bytes(32)])
    _fails(ledger, r"Merkle node \(9, 9\) is stored but not part of the tree")


def test_tampered_checkpoint_signature_and_cosignature(tmp_path: Path) -> None:
    ledger = build_ledger(tmp_path / "a", rounds=2, members=3)[0]
    tamper(ledger, "UPDATE checkpoints SET signature = ? WHERE id = 2", [bytes(64)])
    _fails(ledger, r"checkpoint #2 \(size 15\).*does not verify")
    ledger = build_ledger(tmp_path / "b", rounds=2, members=3)[0]
    tamper(
        ledger, "UPDATE cosignatures SET signature = ? WHERE checkpoint = 1 AND member = 'member-00001'", [bytes(64)]
    )
    _fails(ledger, r"checkpoint #1 .*cosignature by member-00001")
    ledger = build_ledger(tmp_path / "c", rounds=2, members=3)[0]
    tamper(ledger, "UPDATE checkpoints SET size = 3 WHERE id = 1")
    _fails(ledger, "size column 3 does not match")
    ledger = build_ledger(tmp_path / "d", rounds=2, members=3)[0]
    tamper(ledger, "INSERT INTO cosignatures VALUES (7, 'member-00000', ?, ?)", [bytes(32), bytes(64)])
    _fails(ledger, "checkpoint #7, which does not exist")


def _object_rows(folder: Path) -> list[tuple[str, bytes]]:
    conn = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True)
    try:
        return [(str(d), bytes(b)) for d, b in conn.execute("SELECT digest, data FROM objects NOT INDEXED")]
    finally:
        conn.close()


def test_objects_are_checked(ledger: Path) -> None:
    report = verify_ledger(ledger)
    rows = _object_rows(ledger)
    assert not (ledger / "objects").exists() and len(rows) == report.objects == 16
    assert all(hashlib.sha256(data).hexdigest() == digest for digest, data in rows)
    digest, data = rows[5]
    tamper(ledger, "UPDATE objects SET data = ? WHERE digest = ?", [data[:-1] + bytes([data[-1] ^ 1]), digest])
    _fails(ledger, f"packed object {digest} in .*: content hashes to")
    tamper(ledger, "UPDATE objects SET data = ? WHERE digest = ?", [data, digest])
    verify_ledger(ledger)
    tamper(ledger, "UPDATE objects SET digest = ? WHERE digest = ?", ["ab" * 32, digest])  # renamed
    _fails(ledger, f"packed object {'ab' * 32} in .*: content hashes to {digest}")
    tamper(ledger, "UPDATE objects SET digest = ? WHERE digest = ?", ["not a digest", "ab" * 32])
    _fails(ledger, "a packed object is named 'not a digest' \\(text\\), not by a digest")
    tamper(ledger, "UPDATE objects SET digest = ? WHERE digest = ?", [digest, "not a digest"])
    tamper(ledger, "UPDATE objects SET data = ? WHERE digest = ?", ["text", digest])
    _fails(ledger, f"packed object {digest} in .*: stored as text, not a blob")
    tamper(ledger, "UPDATE objects SET data = ? WHERE digest = ?", [data, digest])
    verify_ledger(ledger)
    with LedgerStore(ledger, readonly=True) as store:
        final = store.entry(22).entry.body
    model = getattr(final, "model")  # noqa: B009
    tamper(ledger, "DELETE FROM objects WHERE digest = ?", [model])
    _fails(ledger, f"the model of round 3 \\({model}\\) is missing from .* and the objects table")
    verify_ledger(ledger, objects=False)


def test_object_files_beside_the_database_are_checked_too(ledger: Path) -> None:
    objects = ObjectStore(ledger / "objects")
    extra = objects.put_bytes(b"a model fetched as a file")
    assert verify_ledger(ledger).objects == 17
    path = objects.path(extra)
    path.write_bytes(b"a model fetched as a filE")
    _fails(ledger, f"object {path}: content hashes to")
    path.unlink()
    (ledger / "objects" / "stray.bin").write_bytes(b"?")
    _fails(ledger, "not a content-addressed object: .*stray.bin")


def _append(folder: Path, body: Any, author: str, key_name: str | None = None) -> None:
    with LedgerStore(folder) as store:
        writer = LedgerWriter(store)
        key = KEYS.coordinator() if (key_name or author) == "coordinator" else KEYS.member(key_name or author)
        writer.add(body, author=author, key=key)
        writer.flush()


@pytest.mark.parametrize(
    ("body", "author", "key_name", "reason"),
    [
        (UpdateSubmitted(3, D, 1, 1.0, 1), "member-00001", None, "round 3, which is already committed"),
        (UpdateSubmitted(4, D, 1, 1.0, 1), "member-00001", None, "round 4, which is not the open round"),
        (MemberRemoved("member-00001", "x"), "member-00002", None, "only the coordinator"),
        (MemberRemoved("member-00001", "x"), "mallory", None, "mallory is not a registered member"),
        (MemberRemoved("member-00001", "x"), "member-00002", "member-00003", "not member-00002's registered key"),
        (MemberRemoved("member-00009", "x"), "coordinator", None, "member-00009 is not a member"),
    ],
)
def test_properly_signed_entries_that_break_the_rules_are_caught(
    ledger: Path, body: Any, author: str, key_name: str | None, reason: str
) -> None:
    _append(ledger, body, author, key_name)
    error = _fails(ledger, f"entry 25 \\({body.kind} by {author}\\): .*{reason}", entry=25)
    assert "25" in str(error)


def test_unwitnessed_entries_are_reported(ledger: Path) -> None:
    _append(ledger, MemberRemoved("member-00001", "left"), "coordinator")
    report = verify_ledger(ledger)
    assert report.unwitnessed == 1
    assert any("not yet cosigned" in w for w in report.warnings)


def test_a_missing_ledger_or_database_garbage_is_a_verification_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no ledger found"):
        verify_ledger(tmp_path)
    (tmp_path / "ledger.sqlite").write_bytes(b"this is not a database" * 100)
    _fails(tmp_path, "cannot read|unreadable|not a database")
