"""Tests of the SQLite ledger store, its node table and the content-addressed objects."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fedswarm.codec.tensors import digest as tensor_digest
from fedswarm.core.errors import VerificationError
from fedswarm.core.parameters import Parameters
from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.checkpoint import TreeHead, cosign, sign_tree_head
from fedswarm.ledger.entries import Entry, MemberRemoved, SignedEntry, sign_entry
from fedswarm.ledger.merkle import EMPTY_ROOT, consistency_proof, inclusion_proof, leaf_hash, root
from fedswarm.ledger.models import ObjectStore
from fedswarm.ledger.sqlite_nodes import SqliteNodeStore
from fedswarm.ledger.store import DB_NAME, LedgerStore, find_ledger
from fedswarm.ledger.tree import MerkleTree
from fedswarm.ledger.writer import LedgerWriter

KEY = SigningKey.from_seed(bytes(range(32)))


def _signed(seq: int, federation: str = "fed") -> SignedEntry:
    return sign_entry(Entry(federation, seq, "coordinator", KEY.public_key().raw, MemberRemoved(f"m{seq}", "x")), KEY)


def _fill(store: LedgerStore, n: int) -> list[bytes]:
    records = [_signed(i).record for i in range(store.size, store.size + n)]
    store.append_many([SignedEntry.from_record(r) for r in records])
    return records


def test_append_read_and_proofs_match_the_pure_functions(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "l", create=True, federation="fed")
    assert store.size == 0 and store.root() == EMPTY_ROOT
    records = _fill(store, 5) + _fill(store, 8)
    assert store.size == 13
    assert store.root() == root(records)
    assert store.root(6) == root(records[:6])
    assert store.inclusion_proof(4) == inclusion_proof(records, 4)
    assert store.consistency_proof(5) == consistency_proof(records, 5)
    assert [r for _, r in store.records(batch=3)] == records
    assert store.record(7) == records[7]
    assert store.entry(7).entry.seq == 7
    assert [s.entry.seq for s in store.select(kind="member_removed")] == list(range(13))
    store.close()
    reopened = LedgerStore(tmp_path / "l")
    assert reopened.size == 13 and reopened.root() == root(records)
    _fill(reopened, 1)
    assert reopened.root() == root([*records, _signed(13).record])
    reopened.close()


def test_seq_and_federation_are_checked_and_a_refused_batch_writes_nothing(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "l", create=True, federation="fed")
    _fill(store, 2)
    with pytest.raises(ValueError, match="next position"):
        store.append_many([_signed(2), _signed(4)])
    with pytest.raises(ValueError, match="federation"):
        store.append(_signed(2, federation="other"))
    assert store.size == 2
    count = store.connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    assert count == 2
    store.close()


@pytest.mark.parametrize("table", ["entries", "nodes", "checkpoints", "meta"])
def test_triggers_refuse_update_and_delete(tmp_path: Path, table: str) -> None:
    store = LedgerStore(tmp_path / "l", create=True, federation="fed")
    _fill(store, 3)
    head = TreeHead("fed", 3, store.root(), 1)
    store.add_checkpoint(sign_tree_head(head, signer="coordinator", key=KEY))
    conn = store.connection
    column = {"entries": "record", "nodes": "hash", "checkpoints": "head", "meta": "value"}[table]
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(f"UPDATE {table} SET {column} = {column}")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(f"DELETE FROM {table}")
    store.close()


def test_wal_mode_and_create_refuses_an_existing_ledger(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "l", create=True, federation="fed")
    assert store.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    with pytest.raises(VerificationError, match="already exists"):
        LedgerStore(tmp_path / "l", create=True, federation="fed")
    with pytest.raises(VerificationError, match="no ledger"):
        LedgerStore(tmp_path / "nothing")


def test_readonly_store_refuses_writes(tmp_path: Path) -> None:
    LedgerStore(tmp_path / "l", create=True, federation="fed").close()
    store = LedgerStore(tmp_path / "l", readonly=True)
    with pytest.raises(PermissionError):
        store.append(_signed(0))
    store.close()


def test_checkpoints_are_checked_against_the_log(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "l", create=True, federation="fed")
    _fill(store, 4)
    good = sign_tree_head(TreeHead("fed", 3, store.root(3), 5), signer="coordinator", key=KEY)
    checkpoint_id = store.add_checkpoint(good)
    with pytest.raises(VerificationError, match="not this log's root"):
        store.add_checkpoint(sign_tree_head(TreeHead("fed", 3, store.root(2), 5), signer="c", key=KEY))
    with pytest.raises(VerificationError, match="beyond"):
        store.add_checkpoint(sign_tree_head(TreeHead("fed", 9, store.root(), 5), signer="c", key=KEY))
    with pytest.raises(VerificationError, match="federation"):
        store.add_checkpoint(sign_tree_head(TreeHead("x", 3, store.root(3), 5), signer="c", key=KEY))
    forged = sign_tree_head(TreeHead("fed", 4, store.root(), 5), signer="c", key=KEY)
    forged = type(forged)(forged.head, forged.signer, forged.key, bytes(64))
    with pytest.raises(VerificationError, match="signature"):
        store.add_checkpoint(forged)
    member = SigningKey.from_seed(bytes(32))
    store.add_cosignatures(checkpoint_id, [cosign(good, member="m1", key=member)])
    store.add_cosignatures(checkpoint_id, [cosign(good, member="m1", key=member)])
    (stored,) = store.checkpoints()
    assert stored.head == good.head and [c.member for c in stored.cosignatures] == ["m1"]
    store.close()


def test_writer_signs_numbers_and_batches(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / "l", create=True, federation="fed")
    writer = LedgerWriter(store, batch=3)
    for i in range(7):
        writer.add(MemberRemoved(f"m{i}", "r"), author="coordinator", key=KEY)
    assert store.size == 6 and writer.pending == 1 and writer.next_seq == 7
    assert writer.flush() == range(6, 7)
    for seq, record in store.records():
        signed = SignedEntry.from_record(record)
        assert signed.entry.seq == seq
        KEY.public_key().verify(signed.message, signed.signature)
    store.close()


def test_sqlite_node_store_contract(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "n.sqlite", isolation_level=None)
    nodes = SqliteNodeStore(conn)
    tree = MerkleTree(nodes)
    leaves = [leaf_hash(bytes([i])) for i in range(11)]
    tree.extend(leaves[:5])
    for value in leaves[5:]:
        tree.append(value)
    assert tree.root() == root([bytes([i]) for i in range(11)])
    with pytest.raises(KeyError):
        nodes.get(0, 99)
    nodes.put(0, 3, leaves[3])  # same value again is allowed
    with pytest.raises(ValueError, match="different hash"):
        nodes.put_many([(0, 11, leaves[0]), (0, 3, leaves[4])])
    with pytest.raises(KeyError):
        nodes.get(0, 11)  # the whole batch was rolled back
    with pytest.raises(ValueError, match="bytes"):
        nodes.put(0, 12, b"short")
    reopened = MerkleTree(SqliteNodeStore(conn), size=11)
    assert reopened.root() == tree.root()
    with pytest.raises(ValueError, match="autocommit"):
        SqliteNodeStore(sqlite3.connect(tmp_path / "m.sqlite"))
    conn.close()


def test_object_store_is_content_addressed_and_checked(tmp_path: Path) -> None:
    objects = ObjectStore(tmp_path / "objects")
    params = Parameters({"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    digest = objects.put_parameters(params)
    assert digest == tensor_digest(params)
    path = objects.path(digest)
    assert path == tmp_path / "objects" / digest[:2] / f"{digest[2:]}.safetensors"
    assert objects.get_parameters(digest).allclose(params)
    assert objects.put_parameters(params) == digest
    assert list(objects.digests()) == [digest]
    other = objects.put_bytes(b"hello")
    assert other == hashlib.sha256(b"hello").hexdigest()
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(VerificationError, match="hashes to"):
        objects.verify(digest)
    with pytest.raises(VerificationError, match="missing"):
        objects.verify("0" * 64)
    (tmp_path / "objects" / "zz.txt").write_text("?")
    (tmp_path / "objects" / "ab").mkdir()
    (tmp_path / "objects" / "ab" / "x.safetensors.123.tmp").write_text("partial")
    assert [p.name for p in objects.stray_files()] == ["zz.txt"]
    with pytest.raises(ValueError, match="not a digest"):
        objects.path("../etc")


def test_find_ledger_accepts_ledger_run_and_node_folders(tmp_path: Path) -> None:
    LedgerStore(tmp_path / "run" / "ledger", create=True, federation="fed").close()
    assert find_ledger(tmp_path / "run") == tmp_path / "run" / "ledger"
    assert find_ledger(tmp_path / "run" / "ledger") == tmp_path / "run" / "ledger"
    assert find_ledger(tmp_path / "run" / "ledger" / DB_NAME) == tmp_path / "run" / "ledger"
    with pytest.raises(VerificationError, match="no ledger found"):
        find_ledger(tmp_path)
