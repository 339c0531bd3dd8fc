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
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fedswarm.core.errors import FedswarmError, VerificationError
from fedswarm.ledger.checkpoint import Checkpoint, Cosignature, TreeHead, verify_cosignatures
from fedswarm.ledger.entries import Entry
from fedswarm.ledger.models import ObjectStore
from fedswarm.ledger.packed import PackedObjects
from fedswarm.ledger.state import LedgerState
from fedswarm.ledger.store import DB_NAME, FORMAT_1, OBJECTS_DIR, SCHEMAS, column_bytes, column_text, find_ledger
from fedswarm.ledger.tree import MemoryNodeStore, MerkleTree, fold_cover
from fedswarm.ledger.verify_chunk import ChunkResult, ChunkTask, check_chunk

__all__ = ["CheckpointStatus", "LedgerVerificationError", "VerifyReport", "verify_ledger"]

_PARALLEL_THRESHOLD = 2_000
"""Below this many signatures (entries, checkpoint signatures and cosignatures), verification runs in the
calling process: starting workers would cost more than they save."""
_INTEGRITY_FINDINGS = 3
"""How many problems SQLite's integrity check reports (it stops there, and the message names them)."""
_MIN_LEVEL = 6
"""Chunks are never smaller than ``2**_MIN_LEVEL`` entries, even when split for parallelism."""


class LedgerVerificationError(VerificationError):
    """Verification failed; ``entry`` is the sequence number of the first bad entry when one is to blame."""

    def __init__(self, message: str, *, entry: int | None = None) -> None:
        super().__init__(message)
        self.entry = entry


@dataclass(frozen=True, slots=True)
class CheckpointStatus:
    """A verified checkpoint: its size, root, signer and how many members cosigned out of how many."""

    size: int
    root: str
    time: int
    signer: str
    cosigners: int
    members: int
    final: bool


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


def _read_checkpoints(conn: sqlite3.Connection) -> list[tuple[int, Checkpoint]]:
    cosigs: dict[int, list[Cosignature]] = {}
    for checkpoint_id, member, key, signature in conn.execute(
        "SELECT checkpoint, member, key, signature FROM cosignatures ORDER BY checkpoint, member"
    ):
        where = f"cosignature of checkpoint #{checkpoint_id} by {member!r}"
        try:
            cosignature = Cosignature(
                column_text(member, where, "member"),
                column_bytes(key, where, "key"),
                column_bytes(signature, where, "signature"),
            )
        except VerificationError as exc:
            raise LedgerVerificationError(str(exc)) from None
        cosigs.setdefault(int(checkpoint_id), []).append(cosignature)
    out = []
    for checkpoint_id, size, head, signer, key, signature in conn.execute(
        "SELECT id, size, head, signer, key, signature FROM checkpoints ORDER BY id"
    ):
        where = f"checkpoint #{checkpoint_id}"
        try:
            parsed = TreeHead.decode(column_bytes(head, where, "head"))
            columns = (column_text(signer, where, "signer"), column_bytes(key, where, "key"))
            signed = column_bytes(signature, where, "signature")
        except VerificationError as exc:
            message = str(exc)
            raise LedgerVerificationError(message if message.startswith(where) else f"{where}: {message}") from None
        if parsed.size != size:
            raise LedgerVerificationError(f"checkpoint #{checkpoint_id}: size column {size} does not match its head")
        checkpoint = Checkpoint(parsed, *columns, signed, tuple(cosigs.pop(checkpoint_id, ())))
        out.append((int(checkpoint_id), checkpoint))
    if cosigs:
        orphan = min(cosigs)
        raise LedgerVerificationError(f"cosignatures refer to checkpoint #{orphan}, which does not exist")
    return out


def _checkpoint_signatures(checkpoint: Checkpoint) -> list[tuple[bytes, bytes, bytes]]:
    """The signer's and every cosigner's ``(key, message, signature)``, for a chunk to check ahead."""
    message = checkpoint.head.encode()
    return [(checkpoint.key, message, checkpoint.signature)] + [
        (c.key, message, c.signature) for c in checkpoint.cosignatures
    ]


def _checked_cosigners(
    checkpoint: Checkpoint, signer_key: bytes, registry: Mapping[str, bytes]
) -> frozenset[str] | None:
    """The cosigners, when every signature was verified ahead and every key is the registered one.

    ``None`` when a key does not match (the caller then runs the full checks, which name the problem).
    """
    if bytes(signer_key) != checkpoint.key:
        return None
    names = set()
    for cosignature in checkpoint.cosignatures:
        if registry.get(cosignature.member) != cosignature.key:
            return None
        names.add(cosignature.member)
    return frozenset(names)


