"""The checks of ``fedswarm ledger verify`` on the tables beside the entries: checkpoints and their
cosignatures (against the members registered at each checkpoint's size), the stored Merkle nodes above the
chunks, the content-addressed objects, and SQLite's own integrity check of the file.

:func:`fedswarm.ledger.verify.verify_ledger` drives them; the entries themselves are checked in chunks by
:mod:`fedswarm.ledger.verify_chunk`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.checkpoint import Checkpoint, Cosignature, TreeHead, verify_cosignatures
from fedswarm.ledger.models import ObjectStore
from fedswarm.ledger.state import LedgerState
from fedswarm.ledger.store import column_bytes, column_text
from fedswarm.ledger.tree import MemoryNodeStore

__all__ = [
    "CheckpointStatus",
    "LedgerVerificationError",
    "NodeFindings",
    "check_checkpoint",
    "check_database",
    "check_nodes",
    "check_objects",
    "checkpoint_signatures",
    "read_checkpoints",
]

_INTEGRITY_FINDINGS = 3
"""How many problems SQLite's integrity check reports (it stops there, and the message names them)."""


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


def read_checkpoints(conn: sqlite3.Connection) -> list[tuple[int, Checkpoint]]:
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


def checkpoint_signatures(checkpoint: Checkpoint) -> list[tuple[bytes, bytes, bytes]]:
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


def check_checkpoint(
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


def check_nodes(
    conn: sqlite3.Connection, upper: MemoryNodeStore, level: int, size: int, findings: NodeFindings, db: Path
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
class NodeFindings:
    """Node problems the chunks reported, settled after the entries (as a scan of the table would be)."""

    differing: list[tuple[int, int]] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)


def check_objects(objects: ObjectStore, state_models: dict[str, int], initial: str) -> int:
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


def check_database(conn: sqlite3.Connection, db: Path) -> None:
    """SQLite's own check of the file: every b-tree page, key order, and every index entry against its row.

    What the checks above cannot see: a flipped bit can leave every row readable by a scan yet make a
    lookup by key miss it (a node key out of order, an index entry that no longer matches its row). On a
    log of 1,000,000 entries (656 MB) this costs about 1.1 s of CPU (1.2-3.8 s wall), 1-4 % of the verification.
    """
    findings = [str(row[0]) for row in conn.execute(f"PRAGMA integrity_check({_INTEGRITY_FINDINGS})")]
    if findings != ["ok"]:
        shown = "; ".join(" ".join(finding.split()) for finding in findings[:_INTEGRITY_FINDINGS])
        raise LedgerVerificationError(f"{db}: the database file is damaged (SQLite's integrity check: {shown})")
