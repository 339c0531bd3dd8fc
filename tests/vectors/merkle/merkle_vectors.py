"""Loader of the Merkle tree known-answer vectors in ``rfc6962.json`` (origins in ``SOURCE.md``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ConsistencyCase",
    "ConsistencyStructure",
    "InclusionCase",
    "InclusionStructure",
    "MerkleVectors",
    "load_vectors",
]

VECTORS_FILE = Path(__file__).with_name("rfc6962.json")

NodeRef = tuple[int, int]


@dataclass(frozen=True)
class InclusionCase:
    """An inclusion proof to verify; ``reason`` is a fragment of the expected error when invalid."""

    desc: str
    leaf_hash: bytes
    index: int
    size: int
    proof: list[bytes]
    root: bytes
    valid: bool
    reason: str


@dataclass(frozen=True)
class ConsistencyCase:
    """A consistency proof to verify; ``reason`` is a fragment of the expected error when invalid."""

    desc: str
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    proof: list[bytes]
    valid: bool
    reason: str


@dataclass(frozen=True)
class InclusionStructure:
    """Which perfect subtrees make up the audit path of ``index`` in a tree of ``size`` (None: no proof)."""

    size: int
    index: int
    path: list[list[NodeRef]] | None


@dataclass(frozen=True)
class ConsistencyStructure:
    """Which perfect subtrees make up the consistency proof ``old_size -> new_size`` (None: no proof)."""

    old_size: int
    new_size: int
    path: list[list[NodeRef]] | None


@dataclass(frozen=True)
class MerkleVectors:
    """All vectors of ``rfc6962.json`` with hex decoded to bytes."""

    leaf_inputs: list[bytes]
    node_hashes: list[list[bytes]]
    roots: list[bytes]
    compact_trees: list[list[NodeRef]]
    inclusion: list[tuple[int, int, list[bytes]]]
    consistency: list[tuple[int, int, list[bytes]]]
    inclusion_structure: list[InclusionStructure]
    consistency_structure: list[ConsistencyStructure]
    edge_inclusion: list[InclusionCase]
    edge_consistency: list[ConsistencyCase]

    @staticmethod
    def structure_leaf(index: int) -> bytes:
        """Entry ``index`` of the trees of the structure vectors."""
        return index.to_bytes(4, "big")


def _hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(value) for value in values]


def _path(raw: dict[str, Any]) -> list[list[NodeRef]] | None:
    if raw.get("error"):
        return None
    return [[(int(level), int(index)) for level, index in element] for element in raw["path"]]


def load_vectors(path: Path = VECTORS_FILE) -> MerkleVectors:
    """Read and decode the vectors file."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    if raw["hash"] != "sha-256":
        raise ValueError(f"{path}: unexpected hash {raw['hash']!r}")
    return MerkleVectors(
        leaf_inputs=_hexes(raw["leaf_inputs"]),
        node_hashes=[_hexes(level) for level in raw["node_hashes"]],
        roots=_hexes(raw["roots"]),
        compact_trees=[[(level, index) for level, index in tree] for tree in raw["compact_trees"]],
        inclusion=[(case["index"], case["size"], _hexes(case["proof"])) for case in raw["inclusion"]],
        consistency=[(case["old_size"], case["new_size"], _hexes(case["proof"])) for case in raw["consistency"]],
        inclusion_structure=[
            InclusionStructure(case["size"], case["index"], _path(case)) for case in raw["inclusion_structure"]
        ],
        consistency_structure=[
            ConsistencyStructure(case["old_size"], case["new_size"], _path(case))
            for case in raw["consistency_structure"]
        ],
        edge_inclusion=[
            InclusionCase(
                desc=case["desc"],
                leaf_hash=bytes.fromhex(case["leaf_hash"]),
                index=case["index"],
                size=case["size"],
                proof=_hexes(case["proof"]),
                root=bytes.fromhex(case["root"]),
                valid=case["valid"],
                reason=case.get("reason", ""),
            )
            for case in raw["edge_inclusion"]
        ],
        edge_consistency=[
            ConsistencyCase(
                desc=case["desc"],
                old_size=case["old_size"],
                new_size=case["new_size"],
                old_root=bytes.fromhex(case["old_root"]),
                new_root=bytes.fromhex(case["new_root"]),
                proof=_hexes(case["proof"]),
                valid=case["valid"],
                reason=case.get("reason", ""),
            )
            for case in raw["edge_consistency"]
        ],
    )
