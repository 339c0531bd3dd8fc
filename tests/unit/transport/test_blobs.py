"""Chunked blobs: sizes, limits and digests."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedswarm.transport.blobs import BlobReceiver, iter_chunks
from fedswarm.transport.envelope import MessageRefused
from fedswarm.transport.wire import decode_update, encode_update


def test_chunks_reassemble_and_digest_is_checked() -> None:
    data = bytes(range(256)) * 41
    chunks = list(iter_chunks(data, chunk_bytes=1000))
    assert [len(c) for c in chunks] == [1000] * 10 + [496]
    rx = BlobReceiver(digest=hashlib.sha256(data).hexdigest(), size=len(data), limit=len(data), what="t")
    for c in chunks:
        rx.feed(c)
    assert bytes(rx.finish()) == data


def test_refusals() -> None:
    data = b"abc" * 10
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(MessageRefused, match="oversized: .*30 bytes announced, the limit is 29"):
        BlobReceiver(digest=digest, size=30, limit=29, what="t")
    rx = BlobReceiver(digest=digest, size=30, limit=30, what="t")
    rx.feed(data)
    with pytest.raises(MessageRefused, match="oversized"):
        rx.feed(b"x")
    short = BlobReceiver(digest=digest, size=30, limit=30, what="t")
    short.feed(data[:10])
    with pytest.raises(MessageRefused, match="malformed: t: stream ended after 10 of 30"):
        short.finish()
    wrong = BlobReceiver(digest="0" * 64, size=30, limit=30, what="t")
    wrong.feed(data)
    with pytest.raises(MessageRefused, match="digest-mismatch"):
        wrong.finish()


def test_update_bytes_are_exact() -> None:
    update = np.array([0.1, -2.5e-300, 1e308, 3.0])
    back = decode_update(bytearray(encode_update(update)), source="t")
    assert back.dtype == np.float64 and back.tobytes() == update.tobytes()
