"""Verification in aligned chunks: every chunk size and worker count gives the same report and the same errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from fedswarm.crypto.batch import BatchVerificationError, verify_signatures
from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.merkle import leaf_hash, root
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.tree import fold_cover, perfect_levels
from fedswarm.ledger.verify import LedgerVerificationError, verify_ledger
from fedswarm.ledger.verify_chunk import prefix_cover

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fixtures"))
from ledger_fixtures import build_ledger, tamper


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ledger(tmp_path_factory.mktemp("chunks") / "ledger", rounds=4, members=5)[0]


@pytest.fixture
def ledger(pristine: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(pristine, tmp_path / "ledger"))


def _fails(folder: Path, match: str, **options: Any) -> LedgerVerificationError:
    with pytest.raises(LedgerVerificationError, match=match) as caught:
        verify_ledger(folder, **options)
    return caught.value


@pytest.mark.parametrize(("chunk", "workers"), [(1, 1), (2, 2), (3, 1), (4, 2), (8, 1), (16, 2), (1 << 20, 1)])
def test_every_chunk_size_gives_the_same_report(pristine: Path, chunk: int, workers: int) -> None:
    reference = verify_ledger(pristine, workers=1)
    report = verify_ledger(pristine, workers=workers, chunk=chunk)
    with LedgerStore(pristine, readonly=True) as store:
        assert report.root == store.root().hex() == reference.root
        records = [record for _, record in store.records()]
    assert report.root == root(records).hex()  # from scratch, by the reference Merkle functions
    assert (report.entries, report.kinds, report.checkpoints) == (
        reference.entries,
        reference.kinds,
        reference.checkpoints,
    )
    assert report.final_checkpoints == len(report.checkpoints) == 4


@pytest.mark.parametrize("chunk", [2, 4, 64])
def test_a_changed_node_above_or_inside_the_chunks_is_named(ledger: Path, chunk: int) -> None:
    tamper(ledger, "UPDATE nodes SET hash = ? WHERE level = 3 AND idx = 1", [bytes(32)])
    _fails(ledger, r"Merkle node \(3, 1\) over entries 8\.\.15 differs", chunk=chunk, workers=2)
    tamper(ledger, "UPDATE nodes SET hash = ? WHERE level = 1 AND idx = 9", [bytes(32)])
    error = _fails(ledger, r"Merkle node \(1, 9\) over entries 18\.\.19 differs", chunk=chunk)
    assert error.entry is None
    tamper(ledger, "UPDATE nodes SET hash = ? WHERE level = 0 AND idx = 20", [b"\x01" * 32])
    error = _fails(ledger, r"Merkle node \(0, 20\) over entries 20\.\.20 differs", chunk=chunk)
    assert error.entry == 20


@pytest.mark.parametrize("chunk", [2, 64])
def test_missing_and_stray_nodes_are_caught(ledger: Path, chunk: int) -> None:
    with LedgerStore(ledger, readonly=True) as store:
        nodes = store.tree.store.get_many([(4, 0)])
    tamper(ledger, "DELETE FROM nodes WHERE level = 4 AND idx = 0")
    _fails(ledger, r"holds \d+ Merkle nodes, the tree has \d+", chunk=chunk)
    tamper(ledger, "INSERT INTO nodes VALUES (1, 1000, ?)", [bytes(32)])
    _fails(ledger, r"Merkle node \(1, 1000\) is stored but not part of the tree", chunk=chunk)
    tamper(ledger, "DELETE FROM nodes WHERE level = 1 AND idx = 1000")
    tamper(ledger, "INSERT INTO nodes VALUES (4, 0, ?)", [nodes[0]])
    verify_ledger(ledger, chunk=chunk)
    tamper(ledger, "UPDATE nodes SET hash = 'text' WHERE level = 0 AND idx = 3")
    _fails(ledger, r"Merkle node \(0, 3\)", chunk=chunk)


def test_the_first_bad_entry_is_named_whatever_chunk_fails_first(ledger: Path) -> None:
    with LedgerStore(ledger, readonly=True) as store:
        late, early = store.record(30), store.record(9)
    tamper(ledger, "UPDATE entries SET record = ? WHERE seq = 30", [late[:-1] + bytes([late[-1] ^ 1])])
    tamper(ledger, "UPDATE entries SET record = ? WHERE seq = 9", [early[:-1] + bytes([early[-1] ^ 1])])
    error = _fails(ledger, "entry 9: bad signature", chunk=2, workers=2)
    assert error.entry == 9


def test_prefix_covers_fold_into_the_roots_of_every_size() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(37)]
    levels = perfect_levels(leaves)
    for width in range(38):
        assert fold_cover(prefix_cover(levels, width)) == root([bytes([i]) for i in range(width)])


def test_signatures_are_checked_one_by_one_and_the_first_failure_is_named() -> None:
    key = SigningKey.from_seed(bytes(32))
    public = key.public_key().raw
    items = [(public, bytes([i]), key.sign(bytes([i]))) for i in range(5)]
    verify_signatures(items)
    verify_signatures([])
    for bad, reason in [
        ((public, b"other", items[3][2]), "does not verify"),
        ((public, bytes([3]), items[3][2][:63]), "must be 64 bytes"),
        ((public[:31], bytes([3]), items[3][2]), "must be 32 bytes"),
    ]:
        with pytest.raises(BatchVerificationError, match=reason) as caught:
            verify_signatures([*items[:3], bad, items[4], bad])
        assert caught.value.index == 3


@pytest.mark.parametrize(("chunk", "workers"), [(4, 2), (1 << 14, 1)])
def test_checkpoint_signatures_checked_in_the_chunks_are_still_named(ledger: Path, chunk: int, workers: int) -> None:
    tamper(ledger, "UPDATE checkpoints SET signature = ? WHERE id = 3", [bytes(64)])
    _fails(ledger, r"checkpoint #3 \(size 28\): .*does not verify", chunk=chunk, workers=workers)
    tamper(ledger, "DELETE FROM checkpoints WHERE id = 3")
    tamper(ledger, "DELETE FROM cosignatures WHERE checkpoint = 3")
    other = "SELECT {} FROM cosignatures WHERE checkpoint = 2 AND member = 'member-00001'"
    tamper(
        ledger,
        f"UPDATE cosignatures SET key = ({other.format('key')}), signature = ({other.format('signature')}) "
        "WHERE checkpoint = 2 AND member = 'member-00002'",
    )
    _fails(ledger, r"checkpoint #2 .*cosignature by member-00002: the key is not", chunk=chunk, workers=workers)
