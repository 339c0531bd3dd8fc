"""Objects packed into the ledger database: models and retained updates as rows of an ``objects`` table.

A ledger of format 2 keeps the objects its writer stores (the models a run produces and, with
``retain_updates``, every accepted update) as rows ``(digest, data)`` of the ``objects`` table of
``ledger.sqlite``, where ``data`` is the object's canonical bytes and ``digest`` their lowercase hex
SHA-256, when they are at most :data:`PACK_LIMIT` bytes; larger objects are files, as in format 1
(SQLite reads and writes small blobs faster than the file system, large ones slower, and a large blob
would be written twice, to the write-ahead log and then to the database). The writer inserts a round's objects in the same transaction as the entries that name them
(:meth:`fedswarm.ledger.store.LedgerStore.append_many`), so a crash at any instant leaves either a round's
entries together with their objects or neither, and a round costs one SQLite commit instead of one file
creation per object. Like every ledger table, ``objects`` is append-only (triggers abort ``UPDATE`` and
``DELETE``); a digest already present is not written again.

:class:`PackedObjects` reads the table through a read-only connection of its own, opened on first use
and guarded by a lock, so any thread may ask for an object while another thread owns the writing
connection. That connection reads text as bytes, so a damaged row is reported as such rather than
failing to decode.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from fedswarm.core.errors import VerificationError

__all__ = ["OBJECTS_SCHEMA", "PACK_LIMIT", "PackedObjects", "PackedRow", "insert_objects"]

PACK_LIMIT = 1 << 17
"""Objects up to this many bytes (128 KiB) are packed in the database; larger ones are files."""

OBJECTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    digest TEXT PRIMARY KEY,
    data BLOB NOT NULL
);
"""
"""DDL of the table of packed objects."""

_INSERT = "INSERT INTO objects(digest, data) VALUES (?, ?) ON CONFLICT(digest) DO NOTHING"


class PackedRow(NamedTuple):
    """A row of the ``objects`` table as stored: each column's SQLite type and raw bytes."""

    name_type: str
    name: bytes
    data_type: str
    data: bytes


def insert_objects(connection: sqlite3.Connection, objects: Sequence[tuple[str, bytes]]) -> None:
    """Insert ``(digest, data)`` rows inside the caller's open transaction (digests already present are kept).

    The caller computed each digest as the SHA-256 of its data; verification re-hashes every row.
    """
    if not connection.in_transaction:
        raise ValueError("packed objects are inserted inside the transaction of the entries that name them")
    connection.executemany(_INSERT, objects)


class PackedObjects:
    """Read access to the ``objects`` table of a ledger database.

    Parameters
    ----------
    database
        The ``ledger.sqlite`` file.
    """

    __slots__ = ("_conn", "_database", "_lock")

    def __init__(self, database: Path) -> None:
        self._database = Path(database)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @property
    def database(self) -> Path:
        """The database file."""
        return self._database

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                f"file:{self._database}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            conn.text_factory = bytes
            self._conn = conn
        return self._conn

    def get(self, digest: str) -> bytes | None:
        """The stored bytes of ``digest`` (not checked against it here), or ``None`` when no row has that name.

        Raises
        ------
        VerificationError
            If the row holds something other than bytes, the table cannot be read, or a row of that name
            is in the table but its index does not find it (a damaged database: absent is not damaged).
        """
        row = self._lookup("SELECT typeof(data), data FROM objects WHERE digest = ?", digest)
        if row is None:
            self._absent(digest)
            return None
        if row[0] != b"blob":
            raise VerificationError(f"packed object {digest} in {self._database}: stored as {row[0]!r}, not a blob")
        return bytes(row[1])

    def has(self, digest: str) -> bool:
        """Whether a row named ``digest`` exists.

        Raises
        ------
        VerificationError
            As :meth:`get`, when the table cannot be read or its index misses a row it holds.
        """
        if self._lookup("SELECT 1 FROM objects WHERE digest = ?", digest) is not None:
            return True
        self._absent(digest)
        return False

    def indexed(self, digest: str) -> bool:
        """Whether the table's index finds a row named ``digest`` (no check of the table itself)."""
        return self._lookup("SELECT 1 FROM objects WHERE digest = ?", digest) is not None

    def _lookup(self, query: str, digest: str) -> tuple[Any, ...] | None:
        try:
            with self._lock:
                row: tuple[Any, ...] | None = self._connection().execute(query, (digest,)).fetchone()
        except sqlite3.Error as exc:
            raise VerificationError(f"{self._database}: cannot read the objects table: {exc}") from None
        return row

    def _absent(self, digest: str) -> None:
        """Check that a digest the index does not find is really absent (a scan of the table, on misses only)."""
        row = self._lookup("SELECT 1 FROM objects NOT INDEXED WHERE digest = ?", digest)
        if row is not None:
            raise VerificationError(
                f"packed object {digest} in {self._database}: the row is in the objects table but the table's "
                "index does not find it: the database is damaged"
            )

    def digests(self) -> list[str]:
        """The names of the rows, sorted (names that are not ASCII text are skipped: :meth:`rows` has them)."""
        with self._lock:
            rows = self._connection().execute("SELECT digest FROM objects WHERE typeof(digest) = 'text'").fetchall()
        names = []
        for (name,) in rows:
            try:
                names.append(bytes(name).decode("ascii"))
            except UnicodeDecodeError:
                continue
        return sorted(names)

    def rows(self, *, batch: int = 256) -> Iterator[PackedRow]:
        """Every row as stored, read from the table itself (not its index), in batches."""
        last = 0
        while True:
            with self._lock:
                found = (
                    self._connection()
                    .execute(
                        "SELECT rowid, typeof(digest), digest, typeof(data), data FROM objects NOT INDEXED "
                        "WHERE rowid > ? ORDER BY rowid LIMIT ?",
                        (last, batch),
                    )
                    .fetchall()
                )
            if not found:
                return
            for _rowid, name_type, name, data_type, data in found:
                yield PackedRow(_text(name_type), _raw(name), _text(data_type), _raw(data))
            last = int(found[-1][0])

    def close(self) -> None:
        """Close the reading connection (it is reopened if the object is used again)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _raw(value: object) -> bytes:
    """A column's bytes (text and blobs come as bytes; numbers, as their decimal text)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return b"" if value is None else str(value).encode("ascii")


def _text(value: object) -> str:
    return bytes(value).decode("ascii") if isinstance(value, bytes | bytearray) else str(value)
