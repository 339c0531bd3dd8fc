"""Invariants of the privacy round pieces: wire round trips, clipping bounds, uniform releases."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedswarm.rounds.privacy.member import MemberProtection
from fedswarm.rounds.privacy.messages import MemberPrivacy, PrivateFitReply, SecAggRevealed
from fedswarm.rounds.privacy.release import SumRelease

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=64)
names = st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=12)
field = st.integers(min_value=0, max_value=2**127 - 2)


@settings(max_examples=40)
@given(hnp.arrays(np.float64, st.integers(0, 40), elements=finite), st.integers(0, 10**9), names)
def test_update_replies_round_trip(vector: np.ndarray, examples: int, member: str) -> None:
    reply = PrivateFitReply(member, vector, examples, ("train_loss",), (0.5,))
    back = PrivateFitReply.from_wire(reply.to_wire())
    assert back.member == member and back.num_examples == examples
    assert back.vector.dtype == np.float64 and np.array_equal(back.vector, vector)


@settings(max_examples=40)
@given(st.lists(st.tuples(names, st.tuples(field, field, field)), max_size=6, unique_by=lambda x: x[0]))
def test_revealed_shares_round_trip(shares: list[tuple[str, tuple[int, int, int]]]) -> None:
    message = SecAggRevealed("m", tuple(n for n, _ in shares), tuple(s for _, s in shares), (), ())
    assert SecAggRevealed.from_wire(message.to_wire()) == message


@settings(max_examples=60)
@given(hnp.arrays(np.float64, st.integers(1, 30), elements=finite), st.floats(1e-3, 1e3))
def test_protected_updates_never_exceed_the_clip(update: np.ndarray, clip: float) -> None:
    out = MemberProtection.protect(update, MemberPrivacy(clip, 0.0, 0.0, True))
    assert float(np.linalg.norm(out[:-1])) <= clip
    assert out[-1] == (1.0 if float(np.linalg.norm(update)) <= clip else 0.0)


@settings(max_examples=40)
@given(hnp.arrays(np.float64, st.integers(1, 20), elements=finite), st.integers(1, 50), st.integers(0, 50))
def test_without_dp_the_release_is_the_sum_over_contributors(summed: np.ndarray, k: int, extra: int) -> None:
    total, count = SumRelease(mode="none").release(
        summed, dimension=len(summed), contributors=k, cohort=k + extra, noise_added=False
    )
    assert count == k and np.array_equal(total, summed)
