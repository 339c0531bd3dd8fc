"""Property tests of the Merkle proofs: honest proofs verify, tampered ones and forked histories fail."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.merkle import (
    consistency_proof_from_hashes,
    inclusion_proof_from_hashes,
    leaf_hash,
    root_from_hashes,
    verify_consistency,
    verify_inclusion,
)
from fedswarm.ledger.tree import MerkleTree

MAX_SIZE = 300
SETTINGS = settings(max_examples=200, deadline=None, database=None)


def _log(size: int, salt: bytes) -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(size)]


def _tree(hashes: list[bytes]) -> MerkleTree:
    tree = MerkleTree()
    tree.extend(hashes)
    return tree


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_SIZE))
    return size, draw(st.integers(0, size - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    new_size = draw(st.integers(0, MAX_SIZE))
    return draw(st.integers(0, new_size)), new_size


salts = st.binary(max_size=8)


@SETTINGS
@given(size_and_index(), salts)
def test_inclusion_proofs_verify_and_match_the_tree(case: tuple[int, int], salt: bytes) -> None:
    size, index = case
    hashes = _log(size, salt)
    proof = inclusion_proof_from_hashes(hashes, index)
    top = root_from_hashes(hashes)
    verify_inclusion(hashes[index], index, size, proof, top)
    tree = _tree(hashes)
    assert tree.root() == top
    assert tree.inclusion_proof(index) == proof


@SETTINGS
@given(size_and_index(), salts, st.data())
def test_tampered_inclusion_proofs_fail(case: tuple[int, int], salt: bytes, data: st.DataObject) -> None:
    size, index = case
    hashes = _log(size, salt)
    proof = inclusion_proof_from_hashes(hashes, index)
    top = root_from_hashes(hashes)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        flipped = bytearray(proof[position])
        flipped[bit // 8] ^= 1 << (bit % 8)
        tampered = [*proof[:position], bytes(flipped), *proof[position + 1 :]]
        with pytest.raises(VerificationError):
            verify_inclusion(hashes[index], index, size, tampered, top)
    other_index = data.draw(st.integers(0, size).filter(lambda i: i != index))
    with pytest.raises(VerificationError):
        verify_inclusion(hashes[index], other_index, size, proof, top)
    # The root of another size: the proof does not show the leaf in that tree.
    other_size = data.draw(st.integers(index + 1, MAX_SIZE + 1).filter(lambda n: n != size))
    other_root = root_from_hashes(_log(other_size, salt))
    with pytest.raises(VerificationError):
        verify_inclusion(hashes[index], index, other_size, proof, other_root)
    with pytest.raises(VerificationError):
        verify_inclusion(hashes[index], index, size, proof, other_root)
    wrong_leaf = leaf_hash(b"not in the log" + salt)
    with pytest.raises(VerificationError):
        verify_inclusion(wrong_leaf, index, size, proof, top)


@SETTINGS
@given(two_sizes(), salts)
def test_consistency_proofs_verify_and_match_the_tree(sizes: tuple[int, int], salt: bytes) -> None:
    old_size, new_size = sizes
    hashes = _log(new_size, salt)
    proof = consistency_proof_from_hashes(hashes, old_size)
    old_root, new_root = root_from_hashes(hashes[:old_size]), root_from_hashes(hashes)
    verify_consistency(old_size, new_size, old_root, new_root, proof)
    tree = _tree(hashes)
    assert tree.consistency_proof(old_size) == proof
    assert tree.root(old_size) == old_root


@SETTINGS
@given(two_sizes().filter(lambda s: 0 < s[0] < s[1]), salts, st.data())
def test_tampered_consistency_proofs_fail(sizes: tuple[int, int], salt: bytes, data: st.DataObject) -> None:
    old_size, new_size = sizes
    hashes = _log(new_size, salt)
    proof = consistency_proof_from_hashes(hashes, old_size)
    old_root, new_root = root_from_hashes(hashes[:old_size]), root_from_hashes(hashes)
    position = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    flipped = bytearray(proof[position])
    flipped[bit // 8] ^= 1 << (bit % 8)
    tampered = [*proof[:position], bytes(flipped), *proof[position + 1 :]]
    with pytest.raises(VerificationError):
        verify_consistency(old_size, new_size, old_root, new_root, tampered)
    with pytest.raises(VerificationError):
        verify_consistency(old_size, new_size, new_root, old_root, proof)
    with pytest.raises(VerificationError):
        verify_consistency(old_size, new_size, old_root, new_root, proof[:-1])
    other_old = data.draw(st.integers(1, new_size - 1).filter(lambda m: m != old_size))
    with pytest.raises(VerificationError):
        verify_consistency(other_old, new_size, old_root, new_root, proof)


@SETTINGS
@given(two_sizes().filter(lambda s: 0 < s[0] <= s[1]), salts, st.data())
def test_forked_history_is_not_consistent(sizes: tuple[int, int], salt: bytes, data: st.DataObject) -> None:
    """A log that rewrote an entry the old tree holds cannot prove itself consistent with that tree."""
    old_size, new_size = sizes
    honest = _log(new_size, salt)
    fork_at = data.draw(st.integers(0, old_size - 1))
    forked = [*honest[:fork_at], leaf_hash(b"rewritten" + salt), *honest[fork_at + 1 :]]
    old_root = root_from_hashes(honest[:old_size])
    forked_root = root_from_hashes(forked)
    for proof in (
        consistency_proof_from_hashes(forked, old_size),
        consistency_proof_from_hashes(honest, old_size),
    ):
        with pytest.raises(VerificationError):
            verify_consistency(old_size, new_size, old_root, forked_root, proof)
