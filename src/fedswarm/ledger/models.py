"""Content-addressed storage of model versions and updates beside the log.

An object is named by the SHA-256 of its bytes and lives in one of two places:

* a **file** ``objects/ab/cdef....safetensors`` for the digest ``abcdef...`` (the first two hex digits
  name a folder, so no folder grows beyond 1/256 of the objects), written by :meth:`ObjectStore.put_bytes`
  to a temporary name, optionally flushed to disk, and renamed into place, so a crash leaves either the
  whole object or none (and at most a ``.tmp`` file, which readers ignore). Nodes keep their models
  this way (a model received as a file is linked into place, not copied);
* a **row** of the ``objects`` table of the ledger database (:mod:`fedswarm.ledger.packed`, ledger
  format 2), written by :class:`~fedswarm.ledger.writer.LedgerWriter` in the transaction of the entries
  that name it. A simulated run stores its models and retained updates this way.

Parameters are stored as canonical safetensors (:mod:`fedswarm.codec.tensors`), so an object's name is
exactly the digest the ledger records for that model or update. Readers look in both places; every read
checks the bytes against the digest.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from fedswarm.codec.tensors import decode as decode_parameters
from fedswarm.codec.tensors import encode as encode_parameters
from fedswarm.core.errors import VerificationError
from fedswarm.core.parameters import Parameters
from fedswarm.ledger.packed import PackedObjects

__all__ = ["SUFFIX", "ObjectStore"]

SUFFIX = ".safetensors"
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")


class ObjectStore:
    """Content-addressed objects: files in a folder and, for a format-2 ledger, rows of its database.

    Parameters
    ----------
    root
        The ``objects`` folder (created on the first file written).
    durable
        Flush each object file to disk (``fsync``) before renaming it into place.
    packed
        The ledger database's table of packed objects, if it has one.
    """

    __slots__ = ("_durable", "_folders", "_packed", "_root", "_root_text")

    def __init__(self, root: Path, *, durable: bool = True, packed: PackedObjects | None = None) -> None:
        self._root = Path(root)
        self._root_text = os.fspath(self._root)
        self._durable = durable
        self._folders: set[str] = set()
        self._packed = packed

    @property
    def root(self) -> Path:
        """The objects folder."""
        return self._root

    @property
    def packed(self) -> PackedObjects | None:
        """The table of packed objects (``None`` for a format-1 ledger or a bare folder)."""
        return self._packed

    def path(self, digest: str) -> Path:
        """Where the file of the object with ``digest`` lives or would live (a packed object has none).

        Raises
        ------
        ValueError
            If ``digest`` is not 64 lowercase hex digits.
        """
        if not _DIGEST.match(digest):
            raise ValueError(f"{digest[:80]!r} is not a digest (64 lowercase hex digits)")
        return self._root / digest[:2] / (digest[2:] + SUFFIX)

    def has(self, digest: str) -> bool:
        """Whether the object is stored (as a file or packed)."""
        if self.path(digest).is_file():
            return True
        return self._packed is not None and self._packed.has(digest)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` as a file (a no-op when that file is there) and return its digest."""
        digest = hashlib.sha256(data).hexdigest()
        folder = os.path.join(self._root_text, digest[:2])
        target = os.path.join(folder, digest[2:] + SUFFIX)
        if os.path.isfile(target):
            return digest
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        tmp = f"{target}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        return digest

    def put_parameters(self, parameters: Parameters) -> str:
        """Store the canonical safetensors encoding of ``parameters``; return its digest."""
        return self.put_bytes(encode_parameters(parameters))

    def stored_bytes(self, digest: str) -> tuple[bytes, str] | None:
        """The bytes stored under ``digest`` (a file, else a packed row) and where they are, NOT checked
        against the digest (the caller hashes them); ``None`` when absent.

        Raises
        ------
        VerificationError
            If the packed table is damaged (its index no longer finds a row it holds).
        """
        path = self.path(digest)
        try:
            return path.read_bytes(), str(path)
        except FileNotFoundError:
            packed = self._packed.get(digest) if self._packed is not None else None
            if packed is None or self._packed is None:
                return None
            return packed, f"{digest} (packed in {self._packed.database})"

    def get_bytes(self, digest: str) -> bytes:
        """The object's bytes, checked against ``digest``.

        Raises
        ------
        KeyError
            If the object is not stored.
        VerificationError
            If the stored content does not hash to ``digest``.
        """
        stored = self.stored_bytes(digest)
        if stored is None:
            raise KeyError(digest)
        data, where = stored
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise VerificationError(f"object {where}: content hashes to {actual}, not to its name {digest}")
        return data

    def get_parameters(self, digest: str) -> Parameters:
        """The stored parameters with this digest (checked)."""
        path = self.path(digest)
        return decode_parameters(self.get_bytes(digest), source=str(path))

    def digests(self) -> Iterator[str]:
        """Digests of the stored objects (files and packed), in sorted order, each once (temporary files skipped)."""
        found = set(self._file_digests())
        if self._packed is not None:
            found.update(self._packed.digests())
        yield from sorted(found)

    def _file_digests(self) -> Iterator[str]:
        if not self._root.is_dir():
            return
        for folder in sorted(self._root.iterdir()):
            if not folder.is_dir() or len(folder.name) != 2:
                continue
            for path in sorted(folder.iterdir()):
                name = folder.name + path.name[: -len(SUFFIX)]
                if path.name.endswith(SUFFIX) and _DIGEST.match(name):  # others are stray files
                    yield name

    def verify(self, digest: str) -> None:
        """Check that the stored object hashes to its name.

        Raises
        ------
        VerificationError
            If it is missing or its content does not match.
        """
        try:
            self.get_bytes(digest)
        except KeyError:
            raise VerificationError(f"object {digest} is missing from {self._root}") from None

    def verify_all(self) -> int:
        """Check every stored object, file and packed row alike; return how many distinct digests there are.

        Packed rows are read from the table itself, so a row whose name or content was altered is found
        even where the table's index still holds the original name, and each is then looked up through the
        index, so a damaged index (a row that could no longer be fetched by its digest) is found too.
        Files whose names are not digests are not objects: :meth:`stray_files` lists them.

        Raises
        ------
        VerificationError
            At the first object whose content does not hash to its name, or a packed row that is not
            named by a digest, does not hold bytes or is not found through the table's index.
        """
        seen: set[str] = set()
        for digest in self._file_digests():
            self.verify(digest)
            seen.add(digest)
        if self._packed is not None:
            database = self._packed.database
            for row in self._packed.rows():
                name = row.name.decode("ascii", "replace")
                if row.name_type != "text" or not _DIGEST.match(name):
                    raise VerificationError(
                        f"{database}: a packed object is named {name[:80]!r} ({row.name_type}), not by a digest"
                    )
                if row.data_type != "blob":
                    raise VerificationError(
                        f"packed object {name} in {database}: stored as {row.data_type}, not a blob"
                    )
                actual = hashlib.sha256(row.data).hexdigest()
                if actual != name:
                    raise VerificationError(
                        f"packed object {name} in {database}: content hashes to {actual}, not to its name"
                    )
                if not self._packed.indexed(name):
                    raise VerificationError(
                        f"packed object {name} in {database}: the objects table's index does not find its row "
                        "(the database is damaged)"
                    )
                seen.add(name)
        return len(seen)

    def close(self) -> None:
        """Close the packed table's reading connection, if one was opened."""
        if self._packed is not None:
            self._packed.close()

    def stray_files(self) -> list[Path]:
        """Files in the objects folder that are not objects (misnamed files; ``.tmp`` leftovers excluded)."""
        if not self._root.is_dir():
            return []
        out: list[Path] = []
        for path in sorted(self._root.rglob("*")):
            if path.is_dir() or path.name.endswith(".tmp"):
                continue
            relative = path.relative_to(self._root)
            name = "".join(relative.parts)
            if len(relative.parts) != 2 or not name.endswith(SUFFIX) or not _DIGEST.match(name[: -len(SUFFIX)]):
                out.append(path)
        return out
