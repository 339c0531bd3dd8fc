"""The append-only ledger store: signed records, their Merkle tree and checkpoints in one SQLite file.

Layout of a ledger folder::

    LEDGER/
      ledger.sqlite      entries, Merkle nodes, checkpoints, cosignatures, packed objects (WAL mode)
      objects/ab/cdef...safetensors   objects stored as files (larger ones, nodes' models, all in format 1)

Two formats are read and written: ``fedswarm-ledger/2`` (new ledgers) has an ``objects`` table where a
writer packs the models and retained updates (up to 128 KiB each) of each batch of entries
(:mod:`fedswarm.ledger.packed`); ``fedswarm-ledger/1`` has no such table and keeps every object as a
file. Both keep objects given as files (:meth:`~fedswarm.ledger.models.ObjectStore.put_bytes`) in
``objects/``.

Guarantees:

* **append-only**: the code never updates or deletes a row, and triggers abort any ``UPDATE`` or
  ``DELETE`` on the ledger tables, whoever issues it;
* **atomic appends**: an entry (or a batch of entries) and the Merkle nodes it completes are written in
  one transaction, so a process killed at any instant (even with SIGKILL) leaves a log whose committed
  prefix is complete and verifies; WAL mode with ``synchronous=NORMAL`` survives process crashes, and
  ``durability="full"`` survives power loss too at the price of an fsync per commit;
* **objects with or before their entries**: objects handed to :meth:`LedgerStore.append_many` are
  written in the entries' transaction (packed) or as files before it, and whoever stores objects as
  files does so before appending the entries that name them, so committed entries never point at
  missing objects.

**Durability.** At ``durability="normal"`` (the default) nothing is fsynced per commit: SQLite runs in
WAL mode with ``synchronous=NORMAL`` and object files are renamed into place unflushed. A crash of the
process, SIGKILL included, loses no committed transaction; a power loss or kernel crash may lose the
last transactions (each whole: packed objects go with their entries) and object files written since the
file system last flushed. ``durability="full"`` (``synchronous=FULL``, object files fsynced) survives
power loss at the price of an fsync per commit and per object file.

The ``kind``, ``author`` and ``round`` columns are an index derived from each record for queries;
:func:`fedswarm.ledger.verify.verify_ledger` checks them against the records.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.checkpoint import Checkpoint, Cosignature, TreeHead
from fedswarm.ledger.entries import EntryError, SignedEntry
from fedswarm.ledger.merkle import leaf_hash
from fedswarm.ledger.models import ObjectStore
from fedswarm.ledger.packed import OBJECTS_SCHEMA, PACK_LIMIT, PackedObjects, insert_objects
from fedswarm.ledger.sqlite_nodes import NODES_SCHEMA, SqliteNodeStore
from fedswarm.ledger.tree import MerkleTree

__all__ = [
    "DB_NAME",
    "FORMAT",
    "FORMAT_1",
    "OBJECTS_DIR",
    "SCHEMA",
    "SCHEMAS",
    "TABLES",
    "Durability",
    "LedgerStore",
    "column_bytes",
    "column_text",
    "find_ledger",
]

DB_NAME = "ledger.sqlite"
OBJECTS_DIR = "objects"
FORMAT = "fedswarm-ledger/2"
"""The format of new ledgers: objects packed in the database beside the entries that name them."""
FORMAT_1 = "fedswarm-ledger/1"
"""The previous format (every object a file), still read and appended to."""
Durability = Literal["normal", "full"]
TABLES = ("meta", "entries", "nodes", "checkpoints", "cosignatures", "objects")
"""The ledger's tables (format 1 lacks ``objects``); every one is append-only."""


def _schema(tables: tuple[str, ...]) -> str:
    return (
        """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    record BLOB NOT NULL,
    kind TEXT NOT NULL,
    author TEXT NOT NULL,
    round INTEGER
);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    head BLOB NOT NULL,
    signer TEXT NOT NULL,
    key BLOB NOT NULL,
    signature BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cosignatures (
    checkpoint INTEGER NOT NULL,
    member TEXT NOT NULL,
    key BLOB NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (checkpoint, member)
) WITHOUT ROWID;
"""
        + NODES_SCHEMA
        + (OBJECTS_SCHEMA if "objects" in tables else "")
        + "".join(
            f"""
CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table}
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {op} on {table} refused'); END;
"""
            for table in tables
            for op in ("UPDATE", "DELETE")
        )
    )


SCHEMA = _schema(TABLES)
"""DDL of a ledger database of :data:`FORMAT`: the tables and the triggers that make them append-only."""
SCHEMAS = {FORMAT: SCHEMA, FORMAT_1: _schema(TABLES[:-1])}
"""DDL of each readable format."""


