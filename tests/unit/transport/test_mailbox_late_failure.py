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
