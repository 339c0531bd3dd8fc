"""Where a coordinator collects the replies of one exchange, until all arrived or the deadline passed.

Replies arrive on gRPC server threads; the coordinator's thread waits on a condition variable (no
polling of the replies themselves), and is woken once, when the last expected reply is in (not by each). Only replies to the exchange that is open, from members it was
sent to, once each, are accepted; anything else is refused with the reason. While waiting, the
coordinator can probe the members it is still waiting for, so a member that died is reported as a
dropout at the next probe rather than at the deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fedswarm.rounds.messages import Dropout
from fedswarm.transport.envelope import MessageRefused

__all__ = ["Mailbox", "Slot"]

Probe = Callable[[set[int]], dict[int, str]]


@dataclass(frozen=True, slots=True)
class Slot:
    """Identifies an exchange: the round, the coordinator's attempt at it, and the kind of work."""

    round: int
    attempt: int
    kind: str


class Mailbox:
    """Collects one reply per expected member for the open :class:`Slot`."""

    def __init__(self, *, describe: Callable[[int], str]) -> None:
        self._describe = describe
        self._cond = threading.Condition()
        self._slot: Slot | None = None
        self._expected: set[int] = set()
        self._replies: dict[int, Any] = {}

    @property
    def slot(self) -> Slot | None:
        with self._cond:
            return self._slot

    def open(self, slot: Slot, members: Iterable[int]) -> None:
        """Start collecting replies for ``slot`` from ``members`` (replaces any open exchange)."""
        with self._cond:
            self._slot = slot
            self._expected = set(members)
            self._replies = {}

    def close(self) -> None:
        with self._cond:
            self._slot = None
            self._expected = set()
            self._replies = {}
            self._cond.notify_all()

    def check(self, slot: Slot, member: int) -> None:
        """Raise :class:`MessageRefused` unless a reply of ``member`` for ``slot`` would be accepted now."""
        with self._cond:
            self._check(slot, member)

    def put(self, slot: Slot, member: int, reply: Any) -> None:
        """Deliver a reply.

        Raises
        ------
        MessageRefused
            ``unexpected``: no such exchange is open, the member was not asked, or it already replied.
        """
        with self._cond:
            self._check(slot, member)
            self._replies[member] = reply
            self._wake_if_complete()

    def _wake_if_complete(self) -> None:
        if len(self._replies) >= len(self._expected) and self._expected.issubset(self._replies):
            self._cond.notify_all()

    def _check(self, slot: Slot, member: int) -> None:
        who = self._describe(member)
        if self._slot != slot:
            open_ = self._slot
            now = f"round {open_.round} attempt {open_.attempt} ({open_.kind})" if open_ else "no open exchange"
            raise MessageRefused(
                "unexpected",
                f"{slot.kind} from {who} for round {slot.round} attempt {slot.attempt}, but this node has {now}",
            )
        if member not in self._expected:
            raise MessageRefused("unexpected", f"{who} was not asked for a {slot.kind} in round {slot.round}")
        if member in self._replies:
            raise MessageRefused("unexpected", f"{who} already delivered its {slot.kind} for round {slot.round}")

    def fail(self, member: int, reason: str, *, slot: Slot | None = None) -> None:
        """Record a dropout for an expected member that has not replied (e.g. the assignment failed).

        With ``slot``, only while that exchange is the open one (a late failure of an earlier call is ignored).
        """
        with self._cond:
            if slot is not None and slot != self._slot:
                return
            if member in self._expected and member not in self._replies:
                self._replies[member] = Dropout(reason)
                self._wake_if_complete()

    def wait(
        self,
        deadline: float,
        *,
        probe: Probe | None = None,
        probe_interval: float = 2.0,
        stop: threading.Event | None = None,
    ) -> dict[int, Any]:
        """Wait until every expected member replied or ``deadline`` (``time.monotonic()``) passed.

        Members that did not reply become :class:`Dropout` s. ``probe(pending)`` returns the pending members
        found unreachable, with a reason; they become dropouts at once.
        """
        next_probe = time.monotonic() + probe_interval
        with self._cond:
            while True:
                pending = self._expected - set(self._replies)
                now = time.monotonic()
                if not pending or now >= deadline or (stop is not None and stop.is_set()):
                    break
                if probe is not None and now >= next_probe:
                    self._cond.release()
                    try:
                        lost = probe(set(pending))
                    finally:
                        self._cond.acquire()
                    for m, reason in lost.items():
                        if m in self._expected and m not in self._replies:
                            self._replies[m] = Dropout(reason)
                    next_probe = time.monotonic() + probe_interval
                    continue
                until = min(deadline, next_probe) if probe is not None else deadline
                self._cond.wait(timeout=max(0.0, min(until - now, 0.5 if stop is not None else until - now)))
            replies = dict(self._replies)
            for m in self._expected - set(replies):
                replies[m] = Dropout(f"{self._describe(m)}: no reply before the round deadline")
            self._slot = None
            self._expected = set()
            self._replies = {}
        return replies