def column_bytes(value: object, where: str, column: str) -> bytes:
    """A BLOB column's value; :class:`VerificationError` naming ``where`` and the column if it is not bytes."""
    if isinstance(value, bytes):
        return value
    raise VerificationError(f"{where}: the {column} is stored as {_sql_type(value)}, not as a blob")


def column_text(value: object, where: str, column: str) -> str:
    """A TEXT column's value; :class:`VerificationError` naming ``where`` and the column if it is not text."""
    if isinstance(value, str):
        return value
    raise VerificationError(f"{where}: the {column} is stored as {_sql_type(value)}, not as text")


def _sql_type(value: object) -> str:
    names = {bytes: "a blob", str: "text", int: "an integer", float: "a real", type(None): "NULL"}
    return names.get(type(value), type(value).__name__)


def _reason(exc: Exception) -> str:
    """SQLite's message, shortened (a text column that does not decode is quoted whole in it)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 160 else text[:157] + "..."


def find_ledger(path: Path) -> Path:
    """The ledger folder for ``path``: a ledger folder, a run directory or a node's data folder.

    Raises
    ------
    VerificationError
        If no ledger is found there.
    """
    path = Path(path)
    if path.is_file() and path.name == DB_NAME:
        return path.parent
    for candidate in (path, path / "ledger"):
        if (candidate / DB_NAME).is_file():
            return candidate
    raise VerificationError(f"{path}: no ledger found (expected {DB_NAME} in it or in its ledger/ folder)")


class LedgerStore:
    """One federation's log in a folder.

    Parameters
    ----------
    folder
        The ledger folder.
    create
        Create a new, empty ledger (the folder may exist but must not hold one).
    federation
        With ``create``: the federation id that every entry must carry.
    readonly
        Open without write access (for verification and audits).
    durability
        ``"normal"`` survives process crashes; ``"full"`` fsyncs every commit and survives power loss.

    Raises
    ------
    VerificationError
        If the folder holds no ledger (or already holds one with ``create``), or the database cannot be
        read, or the node table lacks the nodes of the stored entries.
    """

    def __init__(
        self,
        folder: Path,
        *,
        create: bool = False,
        federation: str | None = None,
        readonly: bool = False,
        durability: Durability = "normal",
    ) -> None:
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.readonly = readonly
        if create:
            if self.path.exists():
                raise VerificationError(f"{self.path}: a ledger already exists here")
            if federation is None:
                raise ValueError("creating a ledger needs its federation id")
            self.folder.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise VerificationError(f"{self.folder}: no ledger here ({DB_NAME} is missing)")
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            else:
                conn = sqlite3.connect(self.path, isolation_level=None)
            self._conn = conn
            if not readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
            if create:
                conn.executescript(SCHEMA)
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO meta(name, value) VALUES (?, ?)", [("format", FORMAT), ("federation", federation)]
                )
                conn.execute("COMMIT")
            meta = dict(conn.execute("SELECT name, value FROM meta NOT INDEXED").fetchall())
            row = conn.execute("SELECT MAX(seq) FROM entries").fetchone()
        except sqlite3.DatabaseError as exc:
            raise VerificationError(f"{self.path}: cannot read the ledger database: {exc}") from None
        if meta.get("format") not in SCHEMAS:
            conn.close()
            raise VerificationError(f"{self.path}: format {meta.get('format')!r} is not one of {sorted(SCHEMAS)}")
        self.format: str = meta["format"]
        packed = PackedObjects(self.path) if self.format != FORMAT_1 else None
        self.objects = ObjectStore(self.folder / OBJECTS_DIR, durable=durability == "full", packed=packed)
        self.federation: str = meta.get("federation", "")
        self._nodes = SqliteNodeStore(conn, create=False)
        size = 0 if row[0] is None else int(row[0]) + 1
        self._tree = MerkleTree(self._nodes, size=size)

    # -- reading --------------------------------------------------------------------------------
    @property
    def connection(self) -> sqlite3.Connection:
        """The SQLite connection (autocommit mode); for read queries."""
        return self._conn

    @property
    def size(self) -> int:
        """Number of entries."""
        return self._tree.size

    @property
    def tree(self) -> MerkleTree:
        """The Merkle tree over the stored nodes."""
        return self._tree

    def __len__(self) -> int:
        return self._tree.size

    def root(self, size: int | None = None) -> bytes:
        """Merkle root of the first ``size`` entries (all when ``None``)."""
        return self._tree.root(size)

    def record(self, seq: int) -> bytes:
        """The stored record of entry ``seq``.

        Raises
        ------
        KeyError
            If there is no such entry.
        VerificationError
            If the row cannot be read or its record is not stored as bytes (a damaged database).
        """
        row = self._fetch("SELECT record FROM entries WHERE seq = ?", (seq,), what=f"entry {seq}: ")
        if not row:
            raise KeyError(seq)
        return self._record_bytes(seq, row[0][0])

    def entry(self, seq: int) -> SignedEntry:
        """Entry ``seq`` parsed (its signature is not checked here).

        Raises
        ------
        KeyError
            If there is no such entry.
        VerificationError
            If its record cannot be read or does not parse (naming the database and the entry).
        """
        return self._parse(seq, self.record(seq))

    def records(self, start: int = 0, stop: int | None = None, *, batch: int = 4096) -> Iterator[tuple[int, bytes]]:
        """``(seq, record)`` pairs for ``start <= seq < stop``, in order, read in batches.

        Raises
        ------
        VerificationError
            If a row cannot be read or a record is not stored as bytes (a damaged database).
        """
        stop = self.size if stop is None else stop
        position = start
        while position < stop:
            upper = min(stop, position + batch)
            rows = self._fetch(
                "SELECT seq, record FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq",
                (position, upper),
                what=f"entries {position}..{upper - 1}: ",
            )
            for seq, record in rows:
                yield int(seq), self._record_bytes(int(seq), record)
            position = upper

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[SignedEntry]:
        """Entries ``start <= seq < stop`` parsed, in order (signatures are not checked here).

        Raises
        ------
        VerificationError
            If a record cannot be read or does not parse (naming the database and the entry).
        """
        for seq, record in self.records(start, stop):
            yield self._parse(seq, record)

    def select(self, *, kind: str | None = None, round: int | None = None) -> Iterator[SignedEntry]:
        """Entries of a ``kind`` and/or ``round`` via the index columns, in log order (parsed, not verified).

        Raises
        ------
        VerificationError
            If a record cannot be read or does not parse (naming the database and the entry).
        """
        clauses: list[str] = []
        params: list[str | int] = []
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        if round is not None:
            clauses.append("round = ?")
            params.append(round)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        for seq, record in self._stream(f"SELECT seq, record FROM entries{where} ORDER BY seq", params):
            yield self._parse(int(seq), self._record_bytes(int(seq), record))

    def _fetch(self, query: str, params: Sequence[object] = (), *, what: str = "") -> list[tuple[Any, ...]]:
        """All rows of a read query; a damaged database raises :class:`VerificationError` naming the file
        (and ``what`` was being read)."""
        try:
            return self._conn.execute(query, tuple(params)).fetchall()
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise VerificationError(f"{self.path}: {what}cannot read the ledger database: {_reason(exc)}") from None

    def _stream(self, query: str, params: Sequence[object] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of a read query one by one, a damaged database raising as in :meth:`_fetch`."""
        try:
            cursor = self._conn.execute(query, tuple(params))
            while (row := cursor.fetchone()) is not None:
                yield row
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            raise VerificationError(f"{self.path}: cannot read the ledger database: {_reason(exc)}") from None

    def _record_bytes(self, seq: int, record: object) -> bytes:
        return column_bytes(record, f"{self.path}: entry {seq}", "record")

    def _parse(self, seq: int, record: bytes) -> SignedEntry:
        try:
            return SignedEntry.from_record(record)
        except EntryError as exc:
            raise VerificationError(f"{self.path}: entry {seq}: the record does not parse: {exc}") from None

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Audit path of entry ``index`` in the tree of the first ``size`` entries."""
        return self._tree.inclusion_proof(index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof between the first ``old_size`` and the first ``new_size`` entries."""
        return self._tree.consistency_proof(old_size, new_size)

    def checkpoints(self) -> list[Checkpoint]:
        """All checkpoints with their cosignatures, oldest first.

        Raises
        ------
        VerificationError
            If a checkpoint or cosignature row cannot be read, holds a column of the wrong type, or its
            tree head does not parse (naming the database and the checkpoint).
        """
        cosigs: dict[int, list[Cosignature]] = {}
        for checkpoint_id, member, key, signature in self._fetch(
            "SELECT checkpoint, member, key, signature FROM cosignatures ORDER BY checkpoint, member"
        ):
            where = f"{self.path}: cosignature of checkpoint #{checkpoint_id} by {member!r}"
            cosigs.setdefault(int(checkpoint_id), []).append(
                Cosignature(
                    column_text(member, where, "member"),
                    column_bytes(key, where, "key"),
                    column_bytes(signature, where, "signature"),
                )
            )
        out = []
        for checkpoint_id, head, signer, key, signature in self._fetch(
            "SELECT id, head, signer, key, signature FROM checkpoints ORDER BY id"
        ):
            where = f"{self.path}: checkpoint #{checkpoint_id}"
            head = column_bytes(head, where, "head")
            try:
                parsed = TreeHead.decode(head)
            except VerificationError as exc:
                raise VerificationError(f"{where}: {exc}") from None
            out.append(
                Checkpoint(
                    parsed,
                    column_text(signer, where, "signer"),
                    column_bytes(key, where, "key"),
                    column_bytes(signature, where, "signature"),
                    tuple(cosigs.get(int(checkpoint_id), ())),
                )
            )
        return out

    def latest_checkpoint(self) -> Checkpoint | None:
        """The most recent checkpoint, if any."""
        found = self.checkpoints()
        return found[-1] if found else None

    # -- writing --------------------------------------------------------------------------------
    def append(self, signed: SignedEntry) -> int:
        """Append one signed entry; return its sequence number."""
        return self.append_many([signed]).start

    def append_many(self, signed: Sequence[SignedEntry], *, objects: Sequence[tuple[str, bytes]] = ()) -> range:
        """Append signed entries in one transaction (all or none); return their sequence numbers.

        ``objects`` are ``(digest, data)`` pairs stored with them: packed in the same transaction (format
        2, objects of at most :data:`~fedswarm.ledger.packed.PACK_LIMIT` bytes), or as files written
        before it (larger objects, and every object in format 1). Signatures and digests are not checked
        here (the writer made them; a replica checks what it receives, verification re-hashes every
        object).

        Raises
        ------
        ValueError
            If an entry's ``seq`` is not the next position, or its federation is not the ledger's.
        """
        self._writable()
        start = self._tree.size
        rows = []
        leaves = []
        for offset, item in enumerate(signed):
            entry = item.entry
            if entry.seq != start + offset:
                raise ValueError(f"entry seq {entry.seq} is not the next position {start + offset}")
            if entry.federation != self.federation:
                raise ValueError(f"entry {entry.seq} is for federation {entry.federation!r}, not {self.federation!r}")
            rows.append((entry.seq, item.record, entry.kind, entry.author, entry.round))
            leaves.append(leaf_hash(item.record))
        limit = PACK_LIMIT if self.objects.packed is not None else -1
        packed = [(digest, data) for digest, data in objects if len(data) <= limit]
        for _digest, data in objects:
            if len(data) > limit:
                self.objects.put_bytes(data)  # a file, before the entries that name it
        if not rows and not packed:
            return range(start, start)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if packed:
                insert_objects(conn, packed)
            conn.executemany("INSERT INTO entries(seq, record, kind, author, round) VALUES (?, ?, ?, ?, ?)", rows)
            indices = self._tree.extend(leaves)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._tree = MerkleTree(self._nodes, size=start)
            raise
        return indices

    def add_checkpoint(self, checkpoint: Checkpoint) -> int:
        """Store a checkpoint of this log (signature and root checked); return its id.

        Raises
        ------
        VerificationError
            If its federation, size or root do not match this log, or its signature does not verify.
        """
        self._writable()
        head = checkpoint.head
        if head.federation != self.federation:
            raise VerificationError(f"checkpoint is for federation {head.federation!r}, not {self.federation!r}")
        if head.size > self.size:
            raise VerificationError(f"checkpoint of size {head.size} is beyond the log's {self.size} entries")
        if self.root(head.size) != head.root:
            raise VerificationError(f"checkpoint of size {head.size}: its root is not this log's root at that size")
        checkpoint.verify_signature()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(
                "INSERT INTO checkpoints(size, head, signer, key, signature) VALUES (?, ?, ?, ?, ?)",
                (head.size, head.encode(), checkpoint.signer, checkpoint.key, checkpoint.signature),
            )
            checkpoint_id = int(cursor.lastrowid or 0)
            self._insert_cosignatures(checkpoint_id, checkpoint.cosignatures)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return checkpoint_id

    def add_cosignatures(self, checkpoint_id: int, cosignatures: Sequence[Cosignature]) -> None:
        """Add cosignatures to a stored checkpoint (those already present are skipped)."""
        self._writable()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._insert_cosignatures(checkpoint_id, cosignatures)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _insert_cosignatures(self, checkpoint_id: int, cosignatures: Sequence[Cosignature]) -> None:
        self._conn.executemany(
            "INSERT INTO cosignatures(checkpoint, member, key, signature) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(checkpoint_id, c.member, c.key, c.signature) for c in cosignatures],
        )

    def _writable(self) -> None:
        if self.readonly:
            raise PermissionError(f"{self.path} is open read-only")

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Fold the write-ahead log into the database file and close it."""
        conn = self._conn
        try:
            self.objects.close()
            if not self.readonly:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
