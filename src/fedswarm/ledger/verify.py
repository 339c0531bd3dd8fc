"""Verify a whole ledger folder: every record, signature, rule, Merkle node, checkpoint and object.

:func:`verify_ledger` checks, in log order, and stops at the first problem:

1. the entries are numbered ``0 .. n-1`` without gaps, each record parses as a canonical entry whose
   ``seq`` is its position, whose index columns (kind, author, round) match it, and whose signature
   verifies under the key it names;
2. replayed through :class:`~fedswarm.ledger.state.LedgerState`, the history follows the rules (the key
   is the author's registered key, rounds and updates fit together, ...);
3. the Merkle tree recomputed from the records equals the stored node table, node for node;
4. every checkpoint is signed by the coordinator or a member registered at its size (on the network, the
   member that gathered its cosignatures) over the recomputed root of its size, every cosignature is by a
   member registered at that size, and finality (quorum) is counted;
5. every object (a file in ``objects/`` or, in format 2, a row of the ``objects`` table) hashes to its
   name, is found by its name (a packed row through the table's index), no other file is in the object
   folder, and every model the log names is present;
6. the database file itself is sound: SQLite's ``PRAGMA integrity_check`` (every page, the order of the
   keys of every table and index, every index entry against its row), which catches damage that leaves
   each row readable by a scan but no longer found by its key.

The log is cut into aligned chunks of ``2**k`` entries, each a perfect subtree of the log's tree, which
``workers`` processes check shared-nothing (:mod:`fedswarm.ledger.verify_chunk`): reading the chunk's
records and nodes straight from the database, parsing, checking signatures, hashing the leaves and every
subtree inside the chunk and comparing them with the stored nodes. The calling process replays the rules
in log order, builds the tree above the chunks from their roots (and the roots at checkpoint sizes from
the covers the chunks return), and compares the few nodes up there. Problems are reported in the order
of the list above, whatever order the chunks finish in. A failure raises
:class:`LedgerVerificationError` naming the first bad entry (or node, checkpoint, object) and why.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fedswarm.core.errors import FedswarmError, VerificationError
from fedswarm.ledger.checkpoint import Checkpoint
from fedswarm.ledger.entries import Entry
from fedswarm.ledger.models import ObjectStore
from fedswarm.ledger.packed import PackedObjects
from fedswarm.ledger.state import LedgerState
from fedswarm.ledger.store import DB_NAME, FORMAT_1, OBJECTS_DIR, SCHEMAS, find_ledger
from fedswarm.ledger.tree import MemoryNodeStore, MerkleTree, fold_cover
from fedswarm.ledger.verify_chunk import ChunkResult, ChunkTask, check_chunk
from fedswarm.ledger.verify_tables import (
    CheckpointStatus,
    LedgerVerificationError,
    NodeFindings,
    check_checkpoint,
    check_database,
    check_nodes,
    check_objects,
    checkpoint_signatures,
    read_checkpoints,
)

__all__ = ["CheckpointStatus", "LedgerVerificationError", "VerifyReport", "verify_ledger"]

_PARALLEL_THRESHOLD = 2_000
"""Below this many signatures (entries, checkpoint signatures and cosignatures), verification runs in the
calling process: starting workers would cost more than they save."""
_MIN_LEVEL = 6
"""Chunks are never smaller than ``2**_MIN_LEVEL`` entries, even when split for parallelism."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a successful verification covered."""

    folder: Path
    federation: str
    entries: int
    root: str
    kinds: dict[str, int]
    rounds: int
    members: int
    checkpoints: tuple[CheckpointStatus, ...]
    unwitnessed: int
    objects: int
    models: int
    workers: int
    seconds: float
    warnings: tuple[str, ...] = field(default=())

    @property
    def final_checkpoints(self) -> int:
        """Number of checkpoints cosigned by a quorum."""
        return sum(1 for c in self.checkpoints if c.final)


# --------------------------------------------------------------------------------------------------
# workers: aligned chunks checked by fedswarm.ledger.verify_chunk.check_chunk
# --------------------------------------------------------------------------------------------------

_worker: dict[str, sqlite3.Connection] = {}
"""The database connection of a worker process (opened by :func:`_init_worker`, never inherited)."""


def _connect(db: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise LedgerVerificationError(f"{db}: cannot open the ledger database: {exc}") from None


def _init_worker(db: str) -> None:
    _worker.clear()
    _worker["conn"] = _connect(Path(db))


def _check_chunk_in_worker(task: ChunkTask) -> ChunkResult:
    return check_chunk(_worker["conn"], task)


def _results(db: Path, tasks: list[ChunkTask], *, workers: int) -> Iterator[tuple[ChunkTask, ChunkResult]]:
    """Chunk results in log order; with several workers, a few chunks ahead run in parallel."""
    if workers <= 1:
        conn = _connect(db)
        try:
            for task in tasks:
                yield task, check_chunk(conn, task)
        finally:
            conn.close()
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(str(db),)
    ) as pool:
        window = workers * 2
        futures = [pool.submit(_check_chunk_in_worker, task) for task in tasks[:window]]
        for position, task in enumerate(tasks):
            result = futures[position].result()
            if position + window < len(tasks):
                futures.append(pool.submit(_check_chunk_in_worker, tasks[position + window]))
            yield task, result
            if result.error is not None:
                for future in futures[position + 1 :]:
                    future.cancel()
                return


