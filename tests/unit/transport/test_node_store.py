"""A node's data folder: the append-only history, deferred flushing, and pruning that spares recent blobs."""

from __future__ import annotations

from pathlib import Path

from fedswarm.node.persist import NodeStore, Progress, read_history


def test_history_appends_keeps_the_last_record_of_a_round_and_skips_a_torn_line(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    store.append_history({"round": 1, "v": "a"})
    store.append_history({"round": 2, "v": "b"})
    store.append_history({"round": 1, "v": "c"})
    with open(tmp_path / "history.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"round": 3, "v": ')  # a crash while appending
    assert read_history(tmp_path) == [{"round": 1, "v": "c"}, {"round": 2, "v": "b"}]
    assert store.history_rounds() == {1, 2}


def test_blobs_written_without_flushing_are_flushed_by_sync(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    digest = store.put(b"model bytes", durable=False)
    progress = Progress(job="j", round=1, model_digest=digest, state_digest=digest, leader="a", commit="")
    store.save_progress(progress, durable=False)
    store.sync([digest, digest], progress=True)
    assert store.blob_path(digest).read_bytes() == b"model bytes"
    assert store.progress(job="j") == progress


def test_prune_keeps_the_named_and_the_most_recent_blobs(tmp_path: Path) -> None:
    store = NodeStore(tmp_path)
    old = [store.put(f"old {i}".encode()) for i in range(10)]
    kept = old[0]
    store.prune({kept})
    left = {p.name for p in (tmp_path / "blobs").iterdir()}
    assert kept in left and old[-1] in left, "the named blob and the ones stored last stay"
    assert old[1] not in left and len(left) < len(old)


def test_a_staged_blob_reads_like_a_stored_one_until_the_writer_writes_it(tmp_path: Path) -> None:
    import hashlib

    import numpy as np

    from fedswarm.codec import tensors
    from fedswarm.core.parameters import Parameters

    store = NodeStore(tmp_path)
    data = tensors.encode(Parameters({"w": np.arange(3.0)}))
    digest = hashlib.sha256(data).hexdigest()
    store.stage(data, digest=digest)
    assert store.has(digest) and not store.blob_path(digest).exists()
    assert store.size(digest) == len(data) and b"".join(store.chunks(digest, chunk_bytes=7)) == data
    assert store.parameters(digest)["w"].tolist() == [0.0, 1.0, 2.0]
    store.write_staged([digest])
    store.sync([digest], progress=False)
    assert store.blob_path(digest).read_bytes() == data and store.has(digest)
