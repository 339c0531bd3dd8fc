"""Cross-check of the Merkle tree against an independent implementation, pymerkle (RFC 9162 trees).

pymerkle builds the same tree (SHA-256, ``0x00`` leaf and ``0x01`` node prefixes, split at the largest
power of two below the width), so on random trees:

* roots: every prefix root agrees (``fedswarm.ledger.merkle.root``, :class:`MerkleTree` and pymerkle);
* inclusion, both ways: pymerkle's audit paths pass :func:`verify_inclusion`, and fedswarm's paths, put
  into pymerkle's proof format, pass pymerkle's verifier;
* consistency, pymerkle to fedswarm: pymerkle's proofs, regrouped into the RFC 9162 section 2.1.4.1
  ``PROOF`` list, pass :func:`verify_consistency` and equal fedswarm's own proofs;
* consistency, fedswarm to pymerkle: pymerkle's proof layout is not RFC 9162's (where the old tree ends
  exactly at a split, it descends into the new part down to its first leaf instead of giving that
  subtree's hash), so an RFC proof fits its verifier only for the size pairs where every hash pymerkle
  wants is one of the RFC proof's (about half of them); those proofs are checked by pymerkle's verifier,
  and for every size pair each hash of fedswarm's proof is checked against pymerkle's root of the leaf
  range RFC 9162 says it covers;
* tampering with any hash makes both verifiers refuse.
"""

from __future__ import annotations

import hashlib
import warnings

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from fedswarm.ledger.tree import MerkleTree

pymerkle = pytest.importorskip("pymerkle", reason="the cross-check needs pymerkle (the dev extra)")

Range = tuple[int, int]

leaves_strategy = st.lists(st.binary(max_size=24), min_size=1, max_size=70)


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(width: int) -> int:
    """Largest power of two strictly below ``width`` (RFC 9162 section 2.1.1)."""
    k = 1
    while k * 2 < width:
        k *= 2
    return k


def _rfc_proof_ranges(old: int, new: int) -> list[Range]:
    """The leaf ranges of RFC 9162 ``PROOF(m, D[n])`` (section 2.1.4.1), in proof order."""

    def subproof(m: int, lo: int, hi: int, complete: bool) -> list[Range]:
        if m == hi - lo:
            return [] if complete else [(lo, hi)]
        k = _split(hi - lo)
        if m <= k:
            return [*subproof(m, lo, lo + k, complete), (lo + k, hi)]
        return [*subproof(m - k, lo + k, hi, False), (lo, lo + k)]

    return subproof(old, 0, new, True)


def _pymerkle_consistency_ranges(old: int, new: int) -> list[Range]:
    """The leaf ranges behind the hashes of a pymerkle consistency proof, as its documentation describes."""
    start, old_width, width = 0, old, new
    siblings: list[Range] = []
    while not (old_width == width or (old_width == 0 and width == 1)):
        k = _split(width)
        if old_width < k:
            siblings.append((start + k, start + width))
            width = k
        else:
            siblings.append((start, start + k))
            start, old_width, width = start + k, old_width - k, width - k
    base = (start, start + width) if old_width == width else (start, start + 1)
    return [base, *reversed(siblings)]


def _range_hash(known: dict[Range, bytes], lo: int, hi: int) -> bytes:
    """Hash of the subtree over ``[lo, hi)`` from the subtree hashes in ``known``, splitting per RFC 9162."""
    if (lo, hi) in known:
        return known[(lo, hi)]
    assert hi - lo > 1, f"no hash for leaf {lo}"
    k = _split(hi - lo)
    return _node(_range_hash(known, lo, lo + k), _range_hash(known, lo + k, hi))


def _pymerkle_tree(leaves: list[bytes]) -> pymerkle.InmemoryTree:
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    for data in leaves:
        tree.append_entry(data)
    return tree


def _pymerkle_root(tree: pymerkle.InmemoryTree, size: int) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        getter = getattr(tree, "get_root", None) or tree.get_state
        return bytes(getter(size))


def _flip(proof: list[bytes], position: int) -> list[bytes]:
    changed = list(proof)
    changed[position] = bytes([changed[position][0] ^ 1]) + changed[position][1:]
    return changed


@settings(max_examples=60, deadline=None)
@given(leaves=leaves_strategy)
def test_roots_agree_on_every_prefix(leaves: list[bytes]) -> None:
    theirs = _pymerkle_tree(leaves)
    ours = MerkleTree()
    ours.extend([leaf_hash(data) for data in leaves])
    for size in range(1, len(leaves) + 1):
        expected = _pymerkle_root(theirs, size)
        assert root(leaves[:size]) == expected
        assert ours.root(size) == expected