def _expected_schema(ledger_format: str) -> list[tuple[str, str, str, str | None]]:
    memory = sqlite3.connect(":memory:")
    try:
        memory.executescript(SCHEMAS[ledger_format])
        return sorted(memory.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())
    finally:
        memory.close()


def _check_schema(conn: sqlite3.Connection, db: Path, ledger_format: str) -> None:
    """The tables, indexes and append-only triggers must be exactly those of the ledger's format."""
    try:
        actual = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())
    except sqlite3.Error as exc:
        raise LedgerVerificationError(f"{db}: cannot read the database schema: {exc}") from None
    expected = _expected_schema(ledger_format)
    if actual != expected:
        missing = [row for row in expected if row not in actual]
        extra = [row for row in actual if row not in expected]
        what = (
            f"{missing[0][0]} {missing[0][1]} is missing or altered"
            if missing
            else f"unexpected {extra[0][0]} {extra[0][1]}"
        )
        raise LedgerVerificationError(f"{db}: the database schema is not the ledger format's: {what}")


def _read_meta(conn: sqlite3.Connection, db: Path) -> tuple[str, str, int, int]:
    try:
        meta = dict(conn.execute("SELECT name, value FROM meta NOT INDEXED").fetchall())
        count, highest = conn.execute("SELECT COUNT(*), MAX(seq) FROM entries").fetchone()
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        raise LedgerVerificationError(f"{db}: cannot read the ledger database: {exc}") from None
    ledger_format = meta.get("format")
    if ledger_format not in SCHEMAS:
        raise LedgerVerificationError(f"{db}: format {ledger_format!r} is not one of {sorted(SCHEMAS)}")
    if set(meta) != {"format", "federation"}:
        raise LedgerVerificationError(f"{db}: the meta table holds {sorted(map(str, meta))}, not format and federation")
    federation = meta.get("federation")
    if not isinstance(federation, str) or not federation:
        raise LedgerVerificationError(f"{db}: the federation id is missing")
    size = 0 if highest is None else int(highest) + 1
    return str(ledger_format), federation, int(count), size


def _tasks(
    federation: str, size: int, level: int, checkpoints: list[tuple[int, Checkpoint]]
) -> tuple[list[ChunkTask], dict[int, range]]:
    """Aligned chunks of ``2**level`` entries, each with the checkpoints that end inside it.

    A chunk gets the sizes of those checkpoints (for their roots) and their signatures, to verify ahead;
    the map gives each checkpoint's positions among its chunk's signatures.
    """
    width = 1 << level
    tasks = []
    positions: dict[int, range] = {}
    for start in range(0, size, width):
        stop = min(size, start + width)
        inside = [(i, c) for i, c in checkpoints if start < c.head.size <= stop]
        signatures: list[tuple[bytes, bytes, bytes]] = []
        for checkpoint_id, checkpoint in inside:
            items = checkpoint_signatures(checkpoint)
            positions[checkpoint_id] = range(len(signatures), len(signatures) + len(items))
            signatures.extend(items)
        sizes = tuple(sorted({c.head.size for _, c in inside}))
        tasks.append(ChunkTask(federation, start, stop, level, sizes, tuple(signatures)))
    return tasks, positions


