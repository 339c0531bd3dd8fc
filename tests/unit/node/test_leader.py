"""Swarm leader order, take-over timing and the commit inclusion check."""

from __future__ import annotations

import hashlib

from fedswarm.node.leader import DeclaredInput, check_own_input, leader_order, takeover_rank


def test_order_is_the_sha256_ranking() -> None:
    prev = "11" * 32
    names = ["a", "b", "c", "d"]
    expected = sorted(
        names, key=lambda n: hashlib.sha256(bytes.fromhex(prev) + (5).to_bytes(8, "big") + n.encode()).digest()
    )
    assert leader_order(prev, 5, reversed(names)) == expected
    assert leader_order(prev, 5, names) != leader_order(prev, 6, names) or leader_order("22" * 32, 5, names) != expected


def test_takeover_rank() -> None:
    assert takeover_rank(0.0, slot=10, unreachable_before=[False, False, False]) == 0
    assert takeover_rank(10.5, slot=10, unreachable_before=[False, False, False]) == 1
    assert takeover_rank(0.1, slot=10, unreachable_before=[True, True, False]) == 2
    assert takeover_rank(0.1, slot=10, unreachable_before=[True, True, True]) == 2


def test_inclusion_check() -> None:
    mine = DeclaredInput("me", "aa", True)
    assert check_own_input("me", "aa", [mine]) is None
    assert check_own_input("me", None, []) is None
    assert "not among" in (check_own_input("me", "aa", [DeclaredInput("you", "bb", True)]) or "")
    assert "which sent aa" in (check_own_input("me", "aa", [DeclaredInput("me", "cc", True)]) or "")
    assert "without a reason" in (check_own_input("me", "aa", [DeclaredInput("me", "aa", False)]) or "")
    assert check_own_input("me", "aa", [DeclaredInput("me", "aa", False, "non-finite")]) is None
    assert "sent none" in (check_own_input("me", None, [DeclaredInput("me", "dd", True)]) or "")