@settings(max_examples=80, deadline=None)
@given(leaves=leaves_strategy, data=st.data())
def test_inclusion_proofs_cross_verify(leaves: list[bytes], data: st.DataObject) -> None:
    size = data.draw(st.integers(1, len(leaves)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    theirs = _pymerkle_tree(leaves)
    tree_root = _pymerkle_root(theirs, size)
    leaf = leaf_hash(leaves[index])

    # pymerkle's proof, checked by fedswarm: its path is the leaf hash followed by the RFC 9162 audit path
    their_proof = theirs.prove_inclusion(index + 1, size)
    assert their_proof.path[0] == leaf
    verify_inclusion(leaf, index, size, their_proof.path[1:], tree_root)

    # fedswarm's proof, checked by pymerkle: same structure (rule) as pymerkle's own, hashes from fedswarm
    ours = inclusion_proof(leaves[:size], index)
    assert ours == their_proof.path[1:]
    serialized = their_proof.serialize()
    serialized["path"] = [value.hex() for value in [leaf, *ours]]
    pymerkle.verify_inclusion(leaf, tree_root, pymerkle.InclusionProof.deserialize(serialized), index + 1, size)

    if ours:  # a tampered hash fails both
        position = data.draw(st.integers(0, len(ours) - 1), label="tampered")
        with pytest.raises(VerificationError):
            verify_inclusion(leaf, index, size, _flip(ours, position), tree_root)
        serialized["path"] = [value.hex() for value in [leaf, *_flip(ours, position)]]
        with pytest.raises(pymerkle.InvalidProof):
            pymerkle.verify_inclusion(leaf, tree_root, pymerkle.InclusionProof.deserialize(serialized))


@settings(max_examples=80, deadline=None)
@given(leaves=leaves_strategy.filter(lambda values: len(values) >= 2), data=st.data())
def test_consistency_proofs_cross_verify(leaves: list[bytes], data: st.DataObject) -> None:
    new = data.draw(st.integers(2, len(leaves)), label="new")
    old = data.draw(st.integers(1, new - 1), label="old")
    theirs = _pymerkle_tree(leaves)
    old_root, new_root = _pymerkle_root(theirs, old), _pymerkle_root(theirs, new)
    ours = consistency_proof(leaves[:new], old)
    tree = MerkleTree()
    tree.extend([leaf_hash(value) for value in leaves])
    assert tree.consistency_proof(old, new) == ours

    # pymerkle -> fedswarm: regroup pymerkle's hashes into the RFC 9162 PROOF list and verify it
    their_proof = theirs.prove_consistency(old, new)
    their_ranges = _pymerkle_consistency_ranges(old, new)
    assert len(their_ranges) == len(their_proof.path)
    for (lo, hi), value in zip(their_ranges, their_proof.path, strict=True):
        assert value == root(leaves[lo:hi])  # each of pymerkle's hashes is the subtree it claims to be
    known = dict(zip(their_ranges, their_proof.path, strict=True))
    regrouped = [_range_hash(known, lo, hi) for lo, hi in _rfc_proof_ranges(old, new)]
    verify_consistency(old, new, old_root, new_root, regrouped)
    assert regrouped == ours

    # fedswarm -> pymerkle: every hash of our proof is pymerkle's root over the range RFC 9162 assigns it
    for (lo, hi), value in zip(_rfc_proof_ranges(old, new), ours, strict=True):
        assert value == _pymerkle_root(_pymerkle_tree(leaves[lo:hi]), hi - lo)
    # ... and where the layouts coincide, pymerkle's own verifier accepts our proof
    ranges = _pymerkle_consistency_ranges(old, new)
    rfc_ranges = _rfc_proof_ranges(old, new)
    if set(ranges) <= set(rfc_ranges) | {(0, old)}:
        mine = {**dict(zip(rfc_ranges, ours, strict=True)), (0, old): old_root}
        serialized = their_proof.serialize()
        serialized["path"] = [mine[r].hex() for r in ranges]
        pymerkle.verify_consistency(old_root, new_root, pymerkle.ConsistencyProof.deserialize(serialized), old, new)

    # a tampered hash fails both
    assume(ours)
    position = data.draw(st.integers(0, len(ours) - 1), label="tampered")
    with pytest.raises(VerificationError):
        verify_consistency(old, new, old_root, new_root, _flip(ours, position))
    tampered = theirs.prove_consistency(old, new)
    tampered.path = _flip(list(tampered.path), data.draw(st.integers(0, len(tampered.path) - 1), label="theirs"))
    with pytest.raises(pymerkle.InvalidProof):
        pymerkle.verify_consistency(old_root, new_root, tampered)


def test_the_layouts_coincide_often_enough_for_the_direct_check() -> None:
    """How many (old, new) pairs up to 64 leaves pymerkle's verifier checks fedswarm's proof for directly."""
    direct = total = 0
    for new in range(2, 65):
        for old in range(1, new):
            total += 1
            ranges = set(_pymerkle_consistency_ranges(old, new))
            direct += ranges <= set(_rfc_proof_ranges(old, new)) | {(0, old)}
    assert total == 2016
    assert direct == 1055  # about half: the direct check is not a rare corner
