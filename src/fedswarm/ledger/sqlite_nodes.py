"""A :class:`~fedswarm.ledger.tree.NodeStore` in an SQLite table, so the Merkle tree lives beside the log.

The table is ``nodes(level, idx, hash)`` with ``(level, idx)`` as primary key. It is append-only: the
store never updates or deletes a row (the ledger store adds triggers that abort any attempt).

Transactions: the connection must be in autocommit mode (``isolation_level=None``). When the caller has
a transaction open (the ledger store appends entries and their nodes together), :meth:`put_many` writes
inside it and a refused write raises with the caller left to roll back; otherwise :meth:`put_many` wraps
its writes in a transaction of its own, so they are all written or none.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from fedswarm.ledger.merkle import HASH_SIZE
from fedswarm.ledger.tree import NodeKey

__all__ = ["NODES_SCHEMA", "SqliteNodeStore"]

NODES_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
"""
"""DDL of the node table."""

_INSERT = "INSERT INTO nodes(level, idx, hash) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
_SELECT = "SELECT hash FROM nodes WHERE level = ? AND idx = ?"


class SqliteNodeStore:
    """Perfect-subtree hashes of a Merkle tree in the ``nodes`` table of an SQLite connection.

    Parameters
    ----------
    connection
        An open connection in autocommit mode; the table is created if missing (unless read-only).
    create
        Create the table when it does not exist.
    """

    __slots__ = ("_conn",)

    def __init__(self, connection: sqlite3.Connection, *, create: bool = True) -> None:
        if connection.isolation_level is not None:
            raise ValueError("SqliteNodeStore needs a connection in autocommit mode (isolation_level=None)")
        self._conn = connection
        if create:
            connection.executescript(NODES_SCHEMA)

    def get(self, level: int, index: int) -> bytes:
        """Hash of node ``(level, index)``; :class:`KeyError` if it was never written."""
        row = self._conn.execute(_SELECT, (level, index)).fetchone()
        if row is None:
            raise KeyError((level, index))
        return bytes(row[0])

    def put(self, level: int, index: int, value: bytes) -> None:
        """Write the hash of node ``(level, index)``."""
        self.put_many([(level, index, value)])

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes]:
        """Hashes of several nodes, in the order of ``keys``; :class:`KeyError` if one is missing."""
        execute = self._conn.execute
        out: list[bytes] = []
        for level, index in keys:
            row = execute(_SELECT, (level, index)).fetchone()
            if row is None:
                raise KeyError((level, index))
            out.append(bytes(row[0]))
        return out

    def put_many(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        """Write several ``(level, index, value)`` nodes atomically.

        Raises
        ------
        ValueError
            If a value is not a hash, or a node already exists with a different hash.
        """
        for level, index, value in nodes:
            if len(value) != HASH_SIZE:
                raise ValueError(f"node ({level}, {index}) is {len(value)} bytes, expected {HASH_SIZE}")
        conn = self._conn
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN IMMEDIATE")
        try:
            before = conn.total_changes
            conn.executemany(_INSERT, nodes)
            if conn.total_changes - before != len(nodes):
                for level, index, value in nodes:
                    stored = self.get(level, index)
                    if stored != value:
                        raise ValueError(f"node ({level}, {index}) is already stored with a different hash")
        except BaseException:
            if own:
                conn.execute("ROLLBACK")
            raise
        if own:
            conn.execute("COMMIT")

    def count(self) -> int:
        """Number of stored nodes."""
        row = self._conn.execute("SELECT COUNT(*) FROM nodes").fetchone()
        return int(row[0])
