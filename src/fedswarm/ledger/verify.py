"""Verify a whole ledger folder: every record, signature, rule, Merkle node, checkpoint and object.

:func:`verify_ledger` checks, in log order, and stops at the first problem:

1. the entries are numbered ``0 .. n-1`` without gaps, each record parses as a canonical entry whose
   ``seq`` is its position, whose index columns (kind, author, round) match it, and whose signature
   verifies under the key it names;
2. replayed through :class:`~fedswarm.ledger.state.LedgerState`, the history follows the rules (the key
   is the author's registered key, rounds and updates fit together, ...);
3. the Merkle tree recomputed from the records equals the stored node table, node for node;
4. every checkpoint is signed by the coordinator over the recomputed root of its size, every cosignature
   is by a member registered at that size, and finality (quorum) is counted;
5. every object in ``objects/`` hashes to its name, and every model the log names is present.

Record parsing, leaf hashing and signature checks (the bulk of the work) run on ``workers`` processes
over chunks of entries read directly from the database; the rules and the tree are replayed in order in
the calling process. A failure raises :class:`LedgerVerificationError` naming the first bad entry (or
node, checkpoint, object) and why.
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
from fedswarm.crypto.signing import SIGNATURE_SIZE, VerifyKey
from fedswarm.ledger.checkpoint import Checkpoint, Cosignature, TreeHead, quorum_size, verify_cosignatures
from fedswarm.ledger.entries import Entry, EntryError, UpdateSubmitted
from fedswarm.ledger.merkle import HASH_SIZE, leaf_hash
from fedswarm.ledger.models import ObjectStore
from fedswarm.ledger.state import LedgerState
from fedswarm.ledger.store import DB_NAME, FORMAT, OBJECTS_DIR, SCHEMA, find_ledger
from fedswarm.ledger.tree import MemoryNodeStore, MerkleTree

__all__ = ["CheckpointStatus", "LedgerVerificationError", "VerifyReport", "verify_ledger"]

_PARALLEL_THRESHOLD = 20_000
"""Below this many entries, verification runs in the calling process (starting workers costs more)."""


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
# worker side: parse, hash and check signatures of a chunk of entries
# --------------------------------------------------------------------------------------------------

_Update = tuple[int, str, bytes, int, str]
"""An ``update_submitted`` entry as ``(seq, author, key, round, update digest)``: cheaper to ship."""
_ChunkResult = tuple[bytes, list[Entry | _Update], tuple[int, str] | None]

_worker: dict[str, sqlite3.Connection] = {}
"""The database connection of a worker process (opened by :func:`_init_worker`, never inherited)."""
_worker_keys: dict[bytes, VerifyKey] = {}


def _connect(db: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise LedgerVerificationError(f"{db}: cannot open the ledger database: {exc}") from None


def _init_worker(db: str) -> None:
    _worker.clear()
    _worker_keys.clear()
    _worker["conn"] = _connect(Path(db))


def _check_chunk_in_worker(federation: str, start: int, stop: int) -> _ChunkResult:
    return _check_chunk(_worker["conn"], _worker_keys, federation, start, stop)


def _check_chunk(
    conn: sqlite3.Connection, keys: dict[bytes, VerifyKey], federation: str, start: int, stop: int
) -> _ChunkResult:
    """Parse and check entries ``start <= seq < stop``; stop at the first bad one."""
    leaves: list[bytes] = []
    entries: list[Entry | _Update] = []
    expected = start
    try:
        rows = conn.execute(
            "SELECT seq, record, kind, author, round FROM entries WHERE seq >= ? AND seq < ? ORDER BY seq",
            (start, stop),
        ).fetchall()
    except sqlite3.Error as exc:
        return b"", [], (start, f"cannot read entries {start}..{stop - 1}: {exc}")
    for seq, record, kind, author, round_ in rows:
        if seq != expected:
            return b"".join(leaves), entries, (expected, f"missing from the log (the next stored entry is {seq})")
        expected += 1
        if not isinstance(record, bytes) or len(record) <= SIGNATURE_SIZE:
            return b"".join(leaves), entries, (seq, "the record is too short to hold an entry and a signature")
        message, signature = record[:-SIGNATURE_SIZE], record[-SIGNATURE_SIZE:]
        try:
            entry = Entry.decode(message)
        except EntryError as exc:
            return b"".join(leaves), entries, (seq, f"the record does not parse: {exc}")
        if entry.seq != seq:
            return b"".join(leaves), entries, (seq, f"the record says it is entry {entry.seq}")
        if entry.federation != federation:
            return b"".join(leaves), entries, (seq, f"federation {entry.federation!r} is not {federation!r}")
        if (entry.kind, entry.author, entry.round) != (kind, author, round_):
            return (
                b"".join(leaves),
                entries,
                (seq, f"index columns ({kind}, {author}, {round_}) do not match the record"),
            )
        verify_key = keys.get(entry.key)
        if verify_key is None:
            verify_key = keys[entry.key] = VerifyKey.from_raw(entry.key)
        try:
            verify_key.verify(message, signature)
        except VerificationError as exc:
            return b"".join(leaves), entries, (seq, f"bad signature: {exc}")
        leaves.append(leaf_hash(record))
        body = entry.body
        if type(body) is UpdateSubmitted:
            entries.append((seq, entry.author, entry.key, body.round, body.update))
        else:
            entries.append(entry)
    if expected != stop:
        return b"".join(leaves), entries, (expected, f"missing from the log (it ends at entry {expected - 1})")
    return b"".join(leaves), entries, None


# --------------------------------------------------------------------------------------------------
# main side
# --------------------------------------------------------------------------------------------------


def _chunks(size: int, chunk: int) -> list[tuple[int, int]]:
    return [(lo, min(size, lo + chunk)) for lo in range(0, size, chunk)]


def _results(
    db: Path, federation: str, size: int, *, workers: int, chunk: int
) -> Iterator[tuple[int, int, _ChunkResult]]:
    spans = _chunks(size, chunk)
    if workers <= 1:
        conn = _connect(db)
        keys: dict[bytes, VerifyKey] = {}
        try:
            for lo, hi in spans:
                yield lo, hi, _check_chunk(conn, keys, federation, lo, hi)
        finally:
            conn.close()
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(str(db),)
    ) as pool:
        window = workers * 2
        futures = [pool.submit(_check_chunk_in_worker, federation, lo, hi) for lo, hi in spans[:window]]
        for position, (lo, hi) in enumerate(spans):
            result = futures[position].result()
            if position + window < len(spans):
                nlo, nhi = spans[position + window]
                futures.append(pool.submit(_check_chunk_in_worker, federation, nlo, nhi))
            yield lo, hi, result
            if result[2] is not None:
                for future in futures[position + 1 :]:
                    future.cancel()
                return


def _expected_schema() -> list[tuple[str, str, str, str | None]]:
    memory = sqlite3.connect(":memory:")
    try:
        memory.executescript(SCHEMA)
        return sorted(memory.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())
    finally:
        memory.close()


def _check_schema(conn: sqlite3.Connection, db: Path) -> None:
    """The tables, indexes and append-only triggers must be exactly those of the ledger format."""
    try:
        actual = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())
    except sqlite3.Error as exc:
        raise LedgerVerificationError(f"{db}: cannot read the database schema: {exc}") from None
    expected = _expected_schema()
    if actual != expected:
        missing = [row for row in expected if row not in actual]
        extra = [row for row in actual if row not in expected]
        what = (
            f"{missing[0][0]} {missing[0][1]} is missing or altered"
            if missing
            else f"unexpected {extra[0][0]} {extra[0][1]}"
        )
        raise LedgerVerificationError(f"{db}: the database schema is not the ledger format's: {what}")


def _read_meta(conn: sqlite3.Connection, db: Path) -> tuple[str, int, int]:
    try:
        meta = dict(conn.execute("SELECT name, value FROM meta NOT INDEXED").fetchall())
        count, highest = conn.execute("SELECT COUNT(*), MAX(seq) FROM entries").fetchone()
    except sqlite3.Error as exc:
        raise LedgerVerificationError(f"{db}: cannot read the ledger database: {exc}") from None
    if meta.get("format") != FORMAT:
        raise LedgerVerificationError(f"{db}: format {meta.get('format')!r} is not {FORMAT!r}")
    if set(meta) != {"format", "federation"}:
        raise LedgerVerificationError(f"{db}: the meta table holds {sorted(map(str, meta))}, not format and federation")
    federation = meta.get("federation")
    if not isinstance(federation, str) or not federation:
        raise LedgerVerificationError(f"{db}: the federation id is missing")
    size = 0 if highest is None else int(highest) + 1
    return federation, int(count), size


def _read_checkpoints(conn: sqlite3.Connection) -> list[tuple[int, Checkpoint]]:
    cosigs: dict[int, list[Cosignature]] = {}
    for checkpoint_id, member, key, signature in conn.execute(
        "SELECT checkpoint, member, key, signature FROM cosignatures ORDER BY checkpoint, member"
    ):
        cosigs.setdefault(int(checkpoint_id), []).append(Cosignature(str(member), bytes(key), bytes(signature)))
    out = []
    for checkpoint_id, size, head, signer, key, signature in conn.execute(
        "SELECT id, size, head, signer, key, signature FROM checkpoints ORDER BY id"
    ):
        try:
            parsed = TreeHead.decode(bytes(head))
        except VerificationError as exc:
            raise LedgerVerificationError(f"checkpoint #{checkpoint_id}: {exc}") from None
        if parsed.size != size:
            raise LedgerVerificationError(f"checkpoint #{checkpoint_id}: size column {size} does not match its head")
        checkpoint = Checkpoint(parsed, str(signer), bytes(key), bytes(signature), tuple(cosigs.pop(checkpoint_id, ())))
        out.append((int(checkpoint_id), checkpoint))
    if cosigs:
        orphan = min(cosigs)
        raise LedgerVerificationError(f"cosignatures refer to checkpoint #{orphan}, which does not exist")
    return out


def _check_checkpoint(
    checkpoint_id: int, checkpoint: Checkpoint, state: LedgerState, tree: MerkleTree, federation: str
) -> CheckpointStatus:
    head = checkpoint.head
    where = f"checkpoint #{checkpoint_id} (size {head.size})"
    if head.federation != federation:
        raise LedgerVerificationError(f"{where}: federation {head.federation!r} is not {federation!r}")
    if tree.root(head.size) != head.root:
        raise LedgerVerificationError(f"{where}: its root {head.root.hex()} is not the log's root at that size")
    if checkpoint.signer != state.coordinator or not state.is_active(checkpoint.signer):
        raise LedgerVerificationError(f"{where}: signed by {checkpoint.signer}, not by the coordinator")
    try:
        checkpoint.verify_signature(signer_key=state.keys[checkpoint.signer])
        cosigners = verify_cosignatures(checkpoint, state.members())
    except VerificationError as exc:
        raise LedgerVerificationError(f"{where}: {exc}") from None
    members = state.member_count()
    final = len(cosigners) >= quorum_size(members, quorum=state.quorum) if members else False
    return CheckpointStatus(head.size, head.root.hex(), head.time, checkpoint.signer, len(cosigners), members, final)


def _compare_nodes(conn: sqlite3.Connection, store: MemoryNodeStore, db: Path) -> None:
    levels = store.state_dict()["levels"]
    expected_total = sum(len(level) for level in levels)
    try:
        cursor = conn.execute("SELECT level, idx, hash FROM nodes ORDER BY level, idx")
        seen = 0
        while rows := cursor.fetchmany(65536):
            for level, index, value in rows:
                expected = (
                    levels[level][index] if 0 <= level < len(levels) and 0 <= index < len(levels[level]) else None
                )
                if expected is None:
                    raise LedgerVerificationError(f"Merkle node ({level}, {index}) is stored but not part of the tree")
                if value != expected:
                    lo, hi = index << level, ((index + 1) << level) - 1
                    raise LedgerVerificationError(
                        f"Merkle node ({level}, {index}) over entries {lo}..{hi} differs from the hash of those "
                        "entries",
                        entry=lo if level == 0 else None,
                    )
                seen += 1
    except sqlite3.Error as exc:
        raise LedgerVerificationError(f"{db}: cannot read the Merkle nodes: {exc}") from None
    if seen != expected_total:
        raise LedgerVerificationError(f"the node table holds {seen} Merkle nodes, the tree has {expected_total}")


def _check_objects(objects: ObjectStore, state_models: dict[str, int], initial: str) -> int:
    count = 0
    for digest in objects.digests():
        objects.verify(digest)
        count += 1
    stray = objects.stray_files()
    if stray:
        raise LedgerVerificationError(f"object folder holds a file that is not a content-addressed object: {stray[0]}")
    for digest, produced in sorted(state_models.items(), key=lambda item: item[1]):
        if not objects.has(digest):
            label = "the initial model" if digest == initial else f"the model of round {produced}"
            raise LedgerVerificationError(f"{label} ({digest}) is missing from {objects.root}")
    return count


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
        Processes for record checks; default: the CPUs available, or 1 for logs under 20,000 entries.
    chunk
        Entries per work unit.
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
        _check_schema(conn, db)
        federation, count, size = _read_meta(conn, db)
        if workers is None:
            workers = 1 if size < _PARALLEL_THRESHOLD else max(1, len(os.sched_getaffinity(0)))
        checkpoints = _read_checkpoints(conn)
        pending = sorted(checkpoints, key=lambda item: (item[1].head.size, item[0]))
        for checkpoint_id, checkpoint in pending:
            if checkpoint.head.size > size:
                raise LedgerVerificationError(
                    f"checkpoint #{checkpoint_id} covers {checkpoint.head.size} entries, the log has {size}"
                )
        state = LedgerState()
        node_store = MemoryNodeStore()
        tree = MerkleTree(node_store)
        kinds: dict[str, int] = {}
        statuses: dict[int, CheckpointStatus] = {}
        for checkpoint_id, checkpoint in pending:
            if checkpoint.head.size == 0:
                raise LedgerVerificationError(f"checkpoint #{checkpoint_id} is of the empty log")
        next_checkpoint = 0
        for _lo, hi, (leaves, entries, error) in _results(db, federation, size, workers=workers, chunk=chunk):
            tree.extend([leaves[offset : offset + HASH_SIZE] for offset in range(0, len(leaves), HASH_SIZE)])
            for item in entries:
                if type(item) is tuple:
                    seq, author, key, round_, update = item
                    kind = "update_submitted"
                    try:
                        state.apply_update(seq, author, key, round_, update)
                    except VerificationError as exc:
                        raise LedgerVerificationError(f"entry {seq} ({kind} by {author}): {exc}", entry=seq) from None
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
                    statuses[checkpoint_id] = _check_checkpoint(checkpoint_id, checkpoint, state, tree, federation)
                    next_checkpoint += 1
            if error is not None:
                seq, reason = error
                raise LedgerVerificationError(f"entry {seq}: {reason}", entry=seq)
            if progress is not None:
                progress(hi, size)
        if count != size:
            raise LedgerVerificationError(f"the entries table holds {count} rows for sequence numbers 0..{size - 1}")
        _compare_nodes(conn, node_store, db)
        object_count = 0
        if objects:
            try:
                store = ObjectStore(folder / OBJECTS_DIR, durable=False)
                object_count = _check_objects(store, state.models, state.initial_model)
            except VerificationError as exc:
                raise LedgerVerificationError(str(exc)) from None
    except FedswarmError:
        raise
    except sqlite3.Error as exc:
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
        root=tree.root().hex(),
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
