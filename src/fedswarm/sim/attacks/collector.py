"""Where simulated attackers act: a collector wrapper inside the simulation's coordinator.

:class:`AttackCollector` wraps the round's collector (plain, group-wise, FLTrust's ...). When it sees the
first ``fit`` exchange of a round in which attackers are selected, it

1. sends one ``fit`` exchange to the *honest* selected members (they train as always, on their workers,
   with their client stages);
2. answers the attackers' requests itself, in the coordinator process, with :class:`AttackerRuntime`:
   local training on the (possibly poisoned) data with the task, then the attack's ``transform``; an
   omniscient attack (ALIE, IPM) then replaces those updates with ``craft(honest updates of the round)``,
   so it sees exactly what the honest members sent this round;
3. serves every ``fit`` exchange of the inner collector from these replies (other exchange kinds pass
   through), so the inner collector screens and aggregates attackers like anyone else.

Nothing of this reaches a member: the attackers' replies never leave the coordinator process, and real
nodes never load :mod:`fedswarm.sim.attacks`. Attackers train with a fresh member state each round and
skip the members' client stages (a compromised member runs its own code).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.codec.tensors import encoded_size
from fedswarm.core.data import Arrays
from fedswarm.core.errors import TaskError
from fedswarm.core.task import FitResult, MemberState, Task
from fedswarm.data.federated import FederatedData
from fedswarm.rounds.collect import Collector, CollectorGenerator
from fedswarm.rounds.messages import Dropout, Exchange, FitReply, FitRequest
from fedswarm.rounds.stages import ServerContext
from fedswarm.sim.attacks.base import Attack, Vector

__all__ = ["AttackCollector", "AttackerRuntime"]


class AttackerRuntime:
    """The attackers' side of the simulation: the task and the federation's data, built on first use."""

    def __init__(self, task: Callable[[], Task], data: Callable[[], FederatedData]) -> None:
        self._make_task = task
        self._make_data = data
        self._task: Task | None = None
        self._data: FederatedData | None = None

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = self._make_task()
        return self._task

    @property
    def data(self) -> FederatedData:
        if self._data is None:
            self._data = self._make_data()
        return self._data

    def train_split(self, member: int) -> Arrays:
        return self.data.local(member).train

    def train(self, request: FitRequest, data: Arrays) -> tuple[Vector, dict[str, float]]:
        """Local training from the request's global parameters on ``data``: the update and the metrics."""
        result = self.task.fit(request.parameters, data, config=request.config, state=MemberState())
        if not isinstance(result, FitResult):
            raise TaskError(f"task.fit must return FitResult, got {type(result).__name__}")
        if result.update is not None:
            return result.update.flatten(), dict(result.metrics)
        assert result.parameters is not None
        return result.parameters.flatten() - request.parameters.flatten(), dict(result.metrics)


class AttackCollector:
    """Answers the attackers' fit requests with the attack's updates; everything else goes to ``inner``."""

    def __init__(
        self,
        inner: Collector,
        *,
        attack: Attack,
        attackers: frozenset[int],
        from_round: int,
        runtime: AttackerRuntime,
    ) -> None:
        self.inner = inner
        self.attack = attack
        self.attackers = attackers
        self.from_round = from_round
        self.runtime = runtime
        self._payload: int | None = None

    @property
    def reveals_individual_updates(self) -> bool:
        return self.inner.reveals_individual_updates

    def active(self, rnd: int, members: Mapping[int, Any]) -> list[int]:
        """The attackers among ``members`` that attack in round ``rnd``, sorted."""
        if rnd < self.from_round:
            return []
        return sorted(m for m in members if m in self.attackers)

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
        inner = self.inner.collect(rnd, requests, dimension=dimension, ctx=ctx, screen=screen, member_name=member_name)
        active = self.active(rnd, requests)
        if not active:
            return (yield from inner)
        cache: dict[int, Any] | None = None
        try:
            exchange = next(inner)
            while True:
                if exchange.kind == "fit":
                    if cache is None:
                        cache = yield from self._round_replies(rnd, requests, active, member_name)
                    replies = {m: cache[m] for m in exchange.requests if m in cache}
                    missing = {m: r for m, r in exchange.requests.items() if m not in cache}
                    if missing:  # requests the round did not start with: let the members answer
                        replies.update((yield Exchange("fit", rnd, missing)))
                else:
                    replies = dict((yield exchange))
                exchange = inner.send(replies)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _round_replies(
        self, rnd: int, requests: Mapping[int, FitRequest], active: list[int], member_name: Callable[[int], str]
    ) -> Generator[Exchange[Any], Mapping[int, Any], dict[int, Any]]:
        attacking = set(active)
        honest = {m: r for m, r in requests.items() if m not in attacking}
        replies: dict[int, Any] = dict((yield Exchange("fit", rnd, honest))) if honest else {}
        honest_rows = [replies[m].update for m in sorted(honest) if isinstance(replies.get(m), FitReply)]
        for m in active:
            replies[m] = self._attacker_reply(m, requests[m], rnd, member_name, n=len(requests), f=len(active))
        if self.attack.omniscient:
            d = requests[active[0]].parameters.schema.size
            matrix = np.stack(honest_rows) if honest_rows else np.zeros((1, d))
            crafted = self.attack.craft(matrix, n=len(requests), f=len(active))
            for m in active:
                reply = replies[m]
                if isinstance(reply, FitReply):
                    replies[m] = FitReply(
                        update=crafted.copy(),
                        num_examples=reply.num_examples,
                        payload_bytes=reply.payload_bytes,
                        seconds=reply.seconds,
                        metrics=reply.metrics,
                    )
        return replies

    def _attacker_reply(
        self, member: int, request: FitRequest, rnd: int, member_name: Callable[[int], str], *, n: int, f: int
    ) -> FitReply | Dropout:
        start = time.perf_counter()
        attack = self.attack
        if attack.absent:
            return Dropout(f"{member_name(member)}: absent (simulated attack 'absent')")
        if self._payload is None:
            self._payload = encoded_size(request.parameters.schema)
        train = self.runtime.train_split(member)
        metrics: dict[str, float] = {}
        if attack.trains:
            update, metrics = self.runtime.train(request, attack.poison(member, train))
        else:
            update = np.zeros(request.parameters.schema.size)
        update = np.asarray(attack.transform(update, member=member, rnd=rnd, n=n, f=f), dtype=np.float64)
        return FitReply(
            update=update,
            num_examples=len(train),
            payload_bytes=self._payload,
            seconds=time.perf_counter() - start,
            metrics=metrics,
        )
