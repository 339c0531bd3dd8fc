"""A committed round written with one flush: small blobs live in memory with their copies in the progress."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from fedswarm.core.errors import VerificationError
from fedswarm.node.persist import NodeStore, Progress
from fedswarm.transport.wire import sha256_hex

LIMIT = 1024


def _progress(model: str, state: str, rnd: int = 1) -> Progress:
    return Progress(job="j", round=rnd, model_digest=model, state_digest=state, leader="a", commit="")


def _files(folder: Path) -> set[str]:
    return {p.name for p in (folder / "blobs").iterdir()}


def test_small_blobs_of_a_round_stay_in_memory_and_one_flush_writes_the_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        flushed.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store = NodeStore(tmp_path)
    model, state = store.put_staged(b"model" * 10, limit=LIMIT), store.put_staged(b"state", limit=LIMIT)
    store.save_round(_progress(model, state), blobs=(model, state), inline_limit=LIMIT)
    assert len(flushed) == 1, "one flush: the progress, which holds the copies"
    assert _files(tmp_path) == set(), "no file per blob"
    assert store._read(model) == b"model" * 10 and store.size(state) == 5
    copies = json.loads((tmp_path / "progress.json").read_text())["blobs"]
    assert {d: base64.b64decode(t) for d, t in copies.items()} == {model: b"model" * 10, state: b"state"}


def test_a_restarted_store_gets_the_blobs_back_from_the_progress(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    model, state = store.put_staged(b"m" * 100, limit=LIMIT), store.put_staged(b"s", limit=LIMIT)
    store.save_round(_progress(model, state), blobs=(model, state), inline_limit=LIMIT)
    del store  # killed: nothing but the progress reached the disk
    again = NodeStore(tmp_path)
    assert again.progress(job="j") == _progress(model, state)
    assert again.blob_path(model).read_bytes() == b"m" * 100 and again.blob_path(state).read_bytes() == b"s"
    again.blob_path(model).write_bytes(b"torn")
    NodeStore(tmp_path).progress(job="j")
    assert again.blob_path(model).read_bytes() == b"m" * 100, "a torn file is rewritten from the copy"


def test_a_copy_that_does_not_hash_to_its_name_is_refused(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    model = store.put_staged(b"model", limit=LIMIT)
    store.save_round(_progress(model, model), blobs=(model,), inline_limit=LIMIT)
    path = tmp_path / "progress.json"
    raw = json.loads(path.read_text())
    raw["blobs"][model] = base64.b64encode(b"other").decode()
    path.write_text(json.dumps(raw))
    with pytest.raises(VerificationError, match="hashes to"):
        NodeStore(tmp_path).progress(job="j")


def test_a_large_blob_gets_its_own_flushed_file_and_no_copy(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    big = store.put_staged(b"x" * (LIMIT + 1), limit=LIMIT)
    small = store.put_staged(b"y", limit=LIMIT)
    store.save_round(_progress(big, small), blobs=(big, small), inline_limit=LIMIT)
    assert _files(tmp_path) == {big}
    assert set(json.loads((tmp_path / "progress.json").read_text())["blobs"]) == {small}


def test_pruning_drops_blobs_in_memory_that_are_no_longer_needed_and_stopping_writes_the_rest(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    rounds = []
    for r in range(1, 10):
        m = store.put_staged(f"model {r}".encode(), limit=LIMIT)
        s = store.put_staged(f"state {r}".encode(), limit=LIMIT)
        store.save_round(_progress(m, s, r), blobs=(m, s), inline_limit=LIMIT)
        store.prune({m, s})
        rounds.append((m, s))
    assert not store.has(rounds[0][0]), "an old round's model is dropped"
    assert store.has(rounds[-1][0]) and store.has(rounds[-1][1])
    store.write_resident()
    assert {rounds[-1][0], rounds[-1][1]} <= _files(tmp_path)
    assert rounds[0][0] not in _files(tmp_path)


def test_staging_keeps_only_a_few_blobs_in_memory(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    digests = [store.put_staged(f"aborted round {i}".encode(), limit=LIMIT) for i in range(12)]
    assert digests[0] in _files(tmp_path), "the oldest staged blobs are written out"
    assert digests[-1] not in _files(tmp_path) and store.has(digests[-1])
    assert all(store._read(d) == f"aborted round {i}".encode() for i, d in enumerate(digests))
    assert digests[0] == sha256_hex(b"aborted round 0")
