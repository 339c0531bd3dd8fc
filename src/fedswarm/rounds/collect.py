"""How a round gathers members' updates: in the clear, or only as a sum.

A :class:`Collector` runs the exchanges that turn the selected members into a :class:`Collection`. The
plain collector sends one ``fit`` exchange and sees every update, so robust rules and per-update checks
can run. A secure-aggregation collector runs several exchanges (key advertisement, share routing,
masked input, unmasking) and hands the coordinator only the sum and the number of contributors; rules
that need individual updates cannot run on it, which the spec builder refuses up front.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fedswarm.rounds.messages import Dropout, Exchange, FitReply, FitRequest
from fedswarm.rounds.stages import ServerContext, ServerStage

__all__ = ["Collection", "Collector", "CollectorGenerator", "PlainCollector"]


@dataclass(slots=True)
class Collection:
    """What a round learned from its members.

    Exactly one of ``updates`` (n × d, row i from ``members[i]``) and ``total`` (the sum of the
    contributors' updates) is set. ``weights`` are the examples behind each row (plain collection) or
    empty (sum only: every contributor counts once).
    """

    members: list[int]
    updates: npt.NDArray[np.float64] | None
    weights: npt.NDArray[np.float64]
    total: npt.NDArray[np.float64] | None
    count: int
    dropouts: dict[int, str] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    bytes_up: int = 0
    train_metrics: dict[str, float] = field(default_factory=dict)
    extra_bytes_down: int = 0


CollectorGenerator = Generator[Exchange[Any], Mapping[int, Any], Collection]


class Collector(Protocol):
    """Runs the exchanges of one round that produce the members' updates (or only their sum)."""

    @property
    def reveals_individual_updates(self) -> bool: ...

    def collect(
        self,
        rnd: int,
        requests: Mapping[int, FitRequest],
        *,
        dimension: int,
        ctx: ServerContext,
        screen: Callable[[int, npt.NDArray[np.float64]], str | None],
        member_name: Callable[[int], str],
    ) -> CollectorGenerator: ...


class PlainCollector:
    """One ``fit`` exchange; every update is seen, screened and kept."""

    reveals_individual_updates = True

    def __init__(self, server_stages: tuple[ServerStage, ...] = ()) -> None:
        self.server_stages = server_stages

    def collect(
        self,
        rnd: int,
        requests: Mapping[int, FitRequest],
        *,
        dimension: int,
        ctx: ServerContext,
        screen: Callable[[int, npt.NDArray[np.float64]], str | None],
        member_name: Callable[[int], str],
    ) -> CollectorGenerator:
        replies = yield Exchange("fit", rnd, requests)
        accepted: list[int] = []
        rows: list[npt.NDArray[np.float64]] = []
        weights: list[float] = []
        dropouts: dict[int, str] = {}
        rejected: dict[int, str] = {}
        bytes_up = 0
        train_loss = 0.0
        train_n = 0
        for m in requests:
            reply = replies.get(m)
            if reply is None:
                dropouts[m] = f"{member_name(m)}: no reply"
                continue
            if isinstance(reply, Dropout):
                dropouts[m] = reply.reason
                continue
            if not isinstance(reply, FitReply):
                rejected[m] = f"unexpected reply type {type(reply).__name__}"
                continue
            bytes_up += reply.payload_bytes
            u = reply.update
            reason = screen(m, u)
            if reason is not None:
                rejected[m] = reason
                continue
            accepted.append(m)
            rows.append(u)
            weights.append(float(reply.num_examples))
            tl = reply.metrics.get("train_loss")
            if tl is not None and np.isfinite(tl):
                train_loss += tl * reply.num_examples
                train_n += reply.num_examples
        return Collection(
            members=accepted,
            updates=np.stack(rows) if rows else np.zeros((0, dimension)),
            weights=np.asarray(weights, dtype=np.float64),
            total=None,
            count=len(accepted),
            dropouts=dropouts,
            rejected=rejected,
            bytes_up=bytes_up,
            train_metrics={"train_loss": train_loss / train_n} if train_n else {},
        )
