"""Merkle tree hashing, proofs and their verification, as pure functions over bytes.

Implements the Merkle Tree of RFC 9162, "Certificate Transparency Version 2.0" (Laurie, Messeri and
Stradling, 2021), section 2.1, which is the tree of RFC 6962 (Laurie, Langley and Kasper, 2013), with
SHA-256:

* a leaf is ``SHA-256(0x00 || entry)``, an interior node ``SHA-256(0x01 || left || right)``;
* the tree over ``n > 1`` leaves splits at ``k``, the largest power of two smaller than ``n``; the empty
  tree's root is ``SHA-256("")``.

Proof generation follows sections 2.1.3.1 (``PATH``) and 2.1.4.1 (``PROOF``/``SUBPROOF``); verification
follows the algorithms of sections 2.1.3.2 and 2.1.4.2 step by step. Everything here is iterative, so tree
size is limited by memory only, never by the recursion limit. Generating a proof here costs O(n) hashes;
:class:`fedswarm.ledger.tree.MerkleTree` answers the same questions with O(log n) stored hashes.

Verification never returns a flag: it returns ``None`` or raises
:class:`~fedswarm.core.errors.VerificationError` with the reason (wrong hash length, index out of range,
wrong proof length, root mismatch).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from fedswarm.core.errors import VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "consistency_proof",
    "consistency_proof_from_hashes",
    "consistency_proof_length",
    "inclusion_proof",
    "inclusion_proof_from_hashes",
    "inclusion_proof_length",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_hashes",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree: SHA-256 of the empty string."""

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """Hash one log entry into a leaf: ``SHA-256(0x00 || data)``."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two child hashes into their parent: ``SHA-256(0x01 || left || right)``."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash (``MTH``) of a list of raw entries; :data:`EMPTY_ROOT` for no entries."""
    return root_from_hashes([leaf_hash(data) for data in leaves])


def root_from_hashes(hashes: Sequence[bytes]) -> bytes:
    """Merkle Tree Hash of a list of leaf hashes (already hashed with :func:`leaf_hash`).

    Raises
    ------
    ValueError
        If a leaf hash is not :data:`HASH_SIZE` bytes long.
    """
    _require_hashes(hashes)
    if not hashes:
        return EMPTY_ROOT
    level = hashes
    while len(level) > 1:
        level = _parent_level(level)
    return bytes(level[0])


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path (RFC 9162 ``PATH``) of entry ``index`` in the tree of the raw entries ``leaves``.

    Raises
    ------
    ValueError
        If ``index`` is not a position in ``leaves``.
    """
    return inclusion_proof_from_hashes([leaf_hash(data) for data in leaves], index)


def inclusion_proof_from_hashes(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Audit path of leaf ``index`` in the tree of the leaf hashes ``hashes``, deepest sibling first.

    Raises
    ------
    ValueError
        If ``index`` is not a position in ``hashes`` or a leaf hash has the wrong length.
    """
    _require_hashes(hashes)
    if not 0 <= index < len(hashes):
        raise ValueError(f"index {index} is out of range for a tree of size {len(hashes)}")
    # Level by level: the node at position j of a level covers leaves [j * 2**level, (j + 1) * 2**level)
    # clipped to the tree; a level's odd last node is promoted unchanged, which yields the RFC's tree.
    proof: list[bytes] = []
    level = hashes
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(bytes(level[sibling]))
        level = _parent_level(level)
        index >>= 1
    return proof


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Consistency proof (RFC 9162 ``PROOF``) between the first ``old_size`` entries and all of ``leaves``.

    The proof is empty when ``old_size`` is 0 or ``len(leaves)``.

    Raises
    ------
    ValueError
        If ``old_size`` is negative or larger than ``len(leaves)``.
    """
    return consistency_proof_from_hashes([leaf_hash(data) for data in leaves], old_size)


def consistency_proof_from_hashes(hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Consistency proof between the first ``old_size`` leaf hashes and all of ``hashes``.

    Raises
    ------
    ValueError
        If ``old_size`` is negative or larger than ``len(hashes)``, or a leaf hash has the wrong length.
    """
    _require_hashes(hashes)
    size = len(hashes)
    if not 0 <= old_size <= size:
        raise ValueError(f"old_size {old_size} is out of range for a tree of size {size}")
    if old_size in (0, size):
        return []
    # SUBPROOF(m, D[lo:hi], complete) unrolled: each step appends one subtree hash after the proof of the
    # deeper step, so the hashes are collected outermost first and reversed at the end.
    outer_first: list[bytes] = []
    lo, hi, m, complete = 0, size, old_size, True
    while m != hi - lo:
        k = _split_point(hi - lo)
        if m <= k:
            outer_first.append(root_from_hashes(hashes[lo + k : hi]))
            hi = lo + k
        else:
            outer_first.append(root_from_hashes(hashes[lo : lo + k]))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        outer_first.append(root_from_hashes(hashes[lo:hi]))
    outer_first.reverse()
    return outer_first


