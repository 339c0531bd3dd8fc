"""Objects packed in the ledger database: stored with their entries, readable from any thread, format 1
ledgers (objects as files) still read and written, and a writer killed mid-append leaves a verifiable log."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fedswarm.codec.tensors import digest as tensor_digest
from fedswarm.codec.tensors import encode
from fedswarm.core.parameters import Parameters
from fedswarm.ledger.audit import lineage, load_audit
from fedswarm.ledger.blame import blame
from fedswarm.ledger.entries import EvaluationReported, FederationCreated, MemberKey
from fedswarm.ledger.packed import PACK_LIMIT
from fedswarm.ledger.simkeys import SimulationKeys
from fedswarm.ledger.store import DB_NAME, FORMAT, FORMAT_1, SCHEMAS, TABLES, LedgerStore
from fedswarm.ledger.verify import LedgerVerificationError, verify_ledger
from fedswarm.ledger.writer import LedgerWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import build_ledger

KEYS = SimulationKeys(0)
MODEL = encode(Parameters({"w": np.arange(4, dtype=np.float64)}))


def _new_ledger(folder: Path) -> tuple[LedgerStore, LedgerWriter, str]:
    store = LedgerStore(folder, create=True, federation="packed")
    writer = LedgerWriter(store)
    initial = writer.put_object(MODEL)
    members = (MemberKey("m0", KEYS.member("m0").public_key().raw),)
    writer.add(FederationCreated("0" * 64, 1, members, "fedavg", initial), author="coordinator", key=KEYS.coordinator())
    return store, writer, initial


def _rows(folder: Path) -> dict[str, bytes]:
    conn = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True)
    try:
        return {str(d): bytes(b) for d, b in conn.execute("SELECT digest, data FROM objects NOT INDEXED")}
    finally:
        conn.close()


def test_objects_are_committed_with_the_batch_that_follows_them(tmp_path: Path) -> None:
    store, writer, initial = _new_ledger(tmp_path / "l")
    assert initial == hashlib.sha256(MODEL).hexdigest()
    assert _rows(store.folder) == {} and not store.objects.has(initial)  # staged, not yet written
    writer.flush()
    assert store.format == FORMAT and _rows(store.folder) == {initial: MODEL}
    assert store.objects.get_bytes(initial) == MODEL and store.objects.has(initial)
    assert list(store.objects.digests()) == [initial]
    assert not (store.folder / "objects").exists()
    extra = writer.put_object(b"an object on its own")
    assert writer.flush() == range(1, 1)  # no entry, yet the object is written
    assert store.objects.get_bytes(extra) == b"an object on its own"
    assert writer.put_object(MODEL) == initial  # stored once
    writer.flush()
    assert len(_rows(store.folder)) == 2
    store.close()
    assert verify_ledger(tmp_path / "l").objects == 2


def test_a_failed_append_writes_neither_the_entries_nor_their_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, writer, initial = _new_ledger(tmp_path / "l")

    def broken(leaves: object) -> range:
        raise OSError("disk full")

    monkeypatch.setattr(store.tree, "extend", broken)
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    assert store.size == 0 and _rows(store.folder) == {} and not store.objects.has(initial)
    monkeypatch.undo()
    assert writer.flush() == range(0, 1)  # nothing was lost: the retry writes both
    assert _rows(store.folder) == {initial: MODEL}
    store.close()
    verify_ledger(tmp_path / "l")


def test_objects_are_read_from_other_threads_while_the_writer_holds_the_store(tmp_path: Path) -> None:
    store, writer, initial = _new_ledger(tmp_path / "l")
    writer.flush()
    found: list[object] = []

    def read() -> None:
        try:
            found.extend([store.objects.has(initial), store.objects.get_bytes(initial), store.objects.has("0" * 64)])
        except Exception as exc:  # reported below
            found.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    assert found == [True, MODEL, False]
    store.close()


def _as_format_1(source: Path, target: Path) -> None:
    """Rewrite a ledger in format 1: the same rows, and every packed object as a file."""
    target.mkdir(parents=True)
    conn = sqlite3.connect(target / DB_NAME, isolation_level=None)
    try:
        conn.executescript(SCHEMAS[FORMAT_1])
        conn.execute("ATTACH DATABASE ? AS src", (f"file:{source / DB_NAME}?mode=ro",))
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO meta SELECT name, CASE name WHEN 'format' THEN ? ELSE value END FROM src.meta", (FORMAT_1,)
        )
        for table in TABLES[1:-1]:
            conn.execute(f"INSERT INTO {table} SELECT * FROM src.{table}")
        objects = conn.execute("SELECT digest, data FROM src.objects").fetchall()
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE src")
    finally:
        conn.close()
    for digest, data in objects:
        path = target / "objects" / digest[:2] / f"{digest[2:]}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_a_format_1_ledger_is_still_verified_audited_and_appended_to(tmp_path: Path) -> None:
    folder, models = build_ledger(tmp_path / "new", rounds=3, members=3)
    old = tmp_path / "old"
    _as_format_1(folder, old)
    report = verify_ledger(old)
    assert report.objects == verify_ledger(folder).objects == 4 + 9
    log = load_audit(old)
    steps = lineage(log, tensor_digest(models[3]))
    assert [s.round for s in steps] == [1, 2, 3]
    assert log.objects.get_parameters(steps[-1].model).allclose(models[3])
    assert blame(log).contributors  # reads the stored updates
    with LedgerStore(old) as store:
        assert store.format == FORMAT_1 and store.objects.packed is None
        writer = LedgerWriter(store)
        extra = writer.put_object(b"written as a file in format 1")
        writer.add(
            EvaluationReported(3, steps[-1].model, "central", 0, {"accuracy": 0.5}),
            author="coordinator",
            key=KEYS.coordinator(),
        )
        writer.flush()
        assert store.objects.path(extra).read_bytes() == b"written as a file in format 1"
    assert verify_ledger(old).objects == 4 + 9 + 1
    store_path = old / "objects" / extra[:2] / f"{extra[2:]}.safetensors"
    store_path.write_bytes(b"written as a file in format 2")
    with pytest.raises(LedgerVerificationError, match="content hashes to"):
        verify_ledger(old)


def test_a_format_1_database_with_an_objects_table_is_refused(tmp_path: Path) -> None:
    folder, _ = build_ledger(tmp_path / "l", rounds=1, members=3)
    conn = sqlite3.connect(folder / DB_NAME, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER meta_no_update")
        conn.execute("UPDATE meta SET value = ? WHERE name = 'format'", (FORMAT_1,))
        conn.executescript(SCHEMAS[FORMAT])
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    with pytest.raises(LedgerVerificationError, match="schema is not the ledger format.s: unexpected .*objects"):
        verify_ledger(folder)


WRITER = r"""
import os, sys
from pathlib import Path
from fedswarm.ledger.checkpoint import TreeHead, cosign, sign_tree_head
from fedswarm.ledger.entries import EvaluationReported, FederationCreated, MemberKey
from fedswarm.ledger.packed import PACK_LIMIT
from fedswarm.ledger.simkeys import SimulationKeys
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.writer import LedgerWriter

