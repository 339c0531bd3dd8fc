"""Large byte strings in chunks: bounded memory on both sides, size limits and a digest at the end.

Models, updates and strategy state travel as safetensors bytes split into chunks of ``chunk_bytes``
(1 MiB by default), after a header that declares their SHA-256 digest and size. The receiver refuses a
declared size above its limit before reading anything, writes chunks into one buffer preallocated to the
declared size (so it never holds more than that buffer and the chunk in flight), refuses data beyond
the declared size as it arrives, and checks the digest after the last chunk.

Blobs of at most :func:`inline_limit` bytes travel inline instead, next to the signed message that
announces their digest and size; :func:`check_inline` holds them to both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from fedswarm.transport.envelope import MessageRefused

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "INLINE_MAX_BYTES",
    "BlobReceiver",
    "check_inline",
    "inline_limit",
    "iter_chunks",
    "iter_file_chunks",
]

DEFAULT_CHUNK_BYTES = 1 << 20
INLINE_MAX_BYTES = 1 << 20


def inline_limit(chunk_bytes: int) -> int:
    """Largest blob sent inline: 1 MiB, or one chunk if chunks are smaller.

    A node's largest gRPC message exceeds its chunk size by at least 64 KiB (the spec checks it), so an
    inline blob and the message around it always fit in one message.
    """
    return min(INLINE_MAX_BYTES, chunk_bytes)


def check_inline(data: bytes, *, digest: str, size: int, what: str) -> bytes:
    """Return ``data`` if it is the blob a signed message announced: ``size`` bytes hashing to ``digest``.

    Inline bytes arrived in one gRPC message, so the transport's message limit already bounds them.

    Raises
    ------
    MessageRefused
        ``malformed``: ``data`` is not ``size`` bytes long; ``digest-mismatch``: it does not hash to ``digest``.
    """
    if len(data) != size:
        raise MessageRefused("malformed", f"{what}: {len(data):,} inline bytes, {size:,} announced")
    actual = hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise MessageRefused(
            "digest-mismatch", f"{what}: bytes hash to {actual[:16]}, the message announced {digest[:16]}"
        )
    return data


def iter_chunks(data: bytes | bytearray | memoryview, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
    """Yield ``data`` in pieces of at most ``chunk_bytes`` (one copy of one piece at a time)."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), chunk_bytes):
        yield bytes(view[start : start + chunk_bytes])


def iter_file_chunks(path: Path, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
    """Yield a file's bytes in pieces of at most ``chunk_bytes``, reading one piece at a time."""
    with open(path, "rb") as fh:
        while True:
            piece = fh.read(chunk_bytes)
            if not piece:
                return
            yield piece


class BlobReceiver:
    """Assembles a blob whose ``digest`` and ``size`` were announced, refusing anything else.

    Parameters
    ----------
    digest
        Lower-case hex SHA-256 the bytes must have.
    size
        Announced length in bytes.
    limit
        Largest acceptable size; a larger announcement is refused at once (``oversized``).
    what
        Describes the blob in messages (``"update from bank-a for round 3"``).
    """

    def __init__(self, *, digest: str, size: int, limit: int, what: str) -> None:
        if size > limit:
            raise MessageRefused("oversized", f"{what}: {size:,} bytes announced, the limit is {limit:,} bytes")
        if len(digest) != 64:
            raise MessageRefused("malformed", f"{what}: digest {digest[:70]!r} is not a hex SHA-256")
        self.digest = digest
        self.size = size
        self.what = what
        self._buffer = bytearray(size)
        self._view = memoryview(self._buffer)
        self._position = 0
        self._hash = hashlib.sha256()

    @property
    def received(self) -> int:
        """Bytes received so far."""
        return self._position

    def feed(self, chunk: bytes) -> None:
        """Append a chunk.

        Raises
        ------
        MessageRefused
            ``oversized``: the chunk would take the blob past its announced size.
        """
        end = self._position + len(chunk)
        if end > self.size:
            raise MessageRefused(
                "oversized", f"{self.what}: more than the announced {self.size:,} bytes arrived ({end:,} so far)"
            )
        self._view[self._position : end] = chunk
        self._hash.update(chunk)
        self._position = end

    def finish(self) -> bytearray:
        """Return the assembled bytes after checking length and digest.

        Raises
        ------
        MessageRefused
            ``malformed``: the stream ended early; ``digest-mismatch``: the bytes are not the announced ones.
        """
        if self._position != self.size:
            raise MessageRefused(
                "malformed", f"{self.what}: stream ended after {self._position:,} of {self.size:,} bytes"
            )
        actual = self._hash.hexdigest()
        if actual != self.digest:
            raise MessageRefused(
                "digest-mismatch", f"{self.what}: bytes hash to {actual[:16]}, the header announced {self.digest[:16]}"
            )
        self._view.release()
        return self._buffer
