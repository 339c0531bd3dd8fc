"""SecAgg+ through the node's wire path, in one process: every request and reply crosses as bytes and every
reply is read through the coordinator's registry; a leader's abandoned attempt leaves nothing behind, and
the next attempt gives the simulation's aggregate exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from fedswarm.codec.tensors import digest
from fedswarm.node.exchanges import REPLIES, decode_reply
from fedswarm.rounds.coordinator import Coordinator, RoundGenerator, RoundOutcome
from fedswarm.rounds.messages import Dropout, Exchange
from fedswarm.rounds.privacy.wire import WireMessage
from fedswarm.sim.backends import InProcessBackend
from fedswarm.sim.engine import drive
from fedswarm.sim.world import World, build_world, member_name
from fedswarm.spec.build import build_strategy
from fedswarm.spec.extensions import resolve_collector
from fedswarm.spec.schema import Spec, parse_spec
from fedswarm.transport.envelope import MessageRefused

Deliver = Callable[[Exchange[Any], npt.NDArray[np.float64]], dict[int, Any]]


def _spec(members: int = 4) -> Spec:
    return parse_spec(
        {
            "federation": {"name": "wire", "members": members, "rounds": 2, "seed": 5},
            "data": {"dataset": "breast_cancer"},
            "strategy": {"name": "fedavg", "min_members": 3},
            "evaluation": {"members": "none"},
            "privacy": {"secure_aggregation": "secagg+", "secagg": {"rounding": "deterministic", "clip": 2.0}},
        }
    )


def _coordinator(world: World) -> Coordinator:
    return Coordinator(
        build_strategy(world.spec),
        schema=world.schema,
        population=world.data.members,
        member_name=member_name,
        collector=resolve_collector(world.extensions),
        evaluate_members="none",
    )


def _over_bytes(world: World, seen: list[str]) -> Deliver:
    """Deliver like a node: request bytes to the member's handler, reply bytes through the registry."""

    def deliver(exchange: Exchange[Any], gvec: npt.NDArray[np.float64]) -> dict[int, Any]:
        seen.append(exchange.kind)
        out: dict[int, Any] = {}
        for m, request in exchange.requests.items():
            assert isinstance(request, WireMessage)
            answer = world.runtime.handle(exchange.kind, m, request.to_wire(), gvec)
            if isinstance(answer, Dropout):
                out[m] = answer
            else:
                out[m] = decode_reply(exchange.kind, answer.to_wire(), sender=member_name(m))
        return out

    return deliver


def _run(
    gen: RoundGenerator, deliver: Deliver, gvec: npt.NDArray[np.float64], *, stop_after: int = 0
) -> RoundOutcome | None:
    exchange = next(gen)
    phases = 0
    try:
        while True:
            replies = deliver(exchange, gvec)
            phases += 1
            if stop_after and phases == stop_after:
                gen.close()  # the leader died: its attempt is abandoned
                return None
            exchange = gen.send(replies)
    except StopIteration as stop:
        outcome: RoundOutcome = stop.value
        return outcome


def test_an_abandoned_attempt_then_a_new_one_gives_the_simulations_aggregate() -> None:
    spec = _spec()
    reference = build_world(spec)
    params = reference.task.init_parameters(seed=spec.federation.seed)
    expected = drive(
        _coordinator(reference).run_round(1, params), InProcessBackend(reference.runtime), params.flatten()
    )

    node = build_world(spec)
    seen: list[str] = []
    deliver = _over_bytes(node, seen)
    coordinator = _coordinator(node)
    gvec = params.flatten()
    assert _run(coordinator.run_round(1, params), deliver, gvec, stop_after=2) is None  # keys and shares, then lost
    outcome = _run(coordinator.run_round(1, params), deliver, gvec)
    assert outcome is not None
    first, second = (
        ["secagg.advertise", "secagg.share"],
        ["secagg.advertise", "secagg.share", "secagg.fit", "secagg.unmask"],
    )
    assert seen == [*first, *second]
    assert set(seen) <= set(REPLIES)
    assert outcome.accepted == expected.accepted == [0, 1, 2, 3] and not outcome.dropouts
    assert digest(outcome.parameters) == digest(expected.parameters)


def test_a_member_whose_reply_is_refused_is_recovered_like_a_dropout() -> None:
    spec = _spec(members=5)  # 4 neighbours each, threshold 3: one member may drop
    node = build_world(spec)
    params = node.task.init_parameters(seed=spec.federation.seed)
    honest = _over_bytes(node, [])

    def forging(exchange: Exchange[Any], gvec: npt.NDArray[np.float64]) -> dict[int, Any]:
        if exchange.kind != "secagg.fit":
            return honest(exchange, gvec)
        others = {m: r for m, r in exchange.requests.items() if m != 2}
        replies = honest(Exchange(exchange.kind, exchange.round, others), gvec)
        # member 2's masked input arrives under member 1's name: the coordinator refuses it
        answer = node.runtime.handle(exchange.kind, 2, exchange.requests[2].to_wire(), gvec)
        data = answer.to_wire().replace(b"member-00002", b"member-00001")
        try:
            decode_reply(exchange.kind, data, sender="member-00002")
        except MessageRefused as refusal:  # what the node's mailbox then holds for the member
            replies[2] = Dropout(f"member-00002: secagg.fit reply refused: {refusal}")
        return replies

    outcome = _run(_coordinator(node).run_round(1, params), forging, params.flatten())
    assert outcome is not None and outcome.accepted == [0, 1, 3, 4]
    assert "claims to come from 'member-00001'" in outcome.dropouts[2]
