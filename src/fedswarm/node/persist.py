"""A node's data folder: content-addressed blobs, the last committed round, and the round history.

```
STATE/
  blobs/<sha256>       models and strategy state (canonical safetensors), named by their digest
  progress.json        the last committed round: number, model and state digests, the signed commit
  history.jsonl        one JSON record per committed round (the leader's metrics)
  member-state.sqlite  this member's own persistent task state (control variates ...)
```

Blobs and the progress are written to a temporary name and renamed, so a node killed at any moment
restarts from the last round it fully wrote. A blob is stored only if its bytes hash to its name, and
may be written without flushing (``durable=False``) when a later :meth:`NodeStore.sync` flushes it
before the progress that names it is written (:meth:`fedswarm.node.daemon.NodeDaemon.apply_commit`):
the progress on disk only ever names blobs that are on disk. :meth:`NodeStore.save_round` makes a round
durable with a single file write and flush when its model and state are small: the progress file then
holds copies of them (``"blobs"``, base64), they stay in memory instead of getting files of their own,
and :meth:`NodeStore.progress` writes them out from their copies when the node starts again. The history is
appended to, one line per round, after the progress; it is not flushed separately because the progress
holds the signed commit, whose record the daemon appends again if a crash lost it
(:meth:`NodeStore.history_rounds`).
"""

from __future__ import annotations

import base64
import collections
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

from fedswarm.codec import tensors
from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.core.parameters import Parameters
from fedswarm.transport.blobs import iter_chunks, iter_file_chunks
from fedswarm.transport.wire import sha256_hex

__all__ = ["NodeStore", "Progress", "blob_copies", "read_history"]

_PROGRESS, _HISTORY, _BLOBS = "progress.json", "history.jsonl", "blobs"
_DIGEST = re.compile(r"[0-9a-f]{64}")
_RECENT = 6  # blobs stored last, which pruning spares
_MAX_STAGED = 8  # blobs held in memory before the oldest is written out


@dataclass(frozen=True)
class Progress:
    """The last committed round as this node knows it (round 0: nothing committed yet)."""

    job: str
    round: int
    model_digest: str
    state_digest: str
    leader: str
    commit: str  # hex of the serialized, leader-signed commit envelope ("" before round 1)


