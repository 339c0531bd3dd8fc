"""Other copies of a ledger searched for retained updates by digest (``fedswarm ledger revert --updates-from``).

In a swarm each round's inputs are kept by the round's leader and by their authors, so reverting from one
member's folder needs the others'. Nothing in another folder is trusted: :func:`open_update_folders`
checks that its ledger is the same history as the one being reverted (same federation, equal Merkle roots
at the shorter size), and :func:`fetch_update` hashes every update it takes against the digest the
reverted ledger names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.audit import AuditLog
from fedswarm.ledger.models import ObjectStore
from fedswarm.ledger.store import LedgerStore, find_ledger

__all__ = ["UpdateFolder", "UpdateFolderError", "fetch_update", "open_update_folders"]


class UpdateFolderError(VerificationError):
    """A folder given for updates cannot be used, or holds an altered update (the message names it)."""


@dataclass(frozen=True, slots=True)
class UpdateFolder:
    """Another copy of the federation's ledger, searched for retained updates by digest (nothing else in it
    is used)."""

    path: Path
    """The folder as given."""
    ledger: Path
    """Its ledger folder."""
    size: int
    """Its number of entries (the history was compared up to ``min(size, reverted ledger's size)``)."""
    objects: ObjectStore


def open_update_folders(log: AuditLog, paths: Sequence[Path]) -> list[UpdateFolder]:
    """Open the ledgers at ``paths`` (run directories, node data folders or ledger folders) as sources of
    retained updates for reverting ``log``, after checking that each is the same history.

    A folder whose ledger is ``log``'s own, or one already given, is skipped.

    Raises
    ------
    UpdateFolderError
        Naming the folder: it holds no ledger, its ledger is of another federation, or its first
        ``min(its size, log's size)`` entries are not ``log``'s (different Merkle roots at that size).
    """
    out: list[UpdateFolder] = []
    seen = {log.folder.resolve()}
    with LedgerStore(log.folder, readonly=True) as mine:
        for path in paths:
            try:
                ledger = find_ledger(path)
            except VerificationError as exc:
                raise UpdateFolderError(f"updates folder {path}: {exc}") from None
            if ledger.resolve() in seen:
                continue
            seen.add(ledger.resolve())
            try:
                out.append(_same_history(mine, Path(path), ledger, reverted=log.folder))
            except UpdateFolderError:
                raise
            except VerificationError as exc:
                raise UpdateFolderError(f"updates folder {path}: {exc}") from None
    return out


def _same_history(mine: LedgerStore, path: Path, ledger: Path, *, reverted: Path) -> UpdateFolder:
    with LedgerStore(ledger, readonly=True) as other:
        if other.federation != mine.federation:
            raise UpdateFolderError(
                f"updates folder {path}: its ledger is of federation {other.federation!r}, not "
                f"{mine.federation!r} (the ledger {reverted} being reverted)"
            )
        common = min(other.size, mine.size)
        theirs, ours = other.root(common), mine.root(common)
        if theirs != ours:
            raise UpdateFolderError(
                f"updates folder {path}: its ledger is not the same history as {reverted}: their Merkle roots "
                f"differ at size {common} ({theirs.hex()[:16]}... vs {ours.hex()[:16]}...): another run of the "
                "federation, or a fork"
            )
        return UpdateFolder(path=path, ledger=ledger, size=other.size, objects=other.objects)


def fetch_update(log: AuditLog, folders: Sequence[UpdateFolder], digest: str) -> tuple[bytes, Path] | None:
    """The retained update named ``digest`` and the ledger folder it came from, checked against the digest;
    ``None`` when no folder holds it.

    Raises
    ------
    UpdateFolderError
        A folder holds bytes under that name that do not hash to it.
    """
    for ledger, objects in ((log.folder, log.objects), *((f.ledger, f.objects) for f in folders)):
        try:
            stored = objects.stored_bytes(digest)
        except VerificationError as exc:
            raise UpdateFolderError(f"the update {digest} in {ledger} is unreadable: {exc}") from None
        if stored is None:
            continue
        data = stored[0]
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise UpdateFolderError(
                f"the object stored as update {digest} in {ledger} hashes to {actual}: an altered copy, "
                "refused (the ledger being reverted names each update by the digest of its bytes)"
            )
        return data, ledger
    return None