def _check_checkpoint(
    checkpoint_id: int,
    checkpoint: Checkpoint,
    state: LedgerState,
    root: bytes,
    federation: str,
    *,
    presigned: bool = False,
) -> CheckpointStatus:
    """Check a checkpoint against the replayed state; ``presigned``: its signatures were verified ahead."""
    head = checkpoint.head
    where = f"checkpoint #{checkpoint_id} (size {head.size})"
    if head.federation != federation:
        raise LedgerVerificationError(f"{where}: federation {head.federation!r} is not {federation!r}")
    if root != head.root:
        raise LedgerVerificationError(f"{where}: its root {head.root.hex()} is not the log's root at that size")
    membership = state.membership(head.size)  # the rule replicas apply (fedswarm.ledger.state.Membership)
    try:  # the coordinator, or the member that gathered its cosignatures
        signer_key = membership.signer_key(checkpoint.signer)
    except VerificationError as exc:
        raise LedgerVerificationError(f"{where}: {exc}") from None
    registry = membership.members
    cosigners = _checked_cosigners(checkpoint, signer_key, registry) if presigned else None
    if cosigners is None:  # some check failed (or was not done ahead): the full checks name the problem
        try:
            checkpoint.verify_signature(signer_key=signer_key)
            cosigners = verify_cosignatures(checkpoint, registry)
        except VerificationError as exc:
            raise LedgerVerificationError(f"{where}: {exc}") from None
    members = len(registry)
    final = len(cosigners) >= membership.needed()
    return CheckpointStatus(head.size, head.root.hex(), head.time, checkpoint.signer, len(cosigners), members, final)


def _node_count(size: int) -> int:
    """Number of perfect subtrees (stored nodes) of a tree of ``size`` leaves."""
    total = 0
    while size:
        total += size
        size >>= 1
    return total


def _check_nodes(
    conn: sqlite3.Connection, upper: MemoryNodeStore, level: int, size: int, findings: _NodeFindings, db: Path
) -> None:
    """Compare the nodes above the chunks with ``upper``, then settle what the chunks found.

    ``upper`` holds the tree whose leaves are the chunk roots (node ``(j, i)`` there is node
    ``(j + level, i)`` of the log's tree); the chunks compared every node up to ``level``. Problems are
    reported as a scan of the node table in ``(level, index)`` order would meet them: a node whose hash
    differs, that is not part of the tree or that the table does not return, else a wrong number of nodes.
    A node the table does not return although the count is right means a damaged table: its keys are
    then scanned in stored order, and the first one out of order is named.
    """
    levels = upper.state_dict()["levels"]
    problems: list[tuple[int, int, _NodeProblem]] = [(lv, ix, "differs") for lv, ix in findings.differing]
    missing = list(findings.missing)
    try:
        previous = -1
        for stored_level, index, value in conn.execute(
            "SELECT level, idx, hash FROM nodes WHERE level > ? ORDER BY level, idx", (level,)
        ):
            upper_level = stored_level - level
            if not (upper_level < len(levels) and 0 <= index < len(levels[upper_level])):
                problems.append((stored_level, index, "stray"))
                break
            if value != levels[upper_level][index]:
                problems.append((stored_level, index, "differs"))
                break
            position = sum(len(values) for values in levels[1:upper_level]) + index
            if position != previous + 1:  # the scan skipped nodes: the first one skipped is missing
                missing.append(_upper_key(levels, previous + 1, level))
                break
            previous = position
        else:
            if previous + 1 < sum(len(values) for values in levels[1:]):
                missing.append(_upper_key(levels, previous + 1, level))
        (total,) = conn.execute("SELECT COUNT(*) FROM nodes").fetchone()
        expected_total = _node_count(size)
        if missing or total != expected_total:
            stray = conn.execute(
                "SELECT level, idx FROM nodes WHERE level < 0 OR idx < 0 OR idx >= (? >> level) "
                "ORDER BY level, idx LIMIT 1",
                (size,),
            ).fetchone()
            if stray is not None:
                problems.append((int(stray[0]), int(stray[1]), "stray"))
            elif missing and total == expected_total:  # as many rows as nodes, yet one is not found
                disorder = _first_out_of_order(conn)
                if disorder is not None:
                    before, after = disorder
                    raise LedgerVerificationError(
                        f"{db}: the Merkle node table is damaged: node {after} is stored after node {before}, "
                        "out of key order, so lookups no longer find every node"
                    )
                problems += [(lv, ix, "missing") for lv, ix in missing]
    except sqlite3.Error as exc:
        raise LedgerVerificationError(f"{db}: cannot read the Merkle nodes: {exc}") from None
    if problems:
        node_level, index, kind = min(problems)
        if kind == "stray":
            raise LedgerVerificationError(f"Merkle node ({node_level}, {index}) is stored but not part of the tree")
        lo, hi = index << node_level, ((index + 1) << node_level) - 1
        if kind == "missing":
            raise LedgerVerificationError(
                f"Merkle node ({node_level}, {index}) over entries {lo}..{hi} is missing from the node table"
            )
        raise LedgerVerificationError(
            f"Merkle node ({node_level}, {index}) over entries {lo}..{hi} differs from the hash of those entries",
            entry=lo if node_level == 0 else None,
        )
    if total != expected_total:
        raise LedgerVerificationError(f"the node table holds {total} Merkle nodes, the tree has {expected_total}")


