"""Content-addressed storage of model versions and updates beside the log.

An object is a file whose name is the SHA-256 of its bytes: ``objects/ab/cdef....safetensors`` for the
digest ``abcdef...`` (the first two hex digits name a folder, so no folder grows beyond 1/256 of the
objects). Parameters are stored as canonical safetensors (:mod:`fedswarm.codec.tensors`), so an object's
name is exactly the digest the ledger records for that model or update. Files are written to a temporary
name, flushed to disk and renamed into place, so a crash leaves either the whole object or none (and at
most a ``.tmp`` file, which readers ignore).
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

__all__ = ["SUFFIX", "ObjectStore"]

SUFFIX = ".safetensors"
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")


class ObjectStore:
    """A folder of content-addressed objects.

    Parameters
    ----------
    root
        The ``objects`` folder (created on the first write).
    durable
        Flush each object to disk (``fsync``) before renaming it into place.
    """

    __slots__ = ("_durable", "_folders", "_root", "_root_text")

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self._root = Path(root)
        self._root_text = os.fspath(self._root)
        self._durable = durable
        self._folders: set[str] = set()

    @property
    def root(self) -> Path:
        """The objects folder."""
        return self._root

    def path(self, digest: str) -> Path:
        """Where the object with ``digest`` lives (whether or not it exists).

        Raises
        ------
        ValueError
            If ``digest`` is not 64 lowercase hex digits.
        """
        if not _DIGEST.match(digest):
            raise ValueError(f"{digest[:80]!r} is not a digest (64 lowercase hex digits)")
        return self._root / digest[:2] / (digest[2:] + SUFFIX)

    def has(self, digest: str) -> bool:
        """Whether the object is stored."""
        return self.path(digest).is_file()

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` (a no-op when it is already there) and return its digest."""
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

    def get_bytes(self, digest: str) -> bytes:
        """The object's bytes, checked against ``digest``.

        Raises
        ------
        KeyError
            If the object is not stored.
        VerificationError
            If the file's content does not hash to ``digest``.
        """
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyError(digest) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise VerificationError(f"object {path}: content hashes to {actual}, not to its name {digest}")
        return data

    def get_parameters(self, digest: str) -> Parameters:
        """The stored parameters with this digest (checked)."""
        path = self.path(digest)
        return decode_parameters(self.get_bytes(digest), source=str(path))

    def digests(self) -> Iterator[str]:
        """Digests of the stored objects, in sorted order (temporary files skipped)."""
        if not self._root.is_dir():
            return
        for folder in sorted(self._root.iterdir()):
            if not folder.is_dir() or len(folder.name) != 2:
                continue
            for path in sorted(folder.iterdir()):
                if path.name.endswith(SUFFIX):
                    yield folder.name + path.name[: -len(SUFFIX)]

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
