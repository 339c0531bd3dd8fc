"""An append-only Merkle tree that answers RFC 9162 questions in O(log n) stored hashes.

The tree is the one of RFC 9162 section 2.1 (Laurie, Messeri and Stradling, 2021); its storage is the
layout of history trees of Crosby and Wallach, "Efficient Data Structures for Tamper-Evident Logging"
(USENIX Security, 2009): the hash of every *complete perfect subtree*, addressed by ``(level, index)``.
Level 0 holds the leaf hashes; node ``(level, index)`` covers the leaves
``[index * 2**level, (index + 1) * 2**level)``. Such a node never changes once its last leaf is appended,
so it is written once and never rewritten.

A tree of ``n`` leaves whose size is not a power of two has a ragged right edge. The hash of a ragged
subtree ``[lo, n)`` is folded from the at most ``log2(n)`` perfect subtrees that cover it (one per set bit
of ``n - lo``), so the root of any past size, an audit path and a consistency proof each read O(log n)
nodes in a single :meth:`NodeStore.get_many` call and hash O(log n) times. Appending writes the new leaf
and the perfect subtrees it completes (two nodes on average) and keeps the *frontier* (the perfect subtrees
that cover the whole tree, largest first) in memory, so it never reads the store.

The proofs are identical to those of :mod:`fedswarm.ledger.merkle` and verify with its functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeAlias, TypedDict

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.merkle import EMPTY_ROOT, HASH_SIZE

__all__ = [
    "MemoryNodeStore",
    "MemoryNodeStoreState",
    "MerkleTree",
    "MerkleTreeState",
    "NodeKey",
    "NodeStore",
    "fold_cover",
    "perfect_levels",
]

NodeKey: TypeAlias = tuple[int, int]
"""``(level, index)`` of a perfect subtree: level 0 are leaves, ``index`` counts from the left."""

_sha256 = hashlib.sha256
_NODE_PREFIX = b"\x01"


class NodeStore(Protocol):
    """Storage of perfect-subtree hashes, keyed by ``(level, index)``.

    Contract, which a persistent (for example SQLite) implementation must keep:

    * a node is written exactly once, after its whole subtree exists, and never changes; writing the same
      key again with the same value is allowed, with a different value it raises :class:`ValueError`;
    * nodes of one level are written in increasing ``index`` order without gaps (the tree guarantees it);
    * reading a key that was never written raises :class:`KeyError`;
    * :meth:`put_many` writes all of its nodes or none (one transaction); the tree calls it once per
      :meth:`MerkleTree.append` or :meth:`MerkleTree.extend`, with the nodes in creation order;
    * :meth:`get_many` returns values in the order of ``keys``; the tree calls it once per question.

    The store does not know the tree size: whoever opens a :class:`MerkleTree` over an existing store
    passes it (for example the number of entries committed alongside the nodes).
    """

    def get(self, level: int, index: int) -> bytes:
        """Hash of node ``(level, index)``; :class:`KeyError` if it was never written."""
        ...

    def put(self, level: int, index: int, value: bytes) -> None:
        """Write the hash of node ``(level, index)``."""
        ...

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes]:
        """Hashes of several nodes, in the order of ``keys``; :class:`KeyError` if one is missing."""
        ...

    def put_many(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        """Write several ``(level, index, value)`` nodes at once, atomically."""
        ...


class MemoryNodeStoreState(TypedDict):
    """Serialized :class:`MemoryNodeStore`: ``levels[level][index]`` is the node hash."""

    levels: list[list[bytes]]


class MemoryNodeStore:
    """In-memory :class:`NodeStore`: one Python list per level."""

    __slots__ = ("_levels",)

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = []

    def get(self, level: int, index: int) -> bytes:
        """Hash of node ``(level, index)``; :class:`KeyError` if it was never written."""
        if level < 0 or index < 0 or level >= len(self._levels) or index >= len(self._levels[level]):
            raise KeyError((level, index))
        return self._levels[level][index]

    def put(self, level: int, index: int, value: bytes) -> None:
        """Write the hash of node ``(level, index)``, the next free index of its level."""
        self._put(level, index, value)

    def _put(self, level: int, index: int, value: bytes) -> bool:
        """Store a node; whether it was new (False: the same hash was already there)."""
        levels = self._levels
        if level < len(levels):
            nodes = levels[level]
            if index == len(nodes):
                nodes.append(bytes(value))
                return True
            if 0 <= index < len(nodes):
                if nodes[index] != value:
                    raise ValueError(f"node ({level}, {index}) is already stored with a different hash")
                return False
            raise ValueError(f"node ({level}, {index}) leaves a gap: level {level} holds {len(nodes)} nodes")
        if level == len(levels) and index == 0:
            levels.append([bytes(value)])
            return True
        raise ValueError(f"node ({level}, {index}) leaves a gap: the store has {len(levels)} levels")

    def get_many(self, keys: Sequence[NodeKey]) -> list[bytes]:
        """Hashes of several nodes, in the order of ``keys``; :class:`KeyError` if one is missing."""
        levels = self._levels
        try:
            return [levels[level][index] for level, index in keys]
        except IndexError:
            for level, index in keys:  # name the missing key
                self.get(level, index)
            raise

    def put_many(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        """Write several ``(level, index, value)`` nodes; nothing is written if one is refused."""
        added: list[int] = []
        try:
            for level, index, value in nodes:
                if self._put(level, index, value):
                    added.append(level)
        except ValueError:
            for level in reversed(added):
                self._levels[level].pop()
            while self._levels and not self._levels[-1]:
                self._levels.pop()
            raise

    def state_dict(self) -> MemoryNodeStoreState:
        """Every stored node, level by level (copies)."""
        return {"levels": [list(level) for level in self._levels]}

    def load_state_dict(self, state: MemoryNodeStoreState) -> None:
        """Replace the stored nodes with those of :meth:`state_dict`."""
        levels = [[bytes(value) for value in level] for level in state["levels"]]
        for level, values in enumerate(levels):
            for index, value in enumerate(values):
                if len(value) != HASH_SIZE:
                    raise ValueError(f"node ({level}, {index}) is {len(value)} bytes, expected {HASH_SIZE}")
        self._levels = levels


class MerkleTreeState(TypedDict):
    """Serialized :class:`MerkleTree`: its size and the root it commits to (the nodes live in the store)."""

    size: int
    root: bytes


class MerkleTree:
    """Append-only RFC 9162 Merkle tree over a :class:`NodeStore`.

    Parameters
    ----------
    store
        Where the perfect-subtree hashes live; a new :class:`MemoryNodeStore` when omitted.
    size
        Number of leaves already in ``store`` (0 for a new tree).

    Raises
    ------
    VerificationError
        If ``store`` lacks a node that a tree of ``size`` leaves must have.

    Notes
    -----
    One writer at a time: the frontier is cached in this object, so two trees must not append to one
    store.
    """

    def __init__(self, store: NodeStore | None = None, *, size: int = 0) -> None:
        self._store: NodeStore = MemoryNodeStore() if store is None else store
        self._frontier: list[bytes] = self._read_frontier(size)
        self._size = size
        self._root: bytes | None = None

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._size

    @property
    def store(self) -> NodeStore:
        """The node store."""
        return self._store

    def __len__(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> int:
        """Append a leaf hash (see :func:`fedswarm.ledger.merkle.leaf_hash`) and return its index.

        Writes the leaf and every perfect subtree it completes, with one :meth:`NodeStore.put_many`.

        Raises
        ------
        ValueError
            If ``leaf_hash`` is not :data:`~fedswarm.ledger.merkle.HASH_SIZE` bytes long.
        """
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf_hash)} bytes, expected {HASH_SIZE}")
        index = self._size
        frontier = self._frontier
        value = leaf_hash if type(leaf_hash) is bytes else bytes(leaf_hash)
        nodes = [(0, index, value)]
        position, level, merged = index, 0, len(frontier)
        while position & 1:
            merged -= 1
            value = _sha256(_NODE_PREFIX + frontier[merged] + value).digest()
            position >>= 1
            level += 1
            nodes.append((level, position, value))
        self._store.put_many(nodes)
        del frontier[merged:]
        frontier.append(value)
        self._size = index + 1
        self._root = None
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> range:
        """Append several leaf hashes with one :meth:`NodeStore.put_many`; return their indices.

        Raises
        ------
        ValueError
            If a leaf hash has the wrong length; nothing is appended then.
        """
        values = [bytes(value) for value in leaf_hashes]
        for offset, value in enumerate(values):
            if len(value) != HASH_SIZE:
                raise ValueError(f"leaf hash {offset} is {len(value)} bytes, expected {HASH_SIZE}")
        start = self._size
        frontier = list(self._frontier)
        nodes: list[tuple[int, int, bytes]] = []
        for index, leaf in enumerate(values, start):
            nodes.append((0, index, leaf))
            value, position, level = leaf, index, 0
            while position & 1:
                value = _sha256(_NODE_PREFIX + frontier.pop() + value).digest()
                position >>= 1
                level += 1
                nodes.append((level, position, value))
            frontier.append(value)
        if nodes:
            self._store.put_many(nodes)
        self._frontier = frontier
        self._size = start + len(values)
        self._root = None
        return range(start, self._size)

    def leaf_hash(self, index: int) -> bytes:
        """The leaf hash at ``index``.

        Raises
        ------
        ValueError
            If ``index`` is not below :attr:`size`.
        """
        if not 0 <= index < self._size:
            raise ValueError(f"index {index} is out of range for a tree of size {self._size}")
        return self._store.get(0, index)

    def root(self, size: int | None = None) -> bytes:
        """Root of the tree of the first ``size`` leaves (all leaves when ``None``).

        Raises
        ------
        ValueError
            If ``size`` is negative or larger than :attr:`size`.
        """
        n = self._resolve_size(size, "size")
        if n == self._size:
            if self._root is None:
                self._root = _fold(self._frontier) if self._frontier else EMPTY_ROOT
            return self._root
        if n == 0:
            return EMPTY_ROOT
        return _fold(self._store.get_many(_cover(0, n)))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Audit path of leaf ``index`` in the tree of the first ``size`` leaves (all when ``None``).

        Equal to :func:`fedswarm.ledger.merkle.inclusion_proof` on the same leaves.

        Raises
        ------
        ValueError
            If ``size`` is out of range or ``index`` is not below it.
        """
        n = self._resolve_size(size, "size")
        if not 0 <= index < n:
            raise ValueError(f"index {index} is out of range for a tree of size {n}")
        # The node at position j of level L covers [j * 2**L, (j + 1) * 2**L) clipped to n; the sibling of
        # the leaf's ancestor at each level is in the path unless it starts beyond the tree.
        ranges: list[tuple[int, int]] = []
        level = 0
        while (n - 1) >> level:
            lo = ((index >> level) ^ 1) << level
            if lo < n:
                ranges.append((lo, min(lo + (1 << level), n)))
            level += 1
        return self._range_hashes(ranges)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof between the first ``old_size`` and the first ``new_size`` leaves.

        Equal to :func:`fedswarm.ledger.merkle.consistency_proof` on the same leaves; empty when
        ``old_size`` is 0 or equals ``new_size``.

        Raises
        ------
        ValueError
            If ``new_size`` is out of range or ``old_size`` is negative or larger than ``new_size``.
        """
        n = self._resolve_size(new_size, "new_size")
        if not 0 <= old_size <= n:
            raise ValueError(f"old_size {old_size} is out of range for a tree of size {n}")
        if old_size in (0, n):
            return []
        outer_first: list[tuple[int, int]] = []
        lo, hi, m, complete = 0, n, old_size, True
        while m != hi - lo:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if m <= k:
                outer_first.append((lo + k, hi))
                hi = lo + k
            else:
                outer_first.append((lo, lo + k))
                lo, m, complete = lo + k, m - k, False
        if not complete:
            outer_first.append((lo, hi))
        outer_first.reverse()
        return self._range_hashes(outer_first)

    def cover(self, size: int | None = None) -> list[bytes]:
        """Hashes of the perfect subtrees covering the first ``size`` leaves (all when ``None``), largest first.

        :func:`fold_cover` of them is :meth:`root` of ``size``; followed by the cover of a later range
        they fold into the root of a larger tree.

        Raises
        ------
        ValueError
            If ``size`` is negative or larger than :attr:`size`.
        """
        n = self._resolve_size(size, "size")
        if n == self._size:
            return list(self._frontier)
        return self._store.get_many(_cover(0, n))

    def state_dict(self) -> MerkleTreeState:
        """Size and root; the nodes themselves stay in :attr:`store`."""
        return {"size": self._size, "root": self.root()}

    def load_state_dict(self, state: MerkleTreeState) -> None:
        """Resume at ``state["size"]`` over :attr:`store`, after checking that it yields ``state["root"]``.

        Raises
        ------
        VerificationError
            If the store lacks nodes of that size or its nodes yield another root; the tree is then
            unchanged.
        """
        size = state["size"]
        frontier = self._read_frontier(size)
        computed = _fold(frontier) if frontier else EMPTY_ROOT
        if computed != state["root"]:
            raise VerificationError(
                f"root mismatch: the node store yields {computed.hex()} for size {size}, "
                f"the state says {bytes(state['root']).hex()}"
            )
        self._frontier, self._size, self._root = frontier, size, computed

    def _read_frontier(self, size: int) -> list[bytes]:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size {size!r} is not a non-negative int")
        keys = _cover(0, size)
        try:
            frontier = self._store.get_many(keys)
        except KeyError as exc:
            raise VerificationError(f"node store lacks node {exc.args[0]} of a tree of size {size}") from None
        for key, value in zip(keys, frontier, strict=True):
            if len(value) != HASH_SIZE:
                raise VerificationError(f"node {key} is {len(value)} bytes, expected {HASH_SIZE}")
        return frontier

    def _resolve_size(self, size: int | None, name: str) -> int:
        if size is None:
            return self._size
        if not 0 <= size <= self._size:
            raise ValueError(f"{name} {size} is out of range for a tree of size {self._size}")
        return size

    def _range_hashes(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Hashes of the subtrees ``[lo, hi)``, reading all their nodes with one ``get_many``."""
        keys: list[NodeKey] = []
        bounds: list[int] = []
        for lo, hi in ranges:
            keys.extend(_cover(lo, hi))
            bounds.append(len(keys))
        values = self._store.get_many(keys)
        out: list[bytes] = []
        start = 0
        for end in bounds:
            out.append(values[start] if end - start == 1 else _fold(values[start:end]))
            start = end
        return out


