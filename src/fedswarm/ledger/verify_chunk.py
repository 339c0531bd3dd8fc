"""The parallel half of :func:`fedswarm.ledger.verify.verify_ledger`: one aligned chunk of a log.

A chunk is the entries ``[start, stop)`` where ``start`` is a multiple of ``2**level`` and
``stop - start <= 2**level``, so every perfect subtree of the RFC 9162 tree (Laurie, Messeri and Stradling,
2021) up to that level lies inside one chunk. :func:`check_chunk` reads the chunk's records straight from
the database in one query and, without sharing anything with other chunks:

1. checks that the sequence numbers have no gaps, that each record parses as a canonical entry of this
   federation whose ``seq`` is its position and whose index columns (kind, author, round) match it
   (``update_submitted`` entries, the bulk of a log, through
   :class:`~fedswarm.ledger.update_records.UpdateParser`, the others through
   :meth:`~fedswarm.ledger.entries.Entry.decode`);
2. checks every signature (:func:`fedswarm.crypto.batch.verify_signatures`, one call per chunk);
3. hashes the leaves and every perfect subtree inside the chunk, and compares them with the stored
   node table, level by level, in one range query per level;
4. verifies the signatures and cosignatures of the checkpoints made inside the chunk (whether each
   signer was entitled to sign needs the replayed history: the caller decides that);
5. returns the entries to replay (compactly for updates), the chunk's subtree cover, the covers of the
   chunk prefixes at which checkpoints were made, which checkpoint signatures failed, and the first
   problem with the entries or the nodes.

Everything that needs the whole history (the rules, the tree above the chunks, checkpoints, objects)
stays with the caller, in log order.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from fedswarm.crypto.batch import BatchVerificationError, verify_signatures
from fedswarm.crypto.signing import SIGNATURE_SIZE
from fedswarm.ledger.entries import Entry, EntryError, UpdateSubmitted
from fedswarm.ledger.tree import perfect_levels
from fedswarm.ledger.update_records import UpdateParser

__all__ = ["ChunkResult", "ChunkTask", "UpdateItem", "check_chunk", "prefix_cover"]

UpdateItem = tuple[int, str, bytes, int, str]
"""An ``update_submitted`` entry as ``(seq, author, key, round, update digest)``: cheaper to ship."""

_SELECT_ENTRIES = "SELECT seq, record, kind, author, round FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq"
_SELECT_NUMBERS = "SELECT seq FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq"
_SELECT_NODES = "SELECT idx, hash FROM nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx"
_UPDATE_KIND = UpdateSubmitted.kind
_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"


@dataclass(frozen=True, slots=True)
class ChunkTask:
    """Entries ``[start, stop)`` of ``federation``; ``start`` is a multiple of ``2**level``.

    ``sizes`` are tree sizes in ``(start, stop]`` whose prefix cover the caller needs (checkpoints);
    ``signatures`` are ``(key, message, signature)`` of those checkpoints, verified here ahead of the
    caller's checks (which only compare keys with the registered ones when all of them verify).
    """

    federation: str
    start: int
    stop: int
    level: int
    sizes: tuple[int, ...] = ()
    signatures: tuple[tuple[bytes, bytes, bytes], ...] = ()


@dataclass(slots=True)
class ChunkResult:
    """What a chunk check found.

    ``items`` are the entries that passed (in order, from ``start``); ``covers`` maps each requested size
    up to the last good entry to the perfect-subtree hashes covering ``[start, size)``, largest first;
    ``top`` is the cover of the whole chunk (a single root for a full chunk), set only when every entry
    passed. ``node_error`` is the first ``(level, index)`` whose stored hash differs from the recomputed
    one and ``nodes_missing`` whether a node of the chunk is absent (both only checked when every entry
    passed). ``error`` is ``(seq, reason)`` of the first bad entry. ``bad_signatures`` are the positions in
    ``ChunkTask.signatures`` that do not verify.
    """

    items: list[Entry | UpdateItem] = field(default_factory=list)
    covers: dict[int, list[bytes]] = field(default_factory=dict)
    top: list[bytes] = field(default_factory=list)
    node_error: tuple[int, int] | None = None
    node_missing: tuple[int, int] | None = None
    error: tuple[int, str] | None = None
    bad_signatures: frozenset[int] = frozenset()


def prefix_cover(levels: list[list[bytes]], width: int) -> list[bytes]:
    """Perfect-subtree hashes covering the first ``width`` leaves of ``levels`` (see ``perfect_levels``)."""
    out: list[bytes] = []
    position = 0
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            out.append(levels[level][position >> level])
            position += 1 << level
    return out


def check_chunk(conn: sqlite3.Connection, task: ChunkTask) -> ChunkResult:
    """Check the entries, signatures and Merkle nodes of one chunk; stop at the first bad entry."""
    result = ChunkResult()
    start, stop = task.start, task.stop
    rows, unreadable = _read_entries(conn, start, stop)
    items = result.items
    leaves: list[bytes] = []
    signed: list[tuple[bytes, bytes, bytes]] = []
    parser = UpdateParser(task.federation)
    parse = parser.parse
    federation = task.federation
    error: tuple[int, str] | None = None
    expected = start
    for seq, record, kind, author, round_ in rows:
        if seq != expected:
            error = (expected, f"missing from the log (the next stored entry is {seq})")
            break
        expected += 1
        if type(record) is not bytes or len(record) <= SIGNATURE_SIZE:
            error = (seq, "the record is too short to hold an entry and a signature")
            break
        message = record[:-SIGNATURE_SIZE]
        fields = parse(message, seq)
        if fields is not None:
            name, key, number, update = fields
            if kind != _UPDATE_KIND or author != name or round_ != number:
                error = (seq, f"index columns ({kind}, {author}, {round_}) do not match the record")
                break
            items.append((seq, name, key, number, update))
        else:
            decoded = _check_slowly(message, seq, federation, (kind, author, round_))
            if isinstance(decoded, str):
                error = (seq, decoded)
                break
            key = decoded.key
            body = decoded.body
            if type(body) is UpdateSubmitted:
                items.append((seq, decoded.author, key, body.round, body.update))
            else:
                items.append(decoded)
        signed.append((key, message, record[-SIGNATURE_SIZE:]))
        leaves.append(_sha256(_LEAF_PREFIX + record).digest())
    else:
        if unreadable is not None:
            error = unreadable
        elif expected != stop:
            error = (expected, f"missing from the log (it ends at entry {expected - 1})")
    try:
        verify_signatures(signed)
    except BatchVerificationError as exc:
        error = (start + exc.index, f"bad signature: {exc}")
        del items[exc.index :], leaves[exc.index :]
    levels = perfect_levels(leaves)
    good = start + len(leaves)
    for size in task.sizes:
        if size <= good:
            result.covers[size] = prefix_cover(levels, size - start)
    result.bad_signatures = _failing(task.signatures)
    if error is not None:
        result.error = error
        return result
    result.top = prefix_cover(levels, stop - start)
    _compare_nodes(conn, task, levels, result)
    return result


def _read_entries(conn: sqlite3.Connection, start: int, stop: int) -> tuple[list[Any], tuple[int, str] | None]:
    """The rows of entries ``[start, stop)``; when a row cannot be read (a text column damaged into invalid
    UTF-8, a damaged page), the rows before the first unreadable one and ``(seq, why)`` for it."""
    try:
        return conn.execute(_SELECT_ENTRIES, (start, stop)).fetchall(), None
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        failure = exc
    try:  # the slow path, on failure only: row by row, to name the entry that cannot be read
        numbers = [int(seq) for (seq,) in conn.execute(_SELECT_NUMBERS, (start, stop))]
    except (sqlite3.Error, UnicodeDecodeError, TypeError, ValueError):
        return [], (start, f"cannot read entries {start}..{stop - 1}: {failure}")
    rows: list[Any] = []
    for seq in numbers:
        try:
            rows.extend(conn.execute(_SELECT_ENTRIES, (seq, seq + 1)).fetchall())
        except (sqlite3.Error, UnicodeDecodeError) as exc:
            return rows, (seq, f"cannot read the row: {exc}")
    return rows, (start, f"cannot read entries {start}..{stop - 1}: {failure}")


def _failing(items: tuple[tuple[bytes, bytes, bytes], ...]) -> frozenset[int]:
    """Positions of the signatures in ``items`` that do not verify."""
    bad: set[int] = set()
    position = 0
    while position < len(items):
        try:
            verify_signatures(items[position:])
        except BatchVerificationError as exc:
            bad.add(position + exc.index)
            position += exc.index + 1
        else:
            break
    return frozenset(bad)


def _check_slowly(message: bytes, seq: int, federation: str, index: tuple[object, object, object]) -> Entry | str:
    """Decode an entry the general way; the entry, or why it is bad."""
    try:
        entry = Entry.decode(message)
    except EntryError as exc:
        return f"the record does not parse: {exc}"
    if entry.seq != seq:
        return f"the record says it is entry {entry.seq}"
    if entry.federation != federation:
        return f"federation {entry.federation!r} is not {federation!r}"
    if (entry.kind, entry.author, entry.round) != index:
        kind, author, round_ = index
        return f"index columns ({kind}, {author}, {round_}) do not match the record"
    return entry


def _compare_nodes(conn: sqlite3.Connection, task: ChunkTask, levels: list[list[bytes]], result: ChunkResult) -> None:
    """Compare the chunk's perfect subtrees with the stored nodes, lowest level first."""
    for level, values in enumerate(levels):
        if level > task.level or not values:
            break
        first = task.start >> level
        try:
            rows = conn.execute(_SELECT_NODES, (level, first, first + len(values))).fetchall()
        except sqlite3.Error as exc:
            result.error = (task.start, f"cannot read the Merkle nodes of entries {task.start}..{task.stop - 1}: {exc}")
            return
        keys = range(first, first + len(values))
        if len(rows) == len(values) and [v for _, v in rows] == values and [i for i, _ in rows] == [*keys]:
            continue
        previous = first - 1
        for index, value in rows:  # keys strictly increasing inside the chunk, each hash as recomputed
            if index <= previous or index >= first + len(values) or value != values[index - first]:
                result.node_error = (level, index if previous < index < first + len(values) else previous + 1)
                return
            previous = index
        if len(rows) != len(values):
            found = {index for index, _ in rows}
            result.node_missing = (level, next(i for i in keys if i not in found))
            return