keys = SimulationKeys(0)
store = LedgerStore(Path(sys.argv[1]), create=True, federation="kill")
writer = LedgerWriter(store, batch=1 << 30)
initial = writer.put_object(b"initial model")
members = (MemberKey("m0", keys.member("m0").public_key().raw),)
writer.add(FederationCreated("0" * 64, 1, members, "fedavg", initial), author="coordinator", key=keys.coordinator())
writer.flush()
print("ready", flush=True)
step = 0
while True:
    step += 1
    for _ in range(4):
        writer.put_object(os.urandom(5000))
    for i in range(10):
        writer.add(EvaluationReported(0, initial, "central", 0, {"step": step, "i": i}), author="coordinator", key=keys.coordinator())
    writer.flush()
    head = sign_tree_head(TreeHead("kill", store.size, store.root(), step), signer="coordinator", key=keys.coordinator())
    store.add_checkpoint(head.with_cosignatures([cosign(head, member="m0", key=keys.member("m0"))]))
"""


def _count(folder: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM objects").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("delay", [0.0, 0.023])
def test_a_writer_killed_while_packing_objects_leaves_a_verifiable_log(tmp_path: Path, delay: float) -> None:
    folder = tmp_path / "l"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready", process.stderr.read() if process.stderr else ""
        deadline = time.monotonic() + 30
        while _count(folder) < 40:
            assert process.poll() is None and time.monotonic() < deadline, "the writer did not append in time"
            time.sleep(0.005)
        time.sleep(delay)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    report = verify_ledger(folder)
    assert report.objects == _count(folder) >= 40
    assert (report.objects - 1) % 4 == 0 and report.entries == 1 + 10 * ((report.objects - 1) // 4)  # whole batches


def test_objects_larger_than_the_pack_limit_are_files_written_before_the_entries(tmp_path: Path) -> None:
    store, writer, initial = _new_ledger(tmp_path / "l")
    large = bytes(range(256)) * (PACK_LIMIT // 256 + 1)
    big = writer.put_object(large)
    assert not store.objects.path(big).exists()
    writer.flush()
    assert store.objects.path(big).read_bytes() == large and big not in _rows(store.folder)
    assert set(_rows(store.folder)) == {initial} and store.objects.get_bytes(big) == large
    store.close()
    assert verify_ledger(tmp_path / "l").objects == 2
