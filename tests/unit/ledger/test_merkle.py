"""Known-answer and rejection tests of the pure RFC 9162 Merkle functions."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedswarm.core.errors import VerificationError
from fedswarm.ledger import merkle
from fedswarm.ledger.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    consistency_proof_from_hashes,
    consistency_proof_length,
    inclusion_proof,
    inclusion_proof_from_hashes,
    inclusion_proof_length,
    leaf_hash,
    node_hash,
    root,
    root_from_hashes,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)


def _load_vectors_module() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "vectors" / "merkle" / "merkle_vectors.py"
    spec = importlib.util.spec_from_file_location("merkle_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("merkle_vectors", module)
    spec.loader.exec_module(module)
    return module


V: Any = _load_vectors_module().load_vectors()
LEAVES: list[bytes] = V.leaf_inputs


def _spec_mth(entries: Sequence[bytes]) -> bytes:
    """MTH written literally as RFC 9162 section 2.1.1 defines it (recursive), as an oracle."""
    if not entries:
        return hashlib.sha256(b"").digest()
    if len(entries) == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < len(entries):
        k *= 2
    return hashlib.sha256(b"\x01" + _spec_mth(entries[:k]) + _spec_mth(entries[k:])).digest()


def _structure_path(path: list[list[tuple[int, int]]]) -> list[bytes]:
    """Expected proof of a structure vector: ragged elements join their subtrees from the right."""
    entries = [V.structure_leaf(i) for i in range(128)]
    out = []
    for element in path:
        hashes = [_spec_mth(entries[index << level : (index + 1) << level]) for level, index in element]
        value = hashes[-1]
        for left in reversed(hashes[:-1]):
            value = hashlib.sha256(b"\x01" + left + value).digest()
        out.append(value)
    return out


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root([]) == EMPTY_ROOT == V.roots[0]
    assert root_from_hashes([]) == EMPTY_ROOT


def test_leaf_hashes_match_vectors() -> None:
    assert [leaf_hash(data) for data in LEAVES] == V.node_hashes[0]


def test_node_hash_builds_every_upper_level() -> None:
    for level in range(1, len(V.node_hashes)):
        below = V.node_hashes[level - 1]
        built = [node_hash(below[2 * i], below[2 * i + 1]) for i in range(len(below) // 2)]
        assert built == V.node_hashes[level]


def test_domain_separation_of_leaves_and_nodes() -> None:
    left, right = V.node_hashes[0][0], V.node_hashes[0][1]
    assert leaf_hash(left + right) != node_hash(left, right)
    assert leaf_hash(b"\x01" + left + right) == hashlib.sha256(b"\x00\x01" + left + right).digest()


@pytest.mark.parametrize("size", range(9))
def test_roots_of_every_size(size: int) -> None:
    assert root(LEAVES[:size]) == V.roots[size]
    assert root_from_hashes(V.node_hashes[0][:size]) == V.roots[size]


@pytest.mark.parametrize("case", V.inclusion, ids=lambda c: f"index{c[0]}-size{c[1]}")
def test_inclusion_known_answers(case: tuple[int, int, list[bytes]]) -> None:
    index, size, expected = case
    assert inclusion_proof(LEAVES[:size], index) == expected
    assert inclusion_proof_from_hashes(V.node_hashes[0][:size], index) == expected
    assert inclusion_proof_length(index, size) == len(expected)
    assert root_from_inclusion_proof(V.node_hashes[0][index], index, size, expected) == V.roots[size]
    verify_inclusion(V.node_hashes[0][index], index, size, expected, V.roots[size])


@pytest.mark.parametrize("case", V.consistency, ids=lambda c: f"{c[0]}-{c[1]}")
def test_consistency_known_answers(case: tuple[int, int, list[bytes]]) -> None:
    old_size, new_size, expected = case
    assert consistency_proof(LEAVES[:new_size], old_size) == expected
    assert consistency_proof_from_hashes(V.node_hashes[0][:new_size], old_size) == expected
    assert consistency_proof_length(old_size, new_size) == len(expected)
    verify_consistency(old_size, new_size, V.roots[old_size], V.roots[new_size], expected)


@pytest.mark.parametrize("case", V.inclusion_structure, ids=lambda c: f"index{c.index}-size{c.size}")
def test_inclusion_structure(case: Any) -> None:
    entries = [V.structure_leaf(i) for i in range(case.size)]
    if case.path is None:
        with pytest.raises(ValueError, match="out of range"):
            inclusion_proof(entries, case.index)
        return
    expected = _structure_path(case.path)
    assert inclusion_proof(entries, case.index) == expected
    verify_inclusion(leaf_hash(entries[case.index]), case.index, case.size, expected, _spec_mth(entries))


@pytest.mark.parametrize("case", V.consistency_structure, ids=lambda c: f"{c.old_size}-{c.new_size}")
def test_consistency_structure(case: Any) -> None:
    entries = [V.structure_leaf(i) for i in range(case.new_size)]
    if case.path is None:
        with pytest.raises(ValueError, match="out of range"):
            consistency_proof(entries, case.old_size)
        return
    expected = _structure_path(case.path)
    assert consistency_proof(entries, case.old_size) == expected
    old_root, new_root = _spec_mth(entries[: case.old_size]), _spec_mth(entries)
    verify_consistency(case.old_size, case.new_size, old_root, new_root, expected)


@pytest.mark.parametrize("case", V.edge_inclusion, ids=lambda c: c.desc)
def test_inclusion_edge_cases(case: Any) -> None:
    def check() -> None:
        verify_inclusion(case.leaf_hash, case.index, case.size, case.proof, case.root)

    if case.valid:
        check()
    else:
        with pytest.raises(VerificationError, match=re.escape(case.reason)):
            check()


@pytest.mark.parametrize("case", V.edge_consistency, ids=lambda c: c.desc)
def test_consistency_edge_cases(case: Any) -> None:
    def check() -> None:
        verify_consistency(case.old_size, case.new_size, case.old_root, case.new_root, case.proof)

    if case.valid:
        check()
    else:
        with pytest.raises(VerificationError, match=re.escape(case.reason)):
            check()


SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _flip(proof: list[bytes], position: int) -> list[bytes]:
    changed = list(proof)
    changed[position] = bytes([changed[position][0] ^ 8]) + changed[position][1:]
    return changed


def _inclusion_probes(
    index: int, size: int, proof: list[bytes], top: bytes, leaf: bytes
) -> list[tuple[str, Callable[[], None]]]:
    def probe(i: int, n: int, p: list[bytes], r: bytes, h: bytes) -> Callable[[], None]:
        return lambda: verify_inclusion(h, i, n, p, r)

    probes = [
        ("index - 1", probe(index - 1, size, proof, top, leaf)),
        ("index + 1", probe(index + 1, size, proof, top, leaf)),
        ("index ^ 2", probe(index ^ 2, size, proof, top, leaf)),
        ("size * 2", probe(index, size * 2, proof, top, leaf)),
        ("size // 2", probe(index, size // 2, proof, top, leaf)),
        ("wrong leaf", probe(index, size, proof, top, leaf_hash(b"wrong leaf"))),
        ("short leaf", probe(index, size, proof, top, b"WrongLeaf")),
        ("empty root", probe(index, size, proof, EMPTY_ROOT, leaf)),
        ("random root", probe(index, size, proof, SOME_HASH, leaf)),
        ("trailing garbage", probe(index, size, [*proof, b""], top, leaf)),
        ("trailing root", probe(index, size, [*proof, top], top, leaf)),
        ("preceding garbage", probe(index, size, [b"", *proof], top, leaf)),
        ("preceding root", probe(index, size, [top, *proof], top, leaf)),
    ]
    probes += [(f"flipped proof[{i}]", probe(index, size, _flip(proof, i), top, leaf)) for i in range(len(proof))]
    if proof:
        probes.append(("removed component", probe(index, size, proof[:-1], top, leaf)))
    if len(proof) > 1:
        probes.append(("inserted component", probe(index, size, [proof[0], SOME_HASH, *proof[1:]], top, leaf)))
    return probes


@pytest.mark.parametrize("case", V.inclusion, ids=lambda c: f"index{c[0]}-size{c[1]}")
def test_corrupted_inclusion_proofs_fail(case: tuple[int, int, list[bytes]]) -> None:
    index, size, proof = case
    for name, check in _inclusion_probes(index, size, proof, V.roots[size], V.node_hashes[0][index]):
        with pytest.raises(VerificationError):
            check()
            pytest.fail(f"probe {name!r} verified")


def _consistency_probes(
    old: int, new: int, proof: list[bytes], r1: bytes, r2: bytes
) -> list[tuple[str, Callable[[], None]]]:
    def probe(m: int, n: int, a: bytes, b: bytes, p: list[bytes]) -> Callable[[], None]:
        return lambda: verify_consistency(m, n, a, b, p)

    probes = [
        ("old - 1", probe(old - 1, new, r1, r2, proof)),
        ("old + 1", probe(old + 1, new, r1, r2, proof)),
        ("old ^ 2", probe(old ^ 2, new, r1, r2, proof)),
        ("new * 2", probe(old, new * 2, r1, r2, proof)),
        ("new // 2", probe(old, new // 2, r1, r2, proof)),
        ("wrong old root", probe(old, new, SOME_HASH, r2, proof)),
        ("wrong new root", probe(old, new, r1, SOME_HASH, proof)),
        ("swapped roots", probe(old, new, r2, r1, proof)),
        ("empty proof", probe(old, new, r1, r2, [])),
        ("trailing garbage", probe(old, new, r1, r2, [*proof, b""])),
        ("trailing old root", probe(old, new, r1, r2, [*proof, r1])),
        ("trailing new root", probe(old, new, r1, r2, [*proof, r2])),
        ("preceding garbage", probe(old, new, r1, r2, [b"", *proof])),
        ("preceding old root", probe(old, new, r1, r2, [r1, *proof])),
        ("preceding new root", probe(old, new, r1, r2, [r2, *proof])),
        ("preceding proof[0]", probe(old, new, r1, r2, [proof[0], *proof])),
        ("truncated", probe(old, new, r1, r2, proof[:-1])),
    ]
    probes += [(f"flipped proof[{i}]", probe(old, new, r1, r2, _flip(proof, i))) for i in range(len(proof))]
    return probes


@pytest.mark.parametrize("case", [c for c in V.consistency if c[2]], ids=lambda c: f"{c[0]}-{c[1]}")
def test_corrupted_consistency_proofs_fail(case: tuple[int, int, list[bytes]]) -> None:
    old, new, proof = case
    for name, check in _consistency_probes(old, new, proof, V.roots[old], V.roots[new]):
        with pytest.raises(VerificationError):
            check()
            pytest.fail(f"probe {name!r} verified")


def test_every_proof_of_small_trees_verifies_and_has_the_predicted_length() -> None:
    entries = [b"entry %d" % i for i in range(33)]
    hashes = [leaf_hash(e) for e in entries]
    for size in range(1, len(entries) + 1):
        top = _spec_mth(entries[:size])
        assert root_from_hashes(hashes[:size]) == top
        for index in range(size):
            proof = inclusion_proof_from_hashes(hashes[:size], index)
            assert len(proof) == inclusion_proof_length(index, size)
            verify_inclusion(hashes[index], index, size, proof, top)
        for old_size in range(size + 1):
            proof = consistency_proof_from_hashes(hashes[:size], old_size)
            assert len(proof) == consistency_proof_length(old_size, size)
            verify_consistency(old_size, size, _spec_mth(entries[:old_size]), top, proof)


def test_error_messages_name_the_problem() -> None:
    hashes = V.node_hashes[0]
    proof = inclusion_proof_from_hashes(hashes, 3)
    with pytest.raises(VerificationError, match=r"index 8 is out of range for tree size 8"):
        verify_inclusion(hashes[3], 8, 8, proof, V.roots[8])
    with pytest.raises(VerificationError, match=r"wrong length: 2 hashes, .* index 3 .* size 8 needs 3"):
        verify_inclusion(hashes[3], 3, 8, proof[:2], V.roots[8])
    with pytest.raises(VerificationError, match=r"root mismatch: .*index 3 in a tree of size 8"):
        verify_inclusion(hashes[4], 3, 8, proof, V.roots[8])
    with pytest.raises(VerificationError, match=r"proof\[2\] is 31 bytes long"):
        verify_inclusion(hashes[3], 3, 8, [*proof[:2], proof[2][:31]], V.roots[8])
    with pytest.raises(VerificationError, match="index is a bool"):
        verify_inclusion(hashes[0], True, 8, proof, V.roots[8])
    with pytest.raises(VerificationError, match="root is a str"):
        verify_inclusion(hashes[0], 0, 8, proof, "00" * 32)  # type: ignore[arg-type]
    old = consistency_proof_from_hashes(hashes, 6)
    with pytest.raises(VerificationError, match=r"new root mismatch: .* size 8"):
        verify_consistency(6, 8, V.roots[6], V.roots[7], old)
    with pytest.raises(VerificationError, match=r"old root mismatch: .* size 6"):
        verify_consistency(6, 8, V.roots[5], V.roots[8], old)
    with pytest.raises(VerificationError, match=r"wrong length: 2 hashes, sizes 6 -> 8 need 3"):
        verify_consistency(6, 8, V.roots[6], V.roots[8], old[:2])


def test_generation_rejects_bad_arguments() -> None:
    hashes = V.node_hashes[0]
    for index in (-1, 8):
        with pytest.raises(ValueError, match=f"index {index} is out of range"):
            inclusion_proof_from_hashes(hashes, index)
    for old_size in (-1, 9):
        with pytest.raises(ValueError, match=f"old_size {old_size} is out of range"):
            consistency_proof_from_hashes(hashes, old_size)
    with pytest.raises(ValueError, match="leaf hash 1 is 3 bytes"):
        root_from_hashes([hashes[0], b"abc"])
    with pytest.raises(ValueError):
        inclusion_proof_length(3, 3)
    with pytest.raises(ValueError):
        consistency_proof_length(4, 3)


def test_verifiers_accept_bytes_like_inputs() -> None:
    hashes = V.node_hashes[0]
    proof: Any = [bytearray(p) for p in inclusion_proof_from_hashes(hashes, 5)]
    leaf: Any = memoryview(hashes[5])
    top: Any = bytearray(V.roots[8])
    verify_inclusion(leaf, 5, 8, proof, top)
    cproof: Any = [memoryview(p) for p in consistency_proof_from_hashes(hashes, 3)]
    new_root: Any = memoryview(V.roots[8])
    old_root: Any = bytearray(V.roots[3])
    verify_consistency(3, 8, old_root, new_root, cproof)


def test_module_exports_exist() -> None:
    for name in merkle.__all__:
        assert hasattr(merkle, name), name
