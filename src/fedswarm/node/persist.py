"""A node's data folder: content-addressed blobs, the last committed round, and the round history.

```
STATE/
  blobs/<sha256>       models and strategy state (canonical safetensors), named by their digest
  progress.json        the last committed round: number, model and state digests, the signed commit
  history.jsonl        one JSON record per committed round (the leader's metrics)
  member-state.sqlite  this member's own persistent task state (control variates ...)
```

Every file is written to a temporary name and renamed, so a node killed at any moment restarts from
the last round it fully committed. A blob is stored only if its bytes hash to its name.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from fedswarm.codec import tensors
from fedswarm.core.errors import ConfigurationError, VerificationError
from fedswarm.core.parameters import Parameters
from fedswarm.transport.blobs import iter_file_chunks
from fedswarm.transport.wire import sha256_hex

__all__ = ["NodeStore", "Progress"]

_PROGRESS, _HISTORY, _BLOBS = "progress.json", "history.jsonl", "blobs"


@dataclass(frozen=True)
class Progress:
    """The last committed round as this node knows it (round 0: nothing committed yet)."""

    job: str
    round: int
    model_digest: str
    state_digest: str
    leader: str
    commit: str  # hex of the serialized, leader-signed commit envelope ("" before round 1)


def _write_atomic(path: Path, data: bytes | bytearray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


class NodeStore:
    """The data folder of one node."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        (self.directory / _BLOBS).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # blobs ----------------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise VerificationError(f"blob digest {digest[:70]!r} is not a lower-case hex SHA-256")
        return self.directory / _BLOBS / digest

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def put(self, data: bytes | bytearray, *, digest: str | None = None) -> str:
        """Store bytes under their SHA-256; if ``digest`` is given the bytes must hash to it."""
        actual = sha256_hex(data)
        if digest is not None and digest != actual:
            raise VerificationError(f"blob announced as {digest[:16]} hashes to {actual[:16]}")
        path = self.blob_path(actual)
        if not path.is_file():
            _write_atomic(path, data)
        return actual

    def put_parameters(self, parameters: Parameters) -> tuple[str, int]:
        """Store canonical safetensors of ``parameters``; returns ``(digest, size)``."""
        data = tensors.encode(parameters)
        return self.put(data), len(data)

    def size(self, digest: str) -> int:
        return self.blob_path(digest).stat().st_size

    def chunks(self, digest: str, *, chunk_bytes: int) -> Iterator[bytes]:
        return iter_file_chunks(self.blob_path(digest), chunk_bytes=chunk_bytes)

    def parameters(self, digest: str) -> Parameters:
        """Load a stored model or state blob."""
        return tensors.decode(self.blob_path(digest).read_bytes(), source=f"blob {digest[:16]}")

    def prune(self, keep: set[str]) -> None:
        """Delete every blob not in ``keep``."""
        for path in (self.directory / _BLOBS).iterdir():
            if path.name not in keep and not path.name.startswith("."):
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

    def save_progress(self, progress: Progress) -> None:
        _write_atomic(self.directory / _PROGRESS, json.dumps(asdict(progress), indent=1).encode("utf-8"))

    # history --------------------------------------------------------------------------------------
    def append_history(self, record: dict[str, Any]) -> None:
        """Append one round's record, replacing a record of the same round (a retried round)."""
        with self._lock:
            records = [r for r in self.history() if r.get("round") != record.get("round")]
            records.append(record)
            records.sort(key=lambda r: int(r.get("round", 0)))
            text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
            _write_atomic(self.directory / _HISTORY, text.encode("utf-8"))

    def history(self) -> list[dict[str, Any]]:
        path = self.directory / _HISTORY
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