def inclusion_proof_length(index: int, size: int) -> int:
    """Number of hashes in the audit path of leaf ``index`` in a tree of ``size`` leaves.

    Raises
    ------
    ValueError
        If ``index`` is not below ``size``.
    """
    if not 0 <= index < size:
        raise ValueError(f"index {index} is out of range for a tree of size {size}")
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_proof_length(old_size: int, new_size: int) -> int:
    """Number of hashes in the consistency proof between sizes ``old_size`` and ``new_size``.

    Raises
    ------
    ValueError
        If ``old_size`` is negative or larger than ``new_size``.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"sizes {old_size} -> {new_size} are out of order")
    if old_size in (0, new_size):
        return 0
    shift = (old_size & -old_size).bit_length() - 1  # trailing zero bits of old_size
    first, last = (old_size - 1) >> shift, (new_size - 1) >> shift
    inner = (first ^ last).bit_length()
    return (first != 0) + inner + (first >> inner).bit_count()


def root_from_inclusion_proof(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Root that an audit path yields for ``leaf_hash`` at ``index`` in a tree of ``size`` leaves.

    Runs RFC 9162 section 2.1.3.2 up to, not including, the final comparison with the root.

    Raises
    ------
    VerificationError
        If a hash has the wrong length, ``index`` is not below ``size``, or the proof has the wrong
        number of hashes for ``(index, size)``.
    """
    _check_hash(leaf_hash, "leaf_hash")
    _check_int(index, "index")
    _check_int(size, "size")
    if not 0 <= index < size:
        raise VerificationError(f"index {index} is out of range for tree size {size}")
    expected = inclusion_proof_length(index, size)
    if len(proof) != expected:
        raise VerificationError(
            f"inclusion proof has the wrong length: {len(proof)} hashes, a leaf at index {index} of a tree "
            f"of size {size} needs {expected}"
        )
    for position, value in enumerate(proof):
        _check_hash(value, f"proof[{position}]")
    fn, sn, r = index, size - 1, bytes(leaf_hash)
    for p in proof:
        if fn & 1 or fn == sn:
            r = _sha256(_NODE_PREFIX + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(_NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:  # cannot happen once the length matches; kept so that the check fails closed
        raise VerificationError(f"inclusion proof for index {index} does not reach the root of size {size}")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is the leaf at ``index`` of the tree of ``size`` leaves with this ``root``.

    RFC 9162 section 2.1.3.2. The proof does not authenticate ``size``: take ``size`` and ``root`` from
    the same signed tree head.

    Raises
    ------
    VerificationError
        With the reason: a hash of the wrong length, ``index`` out of range, a proof of the wrong length,
        or a root mismatch.
    """
    _check_hash(root, "root")
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if not hmac.compare_digest(computed, root):
        raise VerificationError(
            f"root mismatch: the inclusion proof for index {index} in a tree of size {size} yields "
            f"{computed.hex()}, expected {bytes(root).hex()}"
        )


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """Check that the tree of ``new_size`` leaves with ``new_root`` extends the one of ``old_size``.

    RFC 9162 section 2.1.4.2 for ``0 < old_size < new_size``. Outside that range the proof must be empty;
    equal sizes need equal roots, and a tree of size 0 must have :data:`EMPTY_ROOT` as its root.

    Raises
    ------
    VerificationError
        With the reason: a hash of the wrong length, sizes out of order, a proof of the wrong length, or
        a mismatch of the old or the new root.
    """
    _check_hash(old_root, "old_root")
    _check_hash(new_root, "new_root")
    _check_int(old_size, "old_size")
    _check_int(new_size, "new_size")
    if old_size < 0:
        raise VerificationError(f"old_size {old_size} is negative")
    if old_size > new_size:
        raise VerificationError(f"old_size {old_size} is larger than new_size {new_size}")
    expected = consistency_proof_length(old_size, new_size)
    if len(proof) != expected:
        raise VerificationError(
            f"consistency proof has the wrong length: {len(proof)} hashes, sizes {old_size} -> {new_size} "
            f"need {expected}"
        )
    for position, value in enumerate(proof):
        _check_hash(value, f"proof[{position}]")
    if old_size == 0:
        if not hmac.compare_digest(old_root, EMPTY_ROOT):
            raise VerificationError(f"old root mismatch: {bytes(old_root).hex()} is not the empty tree's root")
        if new_size == 0 and not hmac.compare_digest(new_root, EMPTY_ROOT):
            raise VerificationError(f"new root mismatch: {bytes(new_root).hex()} is not the empty tree's root")
        return
    if old_size == new_size:
        if not hmac.compare_digest(old_root, new_root):
            raise VerificationError(f"root mismatch: two trees of size {old_size} have different roots")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old tree is a subtree of the new one
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # cannot happen once the length matches; kept so that the check fails closed
            raise VerificationError(f"consistency proof for sizes {old_size} -> {new_size} is too long")
        if fn & 1 or fn == sn:
            fr = _sha256(_NODE_PREFIX + c + fr).digest()
            sr = _sha256(_NODE_PREFIX + c + sr).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(_NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError(f"consistency proof for sizes {old_size} -> {new_size} is too short")
    if not hmac.compare_digest(fr, old_root):
        raise VerificationError(
            f"old root mismatch: the consistency proof yields {bytes(fr).hex()} for size {old_size}, "
            f"expected {bytes(old_root).hex()}"
        )
    if not hmac.compare_digest(sr, new_root):
        raise VerificationError(
            f"new root mismatch: the consistency proof yields {bytes(sr).hex()} for size {new_size}, "
            f"expected {bytes(new_root).hex()}"
        )


def _parent_level(level: Sequence[bytes]) -> list[bytes]:
    pairs = iter(level)
    parents = [_sha256(_NODE_PREFIX + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
    if len(level) & 1:
        parents.append(level[-1])
    return parents


def _split_point(width: int) -> int:
    """Largest power of two strictly smaller than ``width`` (``width >= 2``)."""
    return 1 << ((width - 1).bit_length() - 1)


def _require_hashes(hashes: Sequence[bytes]) -> None:
    for position, value in enumerate(hashes):
        if len(value) != HASH_SIZE:
            raise ValueError(f"leaf hash {position} is {len(value)} bytes, expected {HASH_SIZE}")


def _check_hash(value: bytes, name: str) -> None:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise VerificationError(f"{name} is a {type(value).__name__}, expected {HASH_SIZE} bytes")
    if len(value) != HASH_SIZE:
        raise VerificationError(f"{name} is {len(value)} bytes long, expected {HASH_SIZE}")


def _check_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise VerificationError(f"{name} is a {type(value).__name__}, expected an int")
