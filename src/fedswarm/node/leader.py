"""Who leads a round, when the next one takes over, and what a member checks in a leader's commit.

Swarm topology has no fixed server. Every member ranks the current members for round ``r`` by
``SHA-256(previous committed model digest || r || name)`` (the digest as its 32 raw bytes, ``r`` as
8 big-endian bytes, the name in UTF-8), smallest first. Every member that committed the same previous
model computes the same order, and no member can choose its rank without choosing the model, which the
round before produced. The first member of the order leads; if it does not deliver, the next one takes
over (see :func:`takeover_rank`), a rotation in the spirit of the elected merge leader of Swarm Learning
(Warnat-Herresthal et al., 2021), here without a blockchain: the order is a pure function of shared state.

A member that contributed an update checks the leader's commit: its update must be declared among the
commit's inputs with the digest it sent (:func:`check_own_input`), otherwise it refuses the aggregate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["DeclaredInput", "check_own_input", "leader_order", "rank_key", "takeover_rank"]


def rank_key(previous_digest: str, rnd: int, name: str) -> bytes:
    """``SHA-256(previous digest bytes || round as u64 big-endian || name)``."""
    return hashlib.sha256(bytes.fromhex(previous_digest) + rnd.to_bytes(8, "big") + name.encode("utf-8")).digest()


def leader_order(previous_digest: str, rnd: int, members: Iterable[str]) -> list[str]:
    """The members in leadership order for round ``rnd`` (ties are impossible: names are unique)."""
    return sorted(set(members), key=lambda name: rank_key(previous_digest, rnd, name))


def takeover_rank(elapsed: float, *, slot: float, unreachable_before: Sequence[bool]) -> int:
    """The rank that should be leading ``elapsed`` seconds into a round.

    Each rank gets a ``slot`` of time (the leader's deadlines plus a grace period); a rank whose
    members ahead of it are all known to be unreachable does not wait for their slots.

    Parameters
    ----------
    elapsed
        Seconds since this member saw the previous round commit.
    slot
        Seconds one leader has to deliver.
    unreachable_before
        For each rank in order, whether this member knows that member to be unreachable.
    """
    by_time = int(elapsed // slot) if slot > 0 else 0
    rank = 0
    while rank < len(unreachable_before) - 1 and unreachable_before[rank]:
        rank += 1
    return max(by_time, rank) if unreachable_before else by_time


@dataclass(frozen=True, slots=True)
class DeclaredInput:
    """One update as a leader declares it in a commit."""

    member: str
    update_digest: str
    accepted: bool
    reason: str = ""


def check_own_input(me: str, sent_digest: str | None, inputs: Sequence[DeclaredInput]) -> str | None:
    """Return why ``me`` must refuse a commit, or ``None`` if its update is correctly declared.

    ``sent_digest`` is the digest of the update ``me`` delivered to this leader for this round (the
    leader acknowledged it), or ``None`` if it delivered none. A delivered update must be declared,
    with the same digest, either accepted or excluded with a reason; an update ``me`` did not send
    must not be declared in its name.
    """
    mine = [i for i in inputs if i.member == me]
    if len(mine) > 1:
        return f"the commit declares {len(mine)} updates from {me}"
    if sent_digest is None:
        if mine and mine[0].update_digest:
            return f"the commit declares an update {mine[0].update_digest[:16]} from {me}, which sent none"
        return None
    if not mine:
        return f"the update {sent_digest[:16]} that {me} delivered is not among the commit's inputs"
    if mine[0].update_digest != sent_digest:
        return f"the commit declares update {mine[0].update_digest[:16]} from {me}, which sent {sent_digest[:16]}"
    if not mine[0].accepted and not mine[0].reason:
        return f"the commit excludes the update of {me} without a reason"
    return None
