"""A coordinator's next message to a member, handed back in the reply to that member's last call.

When a member delivers its update (or evaluation), the next thing the coordinator will tell it is
known: its evaluation assignment, or the round's commit. Instead of a call of its own per member, the
member's delivery call waits for it (within the call's deadline) and the message travels back in the
``Ack``. :class:`Outbox` pairs the two sides: a delivering call :meth:`~Outbox.enter` s before its reply is
put in the mailbox (so the coordinator, which acts only once every reply is in, cannot miss it) and
then :meth:`~Outbox.wait` s; the coordinator :meth:`~Outbox.offer` s each message and sends it as a call
of its own when nobody took it (the member is not waiting, or its call is about to end). Once a commit
has gone out, calls still waiting are released empty: this node has nothing more for them now (in the
swarm topology the next round may be led by another member, whose assignment must not queue behind them).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb

__all__ = ["Outbox", "Ticket"]


@dataclass(eq=False)
class Ticket:
    """One waiting call of ``member``; ``event`` is set once it is done (a message offered, or released)."""

    member: str
    reply: pb.Ack = field(default_factory=pb.Ack)
    done: bool = False
    event: threading.Event = field(default_factory=threading.Event)


class Outbox:
    """Calls of members waiting for the coordinator's next message to them.

    Each waiting call sleeps on its own ticket's event, so handing a message to one call (or a new call
    replacing an old one) wakes that call only, not every call waiting in the outbox.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, Ticket] = {}

    @staticmethod
    def _end(ticket: Ticket) -> None:
        ticket.done = True
        ticket.event.set()

    def enter(self, member: str) -> Ticket:
        """Register a call of ``member`` that will wait (replacing an earlier one, which ends empty)."""
        ticket = Ticket(member)
        with self._lock:
            old = self._waiting.get(member)
            if old is not None:
                self._end(old)
            self._waiting[member] = ticket
        return ticket

    def leave(self, ticket: Ticket) -> None:
        """End ``ticket`` without a message (its call was refused, or returns now)."""
        with self._lock:
            self._end(ticket)
            if self._waiting.get(ticket.member) is ticket:
                del self._waiting[ticket.member]

    def wait(self, ticket: Ticket, *, timeout: float, stop: threading.Event) -> pb.Ack:
        """Wait until a message is offered to ``ticket``, ``timeout`` seconds pass, or ``stop`` is set.

        Returns the reply to send back: with the message if one was offered in time, else empty.
        """
        end = time.monotonic() + timeout
        while not ticket.event.is_set() and not stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                break
            ticket.event.wait(min(left, 0.5))  # wakes at once when offered; ``stop`` is looked at twice a second
        with self._lock:
            if not ticket.done:  # timed out or stopping: from now on the coordinator sends it itself
                self._end(ticket)
                if self._waiting.get(ticket.member) is ticket:
                    del self._waiting[ticket.member]
            return ticket.reply

    def offer(
        self, member: str, *, assign: pb.AssignRequest | None = None, commit: pb.CommitRequest | None = None
    ) -> bool:
        """Hand a message to the waiting call of ``member``; ``False`` if there is none (send it yourself)."""
        with self._lock:
            ticket = self._waiting.pop(member, None)
            if ticket is None or ticket.done:
                return False
            if assign is not None:
                ticket.reply.assign.CopyFrom(assign)
            if commit is not None:
                ticket.reply.commit.CopyFrom(commit)
            self._end(ticket)
            return True

    def tickets(self) -> list[Ticket]:
        """The waiting calls, now."""
        with self._lock:
            return list(self._waiting.values())

    def release(self, tickets: list[Ticket]) -> None:
        """End those of ``tickets`` still waiting, empty (nothing more will come for them from here)."""
        with self._lock:
            for ticket in tickets:
                if not ticket.done:
                    self._end(ticket)
                    if self._waiting.get(ticket.member) is ticket:
                        del self._waiting[ticket.member]

    def release_all(self) -> None:
        """End every waiting call empty (the round ended without a message for them)."""
        with self._lock:
            for ticket in self._waiting.values():
                self._end(ticket)
            self._waiting.clear()