def verify_ledger(
    path: Path,
    *,
    workers: int | None = None,
    chunk: int = 25_000,
    objects: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Verify the ledger in ``path`` (a ledger folder, a run directory or a node's data folder).

    Parameters
    ----------
    path
        Where the ledger is.
    workers
        Processes for record checks; default: the CPUs available, or 1 for logs with fewer than 2,000
        signatures (entries, checkpoint signatures and cosignatures).
    chunk
        Entries per work unit, rounded down to a power of two (units are aligned subtrees of the log).
    objects
        Also check the content-addressed objects.
    progress
        Called with ``(entries checked, total)`` after each chunk.

    Raises
    ------
    LedgerVerificationError
        Naming the first bad entry, node, checkpoint or object and why.
    """
    started = time.perf_counter()
    folder = find_ledger(path)
    db = folder / DB_NAME
    conn = _connect(db)
    try:
        ledger_format, federation, count, size = _read_meta(conn, db)
        _check_schema(conn, db, ledger_format)
        checkpoints = read_checkpoints(conn)
        signatures = size + sum(1 + len(c.cosignatures) for _, c in checkpoints)
        if workers is None:
            workers = 1 if signatures < _PARALLEL_THRESHOLD else max(1, len(os.sched_getaffinity(0)))
        pending = sorted(checkpoints, key=lambda item: (item[1].head.size, item[0]))
        for checkpoint_id, checkpoint in pending:
            if checkpoint.head.size > size:
                raise LedgerVerificationError(
                    f"checkpoint #{checkpoint_id} covers {checkpoint.head.size} entries, the log has {size}"
                )
        for checkpoint_id, checkpoint in pending:
            if checkpoint.head.size == 0:
                raise LedgerVerificationError(f"checkpoint #{checkpoint_id} is of the empty log")
        level = max(1, chunk).bit_length() - 1  # chunks are aligned: 2**level entries each
        while workers > 1 and level > _MIN_LEVEL and size < (4 * workers) << level:
            level -= 1  # a small log with many checkpoints: enough chunks to keep every worker busy
        tasks, positions = _tasks(federation, size, level, pending)
        state = LedgerState()
        upper = MemoryNodeStore()
        tree = MerkleTree(upper)  # over the chunk roots: the log's tree above level ``level``
        tail: list[bytes] = []  # the cover of a last, partial chunk
        findings = NodeFindings()
        kinds: dict[str, int] = {}
        statuses: dict[int, CheckpointStatus] = {}
        next_checkpoint = 0
        apply_update = state.apply_update
        for task, result in _results(db, tasks, workers=workers):
            counted = 0
            for item in result.items:
                if type(item) is tuple:
                    seq, author, key, round_, update = item
                    try:
                        apply_update(seq, author, key, round_, update)
                    except VerificationError as exc:
                        raise LedgerVerificationError(
                            f"entry {seq} (update_submitted by {author}): {exc}", entry=seq
                        ) from None
                    counted += 1
                else:
                    assert isinstance(item, Entry)
                    kind = item.kind
                    try:
                        state.apply(item)
                    except VerificationError as exc:
                        raise LedgerVerificationError(
                            f"entry {item.seq} ({kind} by {item.author}): {exc}", entry=item.seq
                        ) from None
                    kinds[kind] = kinds.get(kind, 0) + 1
                while next_checkpoint < len(pending) and pending[next_checkpoint][1].head.size == state.size:
                    checkpoint_id, checkpoint = pending[next_checkpoint]
                    root = fold_cover(tree.cover() + result.covers[state.size])
                    presigned = result.bad_signatures.isdisjoint(positions[checkpoint_id])
                    statuses[checkpoint_id] = check_checkpoint(
                        checkpoint_id, checkpoint, state, root, federation, presigned=presigned
                    )
                    next_checkpoint += 1
            if counted:
                kinds["update_submitted"] = kinds.get("update_submitted", 0) + counted
            if result.error is not None:
                seq, reason = result.error
                raise LedgerVerificationError(f"entry {seq}: {reason}", entry=seq)
            if result.node_error is not None:
                findings.differing.append(result.node_error)
            if result.node_missing is not None:
                findings.missing.append(result.node_missing)
            if task.stop - task.start == 1 << level:
                tree.append(result.top[0])
            else:
                tail = result.top
            if progress is not None:
                progress(task.stop, size)
        if count != size:
            raise LedgerVerificationError(f"the entries table holds {count} rows for sequence numbers 0..{size - 1}")
        check_nodes(conn, upper, level, size, findings, db)
        log_root = fold_cover(tree.cover() + tail)
        object_count = 0
        if objects:
            packed = PackedObjects(db) if ledger_format != FORMAT_1 else None
            store = ObjectStore(folder / OBJECTS_DIR, durable=False, packed=packed)
            try:
                object_count = check_objects(store, state.models, state.initial_model)
            except VerificationError as exc:
                raise LedgerVerificationError(str(exc)) from None
            finally:
                store.close()
        check_database(conn, db)
    except FedswarmError:
        raise
    except (sqlite3.Error, UnicodeDecodeError) as exc:  # a text column damaged into invalid UTF-8 included
        raise LedgerVerificationError(f"{db}: the database is unreadable: {exc}") from None
    finally:
        conn.close()
    ordered = tuple(statuses[i] for i, _ in checkpoints)
    final_sizes = [c.size for c in ordered if c.final]
    warnings = []
    if state.key_origin == "simulated":
        warnings.append("keys are simulation keys derived from the seed: they prove integrity, not authorship")
    unwitnessed = size - (max(final_sizes) if final_sizes else 0)
    if unwitnessed:
        warnings.append(f"{unwitnessed} entries after the last final checkpoint are not yet cosigned by a quorum")
    return VerifyReport(
        folder=folder,
        federation=federation,
        entries=size,
        root=log_root.hex(),
        kinds=dict(sorted(kinds.items())),
        rounds=state.last_round,
        members=state.member_count(),
        checkpoints=ordered,
        unwitnessed=unwitnessed,
        objects=object_count,
        models=len(state.models),
        workers=workers,
        seconds=time.perf_counter() - started,
        warnings=tuple(warnings),
    )
