"""A damaged ledger database is caught by ``verify_ledger`` and read as an error, never a crash.

The damage is what one flipped bit does on disk: a Merkle node's key that no longer sorts, an index entry
of the objects table that no longer finds its row, a column whose type byte changed (a blob read as text),
a record that no longer parses, and a stray file in the object folder.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.models import ObjectStore
from fedswarm.ledger.packed import PackedObjects
from fedswarm.ledger.store import DB_NAME, OBJECTS_DIR, LedgerStore
from fedswarm.ledger.verify import LedgerVerificationError, verify_ledger

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_damage import flip_node_level, garble_index_key, has_dbstat, stray_object_file
from ledger_fixtures import build_ledger, tamper

needs_dbstat = pytest.mark.skipif(not has_dbstat(), reason="this SQLite lacks the dbstat virtual table")


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return build_ledger(tmp_path / "run" / "ledger", rounds=3, members=4)[0]


def _integrity(folder: Path) -> str:
    conn = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _fails(folder: Path, match: str) -> str:
    with pytest.raises(LedgerVerificationError, match=match) as caught:
        verify_ledger(folder)
    return str(caught.value)


@needs_dbstat
def test_a_node_key_out_of_order_is_caught(ledger: Path) -> None:
    verify_ledger(ledger)
    flip_node_level(ledger, 1, 5)
    assert "PRIMARY KEY order" in _integrity(ledger)  # what SQLite's own check says
    message = _fails(ledger, r"the database file is damaged \(SQLite's integrity check: .*PRIMARY KEY order for nodes")
    assert message.startswith(str(ledger / DB_NAME))


@needs_dbstat
def test_a_damaged_objects_index_is_caught_and_reads_say_damaged_not_absent(ledger: Path) -> None:
    packed = PackedObjects(ledger / DB_NAME)
    digest = packed.digests()[3]
    packed.close()
    garble_index_key(ledger, digest)
    assert "missing from index" in _integrity(ledger)
    message = _fails(ledger, "index does not find its row")
    assert digest in message and str(ledger / DB_NAME) in message
    objects = ObjectStore(ledger / OBJECTS_DIR, packed=PackedObjects(ledger / DB_NAME))
    try:
        with pytest.raises(VerificationError, match=f"packed object {digest} .* the database is damaged"):
            objects.get_bytes(digest)
        with pytest.raises(VerificationError, match="the database is damaged"):
            objects.has(digest)
        with pytest.raises(KeyError):  # a digest that was never stored is simply absent
            objects.get_bytes("ab" * 32)
        assert not objects.has("ab" * 32)
    finally:
        objects.close()


def test_a_checkpoint_head_stored_as_text_is_named(ledger: Path) -> None:
    tamper(ledger, "UPDATE checkpoints SET head = CAST(head AS TEXT) WHERE id = 2")
    _fails(ledger, r"^checkpoint #2: the head is stored as text, not as a blob$")
    pattern = r"ledger.sqlite: checkpoint #2: the head is stored as text"
    with LedgerStore(ledger, readonly=True) as store, pytest.raises(VerificationError, match=pattern):
        store.checkpoints()


def test_a_cosignature_key_stored_as_text_is_named(ledger: Path) -> None:
    tamper(ledger, "UPDATE cosignatures SET key = 'k' WHERE checkpoint = 1 AND member = 'member-00001'")
    _fails(ledger, r"cosignature of checkpoint #1 by 'member-00001': the key is stored as text")
    with LedgerStore(ledger, readonly=True) as store, pytest.raises(VerificationError, match="checkpoint #1"):
        store.latest_checkpoint()


def test_a_record_that_does_not_parse_is_named_by_every_reader(ledger: Path) -> None:
    with LedgerStore(ledger, readonly=True) as store:
        record = store.record(5)
        round_ = store.entry(5).entry.round
    assert b'"author"' in record
    tamper(ledger, "UPDATE entries SET record = ? WHERE seq = 5", [record.replace(b'"author"', b'"authoR"', 1)])
    _fails(ledger, "entry 5: the record does not parse")
    with LedgerStore(ledger, readonly=True) as store:
        pattern = r"ledger.sqlite: entry 5: the record does not parse"
        with pytest.raises(VerificationError, match=pattern):
            store.entry(5)
        with pytest.raises(VerificationError, match=pattern):
            list(store.select(round=round_))
        with pytest.raises(VerificationError, match=pattern):
            list(store.entries())
        assert [e.entry.seq for e in store.entries(0, 5)] == [0, 1, 2, 3, 4]


def test_a_record_stored_as_text_is_named(ledger: Path) -> None:
    tamper(ledger, "UPDATE entries SET record = CAST(record AS TEXT) WHERE seq = 0")
    pattern = r"ledger.sqlite: entry 0: cannot read .* Could not decode"
    with LedgerStore(ledger, readonly=True) as store, pytest.raises(VerificationError, match=pattern):
        store.record(0)
    tamper(ledger, "UPDATE entries SET record = CAST(X'7b7d' AS TEXT) WHERE seq = 0")  # text that decodes
    pattern = r"entry 0: the record is stored as text, not as a blob"
    with LedgerStore(ledger, readonly=True) as store, pytest.raises(VerificationError, match=pattern):
        store.record(0)


def test_an_unreadable_index_column_names_its_entry_not_the_chunk(ledger: Path) -> None:
    tamper(ledger, "UPDATE entries SET author = CAST(X'ff6d656d' AS TEXT) WHERE seq = 7")
    message = _fails(ledger, r"^entry 7: cannot read the row")
    assert "entries 0.." not in message
    with LedgerStore(ledger, readonly=True) as store:
        assert len(list(store.entries())) == 25  # the records themselves are intact


def test_a_stray_file_in_the_object_folder_is_named(ledger: Path) -> None:
    stray = stray_object_file(ledger)
    _fails(ledger, f"object folder holds a file that is not a content-addressed object: {stray}$")
    objects = ObjectStore(ledger / OBJECTS_DIR, packed=PackedObjects(ledger / DB_NAME))
    try:
        assert objects.stray_files() == [stray]
        assert objects.verify_all() == 16  # the objects are counted, the stray file is not one
        assert "abcopy" not in set(objects.digests())
    finally:
        objects.close()


@needs_dbstat
def test_a_node_key_out_of_order_in_a_larger_table_is_caught(tmp_path: Path) -> None:
    ledger = build_ledger(tmp_path / "big", rounds=20, members=5)[0]
    flip_node_level(ledger, 1, 17)
    message = _fails(ledger, "node")
    assert message.startswith(str(ledger / DB_NAME)) and "damaged" in message
