"""Tests of the incremental Merkle tree and its in-memory node store."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.merkle import (
    EMPTY_ROOT,
    consistency_proof_from_hashes,
    inclusion_proof_from_hashes,
    leaf_hash,
    root_from_hashes,
    verify_consistency,
    verify_inclusion,
)
from fedswarm.ledger.tree import MemoryNodeStore, MerkleTree, NodeKey, NodeStore


def _load_vectors_module() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "vectors" / "merkle" / "merkle_vectors.py"
    spec = importlib.util.spec_from_file_location("merkle_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("merkle_vectors", module)
    spec.loader.exec_module(module)
    return module


V: Any = _load_vectors_module().load_vectors()


def _hashes(count: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(8, "big")) for i in range(count)]


class CountingStore:
    """A NodeStore that records how it is used."""

    def __init__(self) -> None:
        self.inner = MemoryNodeStore()
        self.reads = 0
        self.read_calls = 0
        self.write_calls = 0

    def get(self, level: int, index: int) -> bytes:
        self.reads += 1
        self.read_calls += 1
        return self.inner.get(level, index)

    def put(self, level: int, index: int, value: bytes) -> None:
        self.write_calls += 1
        self.inner.put(level, index, value)

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes]:
        self.reads += len(keys)
        self.read_calls += 1
        return self.inner.get_many(keys)

    def put_many(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        self.write_calls += 1
        self.inner.put_many(nodes)


def test_counting_store_is_a_node_store() -> None:
    store: NodeStore = CountingStore()
    assert MerkleTree(store).size == 0


def test_known_answers_roots_nodes_and_frontier() -> None:
    store = MemoryNodeStore()
    tree = MerkleTree(store)
    assert tree.root() == V.roots[0] == EMPTY_ROOT
    for index, data in enumerate(V.leaf_inputs):
        assert tree.append(leaf_hash(data)) == index
        assert tree.root() == V.roots[index + 1]
    for size in range(9):
        assert tree.root(size) == V.roots[size]
    # the store holds exactly the complete subtrees of the reference tree
    assert store.state_dict()["levels"] == V.node_hashes
    for size, nodes in enumerate(V.compact_trees):
        expected = [V.node_hashes[level][index] for level, index in nodes]
        assert MerkleTree(store, size=size).state_dict()["root"] == V.roots[size]
        assert MerkleTree(store, size=size)._frontier == expected


@pytest.mark.parametrize("case", V.inclusion, ids=lambda c: f"index{c[0]}-size{c[1]}")
def test_inclusion_known_answers(case: tuple[int, int, list[bytes]]) -> None:
    index, size, expected = case
    tree = MerkleTree()
    tree.extend(V.node_hashes[0])
    assert tree.inclusion_proof(index, size) == expected


@pytest.mark.parametrize("case", V.consistency, ids=lambda c: f"{c[0]}-{c[1]}")
def test_consistency_known_answers(case: tuple[int, int, list[bytes]]) -> None:
    old_size, new_size, expected = case
    tree = MerkleTree()
    tree.extend(V.node_hashes[0])
    assert tree.consistency_proof(old_size, new_size) == expected


def test_every_proof_equals_the_pure_functions_up_to_70_leaves() -> None:
    hashes = _hashes(70)
    tree = MerkleTree()
    tree.extend(hashes)
    for size in range(71):
        prefix = hashes[:size]
        assert tree.root(size) == root_from_hashes(prefix)
        for index in range(size):
            assert tree.inclusion_proof(index, size) == inclusion_proof_from_hashes(prefix, index)
        for old_size in range(size + 1):
            assert tree.consistency_proof(old_size, size) == consistency_proof_from_hashes(prefix, old_size)


def test_proofs_equal_the_pure_functions_on_larger_trees() -> None:
    rng = random.Random(7)
    hashes = _hashes(5000)
    tree = MerkleTree()
    tree.extend(hashes)
    for size in (1023, 1024, 1025, 4095, 4096, 5000, rng.randrange(2, 5000)):
        prefix = hashes[:size]
        top = root_from_hashes(prefix)
        assert tree.root(size) == top
        for index in {0, size - 1, rng.randrange(size)}:
            proof = tree.inclusion_proof(index, size)
            assert proof == inclusion_proof_from_hashes(prefix, index)
            verify_inclusion(hashes[index], index, size, proof, top)
        for old_size in {1, size - 1, rng.randrange(size)}:
            proof = tree.consistency_proof(old_size, size)
            assert proof == consistency_proof_from_hashes(prefix, old_size)
            verify_consistency(old_size, size, tree.root(old_size), top, proof)


def test_questions_read_log_n_nodes_in_one_call() -> None:
    size = (1 << 16) + 12345
    store = CountingStore()
    tree = MerkleTree(store)
    tree.extend(_hashes(size))
    assert store.write_calls == 1 and store.reads == 0
    for index in (0, 777, size // 2, size - 1):
        store.reads = store.read_calls = 0
        tree.inclusion_proof(index)
        assert store.read_calls == 1
        assert store.reads <= 2 * size.bit_length()
    for old_size in (1, 1000, size // 3, size - 1):
        store.reads = store.read_calls = 0
        tree.consistency_proof(old_size)
        assert store.read_calls == 1
        assert store.reads <= 2 * size.bit_length()
    store.reads = store.read_calls = 0
    tree.root(size - 5)
    assert store.read_calls == 1 and store.reads <= size.bit_length()


def test_append_writes_amortised_two_nodes_without_reading() -> None:
    store = CountingStore()
    tree = MerkleTree(store)
    for value in _hashes(1024):
        tree.append(value)
    assert store.reads == 0
    assert store.write_calls == 1024
    assert sum(len(level) for level in store.inner.state_dict()["levels"]) == 2047


def test_append_and_extend_build_the_same_store() -> None:
    hashes = _hashes(300)
    one, many = MemoryNodeStore(), MemoryNodeStore()
    tree_one, tree_many = MerkleTree(one), MerkleTree(many)
    assert [tree_one.append(h) for h in hashes] == list(range(300))
    assert tree_many.extend(hashes[:17]) == range(0, 17)
    assert tree_many.extend([]) == range(17, 17)
    assert tree_many.extend(hashes[17:]) == range(17, 300)
    assert one.state_dict() == many.state_dict()
    assert tree_one.root() == tree_many.root() == root_from_hashes(hashes)
    assert len(tree_one) == tree_one.size == 300
    assert tree_one.leaf_hash(299) == hashes[299]


def test_reopening_a_store_resumes_the_tree() -> None:
    hashes = _hashes(100)
    store = MemoryNodeStore()
    MerkleTree(store).extend(hashes[:61])
    reopened = MerkleTree(store, size=61)
    assert reopened.root() == root_from_hashes(hashes[:61])
    reopened.extend(hashes[61:])
    assert reopened.root() == root_from_hashes(hashes)
    assert reopened.inclusion_proof(3) == inclusion_proof_from_hashes(hashes, 3)


def test_opening_with_more_leaves_than_stored_fails() -> None:
    store = MemoryNodeStore()
    MerkleTree(store).extend(_hashes(5))
    with pytest.raises(VerificationError, match=r"lacks node \(1, 2\) of a tree of size 6"):
        MerkleTree(store, size=6)
    with pytest.raises(ValueError, match="not a non-negative int"):
        MerkleTree(store, size=-1)


def test_state_dict_round_trip_and_tamper_detection() -> None:
    hashes = _hashes(45)
    store = MemoryNodeStore()
    tree = MerkleTree(store)
    tree.extend(hashes)
    state = tree.state_dict()
    assert state == {"size": 45, "root": root_from_hashes(hashes)}

    copy = MemoryNodeStore()
    copy.load_state_dict(store.state_dict())
    resumed = MerkleTree(copy)
    resumed.load_state_dict(state)
    assert resumed.size == 45 and resumed.root() == state["root"]
    assert resumed.inclusion_proof(44) == tree.inclusion_proof(44)

    with pytest.raises(VerificationError, match="root mismatch"):
        resumed.load_state_dict({"size": 44, "root": state["root"]})
    assert resumed.size == 45  # unchanged after a failed load

    levels = store.state_dict()["levels"]
    levels[5][0] = bytes(32)  # the subtree of leaves 0..31
    forged = MemoryNodeStore()
    forged.load_state_dict({"levels": levels})
    with pytest.raises(VerificationError, match="root mismatch"):
        MerkleTree(forged).load_state_dict(state)


def test_bad_arguments_are_refused() -> None:
    tree = MerkleTree()
    tree.extend(_hashes(10))
    with pytest.raises(ValueError, match="leaf hash is 31 bytes"):
        tree.append(bytes(31))
    with pytest.raises(ValueError, match="leaf hash 1 is 33 bytes"):
        tree.extend([bytes(32), bytes(33)])
    assert tree.size == 10
    with pytest.raises(ValueError, match="size 11 is out of range"):
        tree.root(11)
    with pytest.raises(ValueError, match="index 5 is out of range for a tree of size 5"):
        tree.inclusion_proof(5, 5)
    with pytest.raises(ValueError, match="index -1 is out of range"):
        tree.inclusion_proof(-1)
    with pytest.raises(ValueError, match="old_size 6 is out of range for a tree of size 5"):
        tree.consistency_proof(6, 5)
    with pytest.raises(ValueError, match="new_size 12 is out of range"):
        tree.consistency_proof(1, 12)
    with pytest.raises(ValueError, match="index 10 is out of range"):
        tree.leaf_hash(10)
    assert tree.consistency_proof(0) == [] and tree.consistency_proof(10) == []
    assert tree.root(0) == EMPTY_ROOT


def test_memory_store_contract() -> None:
    store = MemoryNodeStore()
    with pytest.raises(KeyError):
        store.get(0, 0)
    store.put(0, 0, b"a" * 32)
    store.put(0, 0, b"a" * 32)  # same value again is fine
    with pytest.raises(ValueError, match="different hash"):
        store.put(0, 0, b"b" * 32)
    with pytest.raises(ValueError, match="gap"):
        store.put(0, 2, b"c" * 32)
    with pytest.raises(KeyError):
        store.get(-1, 0)
    with pytest.raises(KeyError):
        store.get_many([(0, 0), (0, 1)])
    assert store.get_many([(0, 0)]) == [b"a" * 32]
    # put_many is all or nothing
    with pytest.raises(ValueError, match="gap"):
        store.put_many([(0, 1, b"d" * 32), (1, 0, b"e" * 32), (0, 3, b"f" * 32)])
    assert store.state_dict() == {"levels": [[b"a" * 32]]}
    with pytest.raises(ValueError, match=r"node \(0, 0\) is 3 bytes"):
        store.load_state_dict({"levels": [[b"abc"]]})
