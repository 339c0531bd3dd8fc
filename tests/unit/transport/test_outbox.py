"""The outbox pairs a member's waiting delivery call with the coordinator's next message to it."""

from __future__ import annotations

import threading
import time

from fedswarm.node.outbox import Outbox
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb

STOP = threading.Event()
ASSIGN = pb.AssignRequest(model=b"m")


def test_a_message_offered_to_a_waiting_call_comes_back_in_its_reply() -> None:
    box = Outbox()
    ticket = box.enter("a")
    replies: list[pb.Ack] = []
    waiter = threading.Thread(target=lambda: replies.append(box.wait(ticket, timeout=5, stop=STOP)))
    waiter.start()
    assert box.offer("a", assign=ASSIGN)
    waiter.join(2)
    assert replies and replies[0].assign.model == b"m" and not replies[0].HasField("commit")
    assert not box.offer("a", assign=ASSIGN), "a call takes one message; the next one needs a call"


def test_offered_before_the_call_waits_is_kept_for_it() -> None:
    box = Outbox()
    ticket = box.enter("a")
    assert box.offer("a", commit=pb.CommitRequest(model=b"c"))
    assert box.wait(ticket, timeout=0.01, stop=STOP).commit.model == b"c"


def test_nobody_waiting_or_timed_out_means_the_coordinator_sends_it_itself() -> None:
    box = Outbox()
    assert not box.offer("a", assign=ASSIGN)
    ticket = box.enter("a")
    start = time.monotonic()
    reply = box.wait(ticket, timeout=0.05, stop=STOP)
    assert time.monotonic() - start < 1.0
    assert not reply.HasField("assign") and not reply.HasField("commit")
    assert not box.offer("a", assign=ASSIGN)
    assert box.tickets() == []


def test_release_ends_only_the_given_calls_and_a_new_call_replaces_an_old_one() -> None:
    box = Outbox()
    first = box.enter("a")
    second = box.enter("a")  # the earlier call of "a" ends empty
    assert first.done and not second.done
    other = box.enter("b")
    box.release([other])
    assert not box.wait(other, timeout=0.01, stop=STOP).HasField("assign")
    assert box.offer("a", assign=ASSIGN) and not box.offer("b", assign=ASSIGN)


def test_stop_ends_a_waiting_call() -> None:
    box = Outbox()
    stop = threading.Event()
    stop.set()
    ticket = box.enter("a")
    assert not box.wait(ticket, timeout=30, stop=stop).HasField("assign")


def test_a_message_wakes_only_the_call_it_is_for() -> None:
    box = Outbox()
    a, b, c = box.enter("a"), box.enter("b"), box.enter("c")
    assert box.offer("b", assign=ASSIGN)
    assert b.event.is_set() and not a.event.is_set() and not c.event.is_set()
    replaced = box.enter("a")  # a new call of "a" ends the old one, and only that one
    assert a.event.is_set() and not replaced.event.is_set() and not c.event.is_set()
    box.release_all()
    assert replaced.event.is_set() and c.event.is_set()