def fold_cover(hashes: Sequence[bytes]) -> bytes:
    """Root of the tree made of these perfect subtrees (largest first, adjacent, left to right).

    :data:`~fedswarm.ledger.merkle.EMPTY_ROOT` for none.
    """
    return _fold(hashes) if hashes else EMPTY_ROOT


def perfect_levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """Every perfect subtree over ``leaf_hashes``, level by level (``levels[0]`` are the leaves).

    ``levels[j][i]`` is the hash of leaves ``[i * 2**j, (i + 1) * 2**j)``; an incomplete pair at the end of
    a level has no parent. For leaves that start at a multiple of ``2**j`` in a larger tree, these are that
    tree's nodes ``(j, start // 2**j + i)``.
    """
    levels = [list(leaf_hashes)]
    level = levels[0]
    while len(level) > 1:
        pairs = iter(level)
        level = [_sha256(_NODE_PREFIX + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
        levels.append(level)
    return levels


def _cover(lo: int, hi: int) -> list[NodeKey]:
    """Perfect subtrees covering ``[lo, hi)``, largest first.

    ``lo`` must be a multiple of the largest power of two not above ``hi - lo``, which holds for every
    subtree of the RFC 9162 tree (and for ``lo == 0``).
    """
    keys: list[NodeKey] = []
    width = hi - lo
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            keys.append((level, lo >> level))
            lo += 1 << level
    return keys


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Hash of the subtree made of these perfect subtrees, largest first: they join from the right."""
    value = hashes[-1]
    for left in reversed(hashes[:-1]):
        value = _sha256(_NODE_PREFIX + left + value).digest()
    return value