def _upper_key(levels: list[list[bytes]], position: int, level: int) -> tuple[int, int]:
    """The node key of the ``position``-th node above level ``level``, counted in ``(level, index)`` order."""
    for upper_level in range(1, len(levels)):
        if position < len(levels[upper_level]):
            return upper_level + level, position
        position -= len(levels[upper_level])
    raise IndexError(position)


def _first_out_of_order(conn: sqlite3.Connection) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The first pair of node keys that a scan of the table in stored order meets out of order, if any."""
    previous: tuple[int, int] | None = None
    for row in conn.execute("SELECT level, idx FROM nodes"):
        key = (int(row[0]), int(row[1]))
        if previous is not None and key <= previous:
            return previous, key
        previous = key
    return None


_NodeProblem = Literal["differs", "missing", "stray"]


@dataclass(slots=True)
class _NodeFindings:
    """Node problems the chunks reported, settled after the entries (as a scan of the table would be)."""

    differing: list[tuple[int, int]] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)


def _check_objects(objects: ObjectStore, state_models: dict[str, int], initial: str) -> int:
    count = objects.verify_all()
    stray = objects.stray_files()
    if stray:
        raise LedgerVerificationError(f"object folder holds a file that is not a content-addressed object: {stray[0]}")
    for digest, produced in sorted(state_models.items(), key=lambda item: item[1]):
        if not objects.has(digest):
            label = "the initial model" if digest == initial else f"the model of round {produced}"
            where = f"{objects.root} and the objects table" if objects.packed is not None else str(objects.root)
            raise LedgerVerificationError(f"{label} ({digest}) is missing from {where}")
    return count


def _check_database(conn: sqlite3.Connection, db: Path) -> None:
    """SQLite's own check of the file: every b-tree page, key order, and every index entry against its row.

    What the checks above cannot see: a flipped bit can leave every row readable by a scan yet make a
    lookup by key miss it (a node key out of order, an index entry that no longer matches its row). On a
    log of 1,000,000 entries (656 MB) this costs about 1.1 s of CPU (1.2-3.8 s wall), 1-4 % of the verification.
    """
    findings = [str(row[0]) for row in conn.execute(f"PRAGMA integrity_check({_INTEGRITY_FINDINGS})")]
    if findings != ["ok"]:
        shown = "; ".join(" ".join(finding.split()) for finding in findings[:_INTEGRITY_FINDINGS])
        raise LedgerVerificationError(f"{db}: the database file is damaged (SQLite's integrity check: {shown})")


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
            items = _checkpoint_signatures(checkpoint)
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
        checkpoints = _read_checkpoints(conn)
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
        findings = _NodeFindings()
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
                    statuses[checkpoint_id] = _check_checkpoint(
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
        _check_nodes(conn, upper, level, size, findings, db)
        log_root = fold_cover(tree.cover() + tail)
        object_count = 0
        if objects:
            packed = PackedObjects(db) if ledger_format != FORMAT_1 else None
            store = ObjectStore(folder / OBJECTS_DIR, durable=False, packed=packed)
            try:
                object_count = _check_objects(store, state.models, state.initial_model)
            except VerificationError as exc:
                raise LedgerVerificationError(str(exc)) from None
            finally:
                store.close()
        _check_database(conn, db)
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
