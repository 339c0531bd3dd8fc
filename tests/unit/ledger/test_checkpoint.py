"""Tests of signed tree heads, cosignatures and quorum finality."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.checkpoint import (
    Checkpoint,
    Cosignature,
    TreeHead,
    cosign,
    quorum_size,
    sign_tree_head,
    verify_cosignatures,
    verify_final,
)


def _load_vectors_module() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "vectors" / "ledger" / "ledger_vectors.py"
    spec = importlib.util.spec_from_file_location("ledger_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("ledger_vectors", module)
    spec.loader.exec_module(module)
    return module


V: Any = _load_vectors_module().load_vectors()
SIGNER = SigningKey.from_seed(V.signer_seed)
MEMBERS = {f"m{i}": SigningKey.from_seed(bytes([i + 1]) * 32) for i in range(6)}
REGISTRY = {name: key.public_key().raw for name, key in MEMBERS.items()}


def _checkpoint(size: int = 9) -> Checkpoint:
    return sign_tree_head(
        TreeHead("vectors", size, bytes(range(32)), 1_700_000_000_000), signer="coordinator", key=SIGNER
    )


def test_tree_head_known_answer() -> None:
    checkpoint = _checkpoint()
    assert checkpoint.head.encode() == V.tree_head
    assert checkpoint.signature == V.tree_head_signature
    assert TreeHead.decode(V.tree_head) == checkpoint.head
    checkpoint.verify_signature(signer_key=V.signer_public)


def test_tree_head_decode_refuses_other_objects() -> None:
    with pytest.raises(VerificationError, match="does not parse"):
        TreeHead.decode(V.tree_head.replace(b'"size":9', b'"size":9,"x":1'))
    with pytest.raises(VerificationError, match="does not parse"):
        TreeHead.decode(V.tree_head.replace(b"tree-head", b"tree-tail"))
    with pytest.raises(ValueError, match="root"):
        TreeHead("f", 1, b"short", 0)


def test_signature_checks_fail_closed() -> None:
    checkpoint = _checkpoint()
    with pytest.raises(VerificationError, match="registered key"):
        checkpoint.verify_signature(signer_key=bytes(32))
    moved = replace(checkpoint, head=replace(checkpoint.head, size=10))
    with pytest.raises(VerificationError, match="does not verify"):
        moved.verify_signature()
    with pytest.raises(VerificationError):
        replace(checkpoint, signature=checkpoint.signature[:10]).verify_signature()


@pytest.mark.parametrize(
    ("members", "need"), [(0, 1), (1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (6, 5), (100, 67), (99, 67)]
)
def test_quorum_is_strictly_more_than_two_thirds(members: int, need: int) -> None:
    assert quorum_size(members) == need
    assert need > members * 2 / 3 or members == 0


def test_quorum_fraction_is_configurable() -> None:
    assert quorum_size(10, quorum=(1, 2)) == 6
    assert quorum_size(10, quorum=(0, 1)) == 1


def test_finality_counts_valid_cosigners() -> None:
    checkpoint = _checkpoint()
    cosigs = [cosign(checkpoint, member=name, key=MEMBERS[name]) for name in ["m0", "m1", "m2", "m3"]]
    with pytest.raises(VerificationError, match="not final: 4 of 6"):
        verify_final(checkpoint.with_cosignatures(cosigs), REGISTRY)
    final = checkpoint.with_cosignatures([*cosigs, cosign(checkpoint, member="m4", key=MEMBERS["m4"])])
    verify_final(final, REGISTRY)
    assert verify_cosignatures(final, REGISTRY) == frozenset({"m0", "m1", "m2", "m3", "m4"})
    verify_final(checkpoint.with_cosignatures(cosigs), REGISTRY, quorum=(1, 2))


def test_bad_cosignatures_are_errors_not_ignored() -> None:
    checkpoint = _checkpoint()
    good = cosign(checkpoint, member="m0", key=MEMBERS["m0"])
    stranger = cosign(checkpoint, member="mallory", key=SigningKey.from_seed(bytes(32)))
    with pytest.raises(VerificationError, match="not a registered member"):
        verify_cosignatures(checkpoint.with_cosignatures([good, stranger]), REGISTRY)
    impostor = cosign(checkpoint, member="m1", key=MEMBERS["m2"])
    with pytest.raises(VerificationError, match="registered key"):
        verify_cosignatures(checkpoint.with_cosignatures([impostor]), REGISTRY)
    other_head = cosign(_checkpoint(size=10), member="m1", key=MEMBERS["m1"])
    with pytest.raises(VerificationError, match="does not verify"):
        verify_cosignatures(checkpoint.with_cosignatures([other_head]), REGISTRY)


def test_json_round_trip_and_merge() -> None:
    checkpoint = _checkpoint().with_cosignatures([cosign(_checkpoint(), member="m1", key=MEMBERS["m1"])])
    merged = checkpoint.with_cosignatures([cosign(_checkpoint(), member="m0", key=MEMBERS["m0"])])
    assert [c.member for c in merged.cosignatures] == ["m0", "m1"]
    assert Checkpoint.from_json(merged.to_json()) == merged
    with pytest.raises(VerificationError, match="malformed"):
        Checkpoint.from_json({"size": 1})
    assert isinstance(merged.cosignatures[0], Cosignature)
