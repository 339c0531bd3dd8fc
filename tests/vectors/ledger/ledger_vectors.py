"""Loader of the ledger known-answer vectors in ``entries.json`` (how they were made: its description)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EntryCase", "LedgerVectors", "SeedCase", "load_vectors"]

VECTORS_FILE = Path(__file__).with_name("entries.json")


@dataclass(frozen=True)
class EntryCase:
    kind: str
    seq: int
    entry: bytes
    signature: bytes
    leaf_hash: bytes


@dataclass(frozen=True)
class SeedCase:
    seed: int
    name: str
    role: str
    secret: bytes


@dataclass(frozen=True)
class LedgerVectors:
    signer_seed: bytes
    signer_public: bytes
    entries: tuple[EntryCase, ...]
    tree_head: bytes
    tree_head_signature: bytes
    simulation_seeds: tuple[SeedCase, ...]


def load_vectors(path: Path = VECTORS_FILE) -> LedgerVectors:
    data = json.loads(path.read_text(encoding="utf-8"))
    return LedgerVectors(
        signer_seed=bytes.fromhex(data["signer_seed"]),
        signer_public=bytes.fromhex(data["signer_public"]),
        entries=tuple(
            EntryCase(
                c["kind"],
                c["seq"],
                c["entry"].encode("utf-8"),
                bytes.fromhex(c["signature"]),
                bytes.fromhex(c["leaf_hash"]),
            )
            for c in data["entries"]
        ),
        tree_head=data["tree_head"]["bytes"].encode("utf-8"),
        tree_head_signature=bytes.fromhex(data["tree_head"]["signature"]),
        simulation_seeds=tuple(
            SeedCase(c["seed"], c["name"], c["role"], bytes.fromhex(c["secret"])) for c in data["simulation_seeds"]
        ),
    )
