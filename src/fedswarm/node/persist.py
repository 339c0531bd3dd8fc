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
the progress on disk only ever names blobs that are on disk. The history is appended to, one line per
round, after the progress; it is not flushed separately because the progress holds the signed commit,
whose record the daemon appends again if a crash lost it (:meth:`NodeStore.history_rounds`).
"""

from __future__ import annotations

import collections
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

from fedswarm.codec import tensors
from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.core.parameters import Parameters
from fedswarm.transport.blobs import iter_chunks, iter_file_chunks
from fedswarm.transport.wire import sha256_hex

__all__ = ["NodeStore", "Progress", "read_history"]

_PROGRESS, _HISTORY, _BLOBS = "progress.json", "history.jsonl", "blobs"
_DIGEST = re.compile(r"[0-9a-f]{64}")
_RECENT = 6  # blobs stored last, which pruning spares


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


class NodeStore:
    """The data folder of one node."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        (self.directory / _BLOBS).mkdir(parents=True, exist_ok=True)
        self._blobs = str(self.directory / _BLOBS)
        self._lock = threading.Lock()
        self._recent: collections.deque[str] = collections.deque(maxlen=_RECENT)
        self._staged: dict[str, bytes] = {}

    # blobs ----------------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        if _DIGEST.fullmatch(digest) is None:
            raise VerificationError(f"blob digest {digest[:70]!r} is not a lower-case hex SHA-256")
        return self.directory / _BLOBS / digest

    def has(self, digest: str) -> bool:
        if _DIGEST.fullmatch(digest) is None:
            raise VerificationError(f"blob digest {digest[:70]!r} is not a lower-case hex SHA-256")
        with self._lock:
            if digest in self._staged:
                return True
        return os.path.isfile(os.path.join(self._blobs, digest))

    def stage(self, data: bytes, *, digest: str) -> None:
        """Hold bytes already checked against ``digest`` in memory, as stored, until :meth:`write_staged`.

        Readers see a staged blob like a stored one; writing it is left to a background writer.
        """
        with self._lock:
            self._staged[digest] = data
            self._recent.append(digest)

    def write_staged(self, digests: Iterable[str]) -> None:
        """Write those of ``digests`` that are staged to files (unflushed: :meth:`sync` flushes them)."""
        for digest in digests:
            with self._lock:
                data = self._staged.get(digest)
            if data is not None:
                if not self.blob_path(digest).is_file():
                    _write_atomic(self.blob_path(digest), data, durable=False)
                with self._lock:
                    self._staged.pop(digest, None)

    def _read(self, digest: str) -> bytes:
        with self._lock:
            data = self._staged.get(digest)
        return data if data is not None else self.blob_path(digest).read_bytes()

    def put(self, data: bytes | bytearray, *, digest: str | None = None, durable: bool = True) -> str:
        """Store bytes under their SHA-256; if ``digest`` is given the bytes must hash to it.

        ``durable=False`` leaves flushing them to a later :meth:`sync`.
        """
        actual = sha256_hex(data)
        if digest is not None and digest != actual:
            raise VerificationError(f"blob announced as {digest[:16]} hashes to {actual[:16]}")
        path = self.blob_path(actual)
        if not path.is_file():
            _write_atomic(path, data, durable=durable)
        with self._lock:
            self._recent.append(actual)
        return actual

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
        with self._lock:
            data = self._staged.get(digest)
        return len(data) if data is not None else self.blob_path(digest).stat().st_size

    def chunks(self, digest: str, *, chunk_bytes: int) -> Iterator[bytes]:
        with self._lock:
            data = self._staged.get(digest)
        if data is not None:
            return iter_chunks(data, chunk_bytes=chunk_bytes)
        return iter_file_chunks(self.blob_path(digest), chunk_bytes=chunk_bytes)

    def parameters(self, digest: str) -> Parameters:
        """Load a stored (or staged) model or state blob."""
        return tensors.decode(self._read(digest), source=f"blob {digest[:16]}")

    def prune(self, keep: set[str]) -> None:
        """Delete every blob not in ``keep`` and not among the last few stored (work in progress may use them)."""
        with self._lock:
            recent = set(self._recent)
        for path in (self.directory / _BLOBS).iterdir():
            if path.name not in keep and path.name not in recent and not path.name.startswith("."):
                path.unlink(missing_ok=True)

    # progress -------------------------------------------------------------------------------------
    def progress(self, *, job: str) -> Progress | None:
        """The last committed round, or ``None`` for a fresh folder.

        Raises
        ------
        ConfigurationError
            The folder holds the progress of another job (the spec changed).
        """
        path = self.directory / _PROGRESS
        if not path.is_file():
            return None
        raw = cast(dict[str, Any], json.loads(path.read_text(encoding="utf-8")))
        progress = Progress(**raw)
        if progress.job != job:
            raise ConfigurationError(
                f"{path}: belongs to another job (spec digest {progress.job[:16]}, this spec is {job[:16]}); "
                "remove the folder or start the node with another --state folder"
            )
        return progress

    def save_progress(self, progress: Progress, *, durable: bool = True) -> None:
        """Replace the progress atomically (``durable=False``: flushing is left to :meth:`sync`)."""
        data = json.dumps({f.name: getattr(progress, f.name) for f in fields(progress)}, indent=1).encode("utf-8")
        _write_atomic(self.directory / _PROGRESS, data, durable=durable)

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
