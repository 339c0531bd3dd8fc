"""A failed call reported after its exchange closed does not become a dropout of the next exchange."""

from __future__ import annotations

import time

from fedswarm.node.mailbox import Mailbox, Slot
from fedswarm.rounds.messages import Dropout


def test_a_late_failure_of_an_earlier_exchange_is_ignored() -> None:
    box = Mailbox(describe=lambda m: f"member-{m}")
    fit, evaluate = Slot(3, 1, "fit"), Slot(3, 1, "evaluate")
    box.open(evaluate, [0, 1])
    box.fail(0, "assignment of the fit exchange failed", slot=fit)
    box.fail(1, "evaluation assignment failed", slot=evaluate)
    box.put(evaluate, 0, "report")
    replies = box.wait(time.monotonic() + 5)
    assert replies[0] == "report"
    assert isinstance(replies[1], Dropout) and replies[1].reason == "evaluation assignment failed"


def test_the_coordinator_is_woken_once_when_the_last_reply_is_in() -> None:
    box = Mailbox(describe=lambda m: f"member-{m}")
    slot = Slot(1, 1, "fit")
    box.open(slot, [0, 1, 2])
    wakeups: list[int] = []
    notify = box._cond.notify_all

    def counted() -> None:
        wakeups.append(1)
        notify()

    box._cond.notify_all = counted  # type: ignore[method-assign]
    box.put(slot, 0, "a")
    box.fail(1, "unreachable", slot=slot)
    assert wakeups == [], "a partial set of replies does not wake the coordinator"
    box.put(slot, 2, "c")
    assert wakeups == [1]
    replies = box.wait(time.monotonic() + 5)
    assert replies[0] == "a" and replies[2] == "c" and isinstance(replies[1], Dropout)