def _write_atomic(path: Path, data: bytes | bytearray, *, durable: bool) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    tmp.replace(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_history(directory: Path) -> list[dict[str, Any]]:
    """The round records of the data folder ``directory`` in round order.

    For each round, the last record written counts; a torn last line (a crash while appending) is skipped.
    """
    path = Path(directory) / _HISTORY
    if not path.is_file():
        return []
    by_round: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            by_round[int(record.get("round", 0))] = record
    return [by_round[r] for r in sorted(by_round)]


def _read_progress(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The record of the progress file ``path`` and the blob copies it holds (digest to bytes, unchecked)."""
    raw = cast(dict[str, Any], json.loads(path.read_text(encoding="utf-8")))
    copies = cast(dict[str, str], raw.pop("blobs", None) or {})
    return raw, {digest: base64.b64decode(text, validate=True) for digest, text in copies.items()}


def blob_copies(directory: Path, digest: str) -> list[tuple[Path, bytes]]:
    """Every copy of the blob ``digest`` the data folder ``directory`` holds, as stored: its file in ``blobs/``,
    then its copy in ``progress.json``, each with the file it was read from.

    A node that stopped wrote its blobs to files (:meth:`NodeStore.write_resident`); one killed before it
    stopped holds its last small blobs only in the progress file (:meth:`NodeStore.save_round`). Nothing is
    written or restored, and the bytes are not checked: the caller checks them against ``digest``.

    Raises
    ------
    VerificationError
        ``digest`` is not a lower-case hex SHA-256.
    ValueError
        The progress file is not valid JSON or holds a copy that is not valid base64.
    """
    if _DIGEST.fullmatch(digest) is None:
        raise VerificationError(f"blob digest {digest[:70]!r} is not a lower-case hex SHA-256")
    blob, progress = Path(directory) / _BLOBS / digest, Path(directory) / _PROGRESS
    copies = [(blob, blob.read_bytes())] if blob.is_file() else []
    copy = _read_progress(progress)[1].get(digest) if progress.is_file() else None
    return copies if copy is None else [*copies, (progress, copy)]


class NodeStore:
    """The data folder of one node.

    Blobs live in files, or in memory: *staged* ones wait for a writer to put them in files
    (:meth:`write_staged`), *resident* ones are small blobs of a written round, whose durable copy is in
    the progress file (:meth:`save_round`), and are dropped by :meth:`prune` once no longer needed.
    Readers see both like stored ones.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        (self.directory / _BLOBS).mkdir(parents=True, exist_ok=True)
        self._blobs = str(self.directory / _BLOBS)
        self._lock = threading.Lock()
        self._recent: collections.deque[str] = collections.deque(maxlen=_RECENT)
        self._staged: dict[str, bytes] = {}
        self._resident: dict[str, bytes] = {}
        self._files: set[str] = set()  # blob files this store wrote (pruning looks at these)
        self._scan = True  # files of an earlier run may be left: the first pruning lists the folder

    # blobs ----------------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        if _DIGEST.fullmatch(digest) is None:
            raise VerificationError(f"blob digest {digest[:70]!r} is not a lower-case hex SHA-256")
        return self.directory / _BLOBS / digest

    def _memory(self, digest: str) -> bytes | None:
        with self._lock:
            data = self._staged.get(digest)
            return data if data is not None else self._resident.get(digest)

    def has(self, digest: str) -> bool:
        if _DIGEST.fullmatch(digest) is None:
            raise VerificationError(f"blob digest {digest[:70]!r} is not a lower-case hex SHA-256")
        if self._memory(digest) is not None:
            return True
        return os.path.isfile(os.path.join(self._blobs, digest))

    def _write(self, digest: str, data: bytes | bytearray, *, durable: bool) -> None:
        _write_atomic(self.blob_path(digest), data, durable=durable)
        with self._lock:
            self._files.add(digest)

    def stage(self, data: bytes, *, digest: str) -> None:
        """Hold bytes already checked against ``digest`` in memory, as stored, until :meth:`write_staged`.

        Readers see a staged blob like a stored one; writing it is left to a background writer. At most a few
        blobs stay staged: beyond that the oldest is written out now (unflushed), e.g. the models of rounds
        that were aborted before a commit wrote them.
        """
        with self._lock:
            self._staged[digest] = data
            self._recent.append(digest)
            overflow = list(self._staged)[: max(0, len(self._staged) - _MAX_STAGED)]
        self.write_staged(overflow)

    def put_staged(self, data: bytes, *, limit: int) -> str:
        """Store bytes under their SHA-256, unflushed: staged in memory (:meth:`stage`) when at most ``limit``
        bytes, else written to their file now. Returns the digest; a later write of the round flushes them."""
        if len(data) > limit:
            return self.put(data, durable=False)
        digest = sha256_hex(data)
        if not self.has(digest):
            self.stage(data, digest=digest)
        else:
            with self._lock:
                self._recent.append(digest)
        return digest

    def write_staged(self, digests: Iterable[str]) -> None:
        """Write those of ``digests`` that are staged to files (unflushed: :meth:`sync` flushes them)."""
        for digest in digests:
            with self._lock:
                data = self._staged.get(digest)
            if data is not None:
                if not self.blob_path(digest).is_file():
                    self._write(digest, data, durable=False)
                with self._lock:
                    self._staged.pop(digest, None)

    def _read(self, digest: str) -> bytes:
        data = self._memory(digest)
        return data if data is not None else self.blob_path(digest).read_bytes()

    def put(self, data: bytes | bytearray, *, digest: str | None = None, durable: bool = True) -> str:
        """Store bytes under their SHA-256; if ``digest`` is given the bytes must hash to it.

        ``durable=False`` leaves flushing them to a later :meth:`sync`.
        """
        actual = sha256_hex(data)
        if digest is not None and digest != actual:
            raise VerificationError(f"blob announced as {digest[:16]} hashes to {actual[:16]}")
        if not self.blob_path(actual).is_file():
            self._write(actual, data, durable=durable)
        with self._lock:
            self._recent.append(actual)
        return actual

    def small_blobs(self, digests: Iterable[str], *, limit: int) -> dict[str, bytes]:
        """The bytes of those of ``digests`` that hold at most ``limit`` bytes (from memory, or their files)."""
        out: dict[str, bytes] = {}
        for digest in dict.fromkeys(digests):
            data = self._memory(digest)
            if data is None:
                path = self.blob_path(digest)
                if path.stat().st_size > limit:
                    continue
                data = path.read_bytes()
            if len(data) <= limit:
                out[digest] = data
        return out

    def save_round(self, progress: Progress, *, blobs: Sequence[str], inline_limit: int) -> None:
        """Write a committed round durably: the blobs ``blobs`` it names, then the progress naming them.

        Blobs of at most ``inline_limit`` bytes are copied into the progress file and stay in memory
        (resident) instead of getting files of their own; larger ones are written and flushed first. A
        round of a small model thus costs one file write and one flush, where a file per blob and a flush
        per file would cost three of each.
        """
        small = self.small_blobs(blobs, limit=inline_limit)
        with self._lock:
            for digest, data in small.items():
                self._resident[digest] = data
                self._staged.pop(digest, None)
        large = [d for d in dict.fromkeys(blobs) if d not in small]
        self.write_staged(large)
        self.sync(large, progress=False)
        self.save_progress(progress, blobs=small)

    def write_resident(self) -> None:
        """Give the blobs held in memory files of their own (unflushed: the progress holds their durable
        copies), so that tools reading the data folder of a stopped node find every blob it names."""
        with self._lock:
            resident = dict(self._resident)
        for digest, data in resident.items():
            if not self.blob_path(digest).is_file():
                self._write(digest, data, durable=False)

    def sync(self, digests: Iterable[str], *, progress: bool) -> None:
        """Flush the blobs ``digests`` (and the progress) to disk."""
        for digest in dict.fromkeys(digests):
            _fsync(self.blob_path(digest))
        if progress:
            _fsync(self.directory / _PROGRESS)

    def put_parameters(self, parameters: Parameters) -> tuple[str, int]:
        """Store canonical safetensors of ``parameters``; returns ``(digest, size)``."""
        data = tensors.encode(parameters)
        return self.put(data), len(data)

    def size(self, digest: str) -> int:
        data = self._memory(digest)
        return len(data) if data is not None else self.blob_path(digest).stat().st_size

    def chunks(self, digest: str, *, chunk_bytes: int) -> Iterator[bytes]:
        data = self._memory(digest)
        if data is not None:
            return iter_chunks(data, chunk_bytes=chunk_bytes)
        return iter_file_chunks(self.blob_path(digest), chunk_bytes=chunk_bytes)

    def parameters(self, digest: str) -> Parameters:
        """Load a stored (or staged, or resident) model or state blob."""
        return tensors.decode(self._read(digest), source=f"blob {digest[:16]}")

    def prune(self, keep: set[str]) -> None:
        """Drop every blob not in ``keep`` and not among the last few stored (work in progress may use them).

        Staged blobs stay (a writer has yet to write them). Only the files this store wrote are looked at,
        after a first listing of the folder for those of an earlier run.
        """
        with self._lock:
            spare = keep | set(self._recent)
            for digest in [d for d in self._resident if d not in spare]:
                del self._resident[digest]
            scan, self._scan = self._scan, False
            files = list(self._files)
        names = [p.name for p in (self.directory / _BLOBS).iterdir()] if scan else files
        for name in names:
            if name not in spare and not name.startswith("."):
                (self.directory / _BLOBS / name).unlink(missing_ok=True)
                with self._lock:
                    self._files.discard(name)

    # progress -------------------------------------------------------------------------------------
    def progress(self, *, job: str) -> Progress | None:
        """The last committed round, or ``None`` for a fresh folder.

        A blob the progress holds a copy of is written out from it if its file is missing (it was held in
        memory only) or torn.

        Raises
        ------
        ConfigurationError
            The folder holds the progress of another job (the spec changed).
        VerificationError
            A blob copy in the progress does not hash to its name.
        """
        path = self.directory / _PROGRESS
        if not path.is_file():
            return None
        raw, copies = _read_progress(path)
        progress = Progress(**raw)
        if progress.job != job:
            raise ConfigurationError(
                f"{path}: belongs to another job (spec digest {progress.job[:16]}, this spec is {job[:16]}); "
                "remove the folder or start the node with another --state folder"
            )
        for digest, data in copies.items():
            self._restore(digest, data, source=path)
        return progress

    def _restore(self, digest: str, data: bytes, *, source: Path) -> None:
        actual = sha256_hex(data)
        if actual != digest:
            raise VerificationError(f"{source}: the copy of blob {digest[:16]} hashes to {actual[:16]}")
        path = self.blob_path(digest)
        if path.is_file() and path.stat().st_size == len(data) and sha256_hex(path.read_bytes()) == digest:
            return
        self._write(digest, data, durable=True)

    def save_progress(
        self, progress: Progress, *, durable: bool = True, blobs: Mapping[str, bytes] | None = None
    ) -> None:
        """Replace the progress atomically (``durable=False``: flushing is left to :meth:`sync`).

        ``blobs``: copies of small blobs the progress names, kept in the same file (see :meth:`save_round`).
        """
        record: dict[str, Any] = {f.name: getattr(progress, f.name) for f in fields(progress)}
        if blobs:
            record["blobs"] = {d: base64.b64encode(b).decode("ascii") for d, b in blobs.items()}
        _write_atomic(
            self.directory / _PROGRESS, json.dumps(record, separators=(",", ":")).encode("utf-8"), durable=durable
        )

    # history --------------------------------------------------------------------------------------
    def append_history(self, record: dict[str, Any]) -> None:
        """Append one round's record (a later record of the same round replaces an earlier one on reading)."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock, open(self.directory / _HISTORY, "a", encoding="utf-8") as fh:
            fh.write(line)

    def history(self) -> list[dict[str, Any]]:
        """The round records (:func:`read_history`)."""
        return read_history(self.directory)

    def history_rounds(self) -> set[int]:
        """The rounds the history has a record of."""
        return {int(r.get("round", 0)) for r in self.history()}
