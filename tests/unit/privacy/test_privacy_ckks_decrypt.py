"""Who a CKKS round asks to decrypt: only contributors that hold the secret context, never a star aggregator
that trains with the public context only. Three node worlds with provisioning-style keys, every request and
reply crossing as wire bytes the way a node's exchange path carries them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("tenseal")

from fedswarm.core.errors import RoundAborted
from fedswarm.node.exchanges import decode_reply
from fedswarm.node.world import NodeWorld, build_node_world
from fedswarm.privacy.he.ckks import CKKSKeyMaterial, CKKSParams, provision_contexts
from fedswarm.rounds.coordinator import Coordinator, RoundOutcome
from fedswarm.rounds.messages import Dropout, Exchange
from fedswarm.rounds.privacy.ckks import KIND_DECRYPT, KIND_FIT, CKKSCollector
from fedswarm.rounds.privacy.messages import CKKSEncrypted
from fedswarm.rounds.privacy.wire import WireMessage
from fedswarm.spec.build import build_strategy
from fedswarm.spec.extensions import resolve_collector
from fedswarm.spec.schema import Spec, parse_spec

SECRET, PUBLIC = provision_contexts(CKKSParams())
MEMBERS = 3


def _name(m: int) -> str:
    return f"member-{m:05d}"


def _spec() -> Spec:
    return parse_spec(
        {
            "federation": {"name": "ckks-decrypt", "members": MEMBERS, "rounds": 1, "seed": 3, "topology": "star"},
            "data": {"dataset": "breast_cancer"},
            "strategy": {"name": "fedavg", "min_members": 2},
            "evaluation": {"members": "none"},
            "baselines": {"local_only": False, "centralized": False},
            "privacy": {"secure_aggregation": "ckks"},
        }
    )


def _worlds(tmp: Path, spec: Spec, *, secrets: tuple[bool, ...]) -> list[NodeWorld]:
    """One node world per member; member ``m`` holds the secret context iff ``secrets[m]``."""
    out = []
    for m, holds in enumerate(secrets):
        keys = CKKSKeyMaterial(public=PUBLIC, secret=SECRET if holds else None)
        state = tmp / _name(m)
        state.mkdir()
        out.append(build_node_world(spec, member=m, name=_name(m), data_path=None, state_dir=state, ckks_keys=keys))
    return out


def _coordinator(worlds: list[NodeWorld], spec: Spec) -> tuple[Coordinator, CKKSCollector]:
    """Member 0's (the star aggregator's) coordinator and its CKKS collector."""
    collector = resolve_collector(worlds[0].extensions)
    assert isinstance(collector, CKKSCollector)
    coordinator = Coordinator(
        build_strategy(spec),
        schema=worlds[0].schema,
        population=MEMBERS,
        member_name=_name,
        collector=collector,
        evaluate_members="none",
    )
    return coordinator, collector


def _run(worlds: list[NodeWorld], spec: Spec, asked: list[tuple[str, int]]) -> tuple[RoundOutcome, dict[str, Any]]:
    """Round 1 coordinated by member 0, each member served by its own world; the outcome and the collector's
    transport annotation."""
    coordinator, collector = _coordinator(worlds, spec)
    params = worlds[0].initial
    gvec = params.flatten()
    deliver = _over_bytes(worlds, asked)
    gen = coordinator.run_round(1, params, evaluate=False)
    exchange = next(gen)
    try:
        while True:
            exchange = gen.send(deliver(exchange, gvec))
    except StopIteration as stop:
        outcome: RoundOutcome = stop.value
        return outcome, collector.last_round


def _over_bytes(
    worlds: list[NodeWorld], asked: list[tuple[str, int]]
) -> Callable[[Exchange[Any], npt.NDArray[np.float64]], dict[int, Any]]:
    def deliver(exchange: Exchange[Any], gvec: npt.NDArray[np.float64]) -> dict[int, Any]:
        out: dict[int, Any] = {}
        for m, request in exchange.requests.items():
            asked.append((exchange.kind, m))
            assert isinstance(request, WireMessage)
            answer = worlds[m].runtime.handle(exchange.kind, m, request.to_wire(), gvec)
            out[m] = (
                answer
                if isinstance(answer, Dropout)
                else decode_reply(exchange.kind, answer.to_wire(), sender=_name(m))
            )
        return out

    return deliver


def test_the_aggregator_without_the_secret_is_never_asked_to_decrypt(tmp_path: Path) -> None:
    spec = _spec()
    worlds = _worlds(tmp_path, spec, secrets=(False, True, True))
    asked: list[tuple[str, int]] = []
    outcome, transport = _run(worlds, spec, asked)

    assert [m for kind, m in asked if kind == KIND_FIT] == [0, 1, 2]
    # before: member 0 came first among the contributors, declined, and cost one decrypt exchange
    assert [m for kind, m in asked if kind == KIND_DECRYPT] == [1]
    assert outcome.accepted == [0, 1, 2], "the aggregator's own encrypted update still counts"
    assert transport["decrypt_requests"] == 1 and transport["contributors"] == 3


def test_reply_declares_who_can_decrypt(tmp_path: Path) -> None:
    spec = _spec()
    worlds = _worlds(tmp_path, spec, secrets=(False, True, True))
    params = worlds[0].initial
    exchange = next(_coordinator(worlds, spec)[0].run_round(1, params, evaluate=False))
    assert exchange.kind == KIND_FIT
    declared = []
    for m, world in enumerate(worlds):
        answer = world.runtime.handle(KIND_FIT, m, exchange.requests[m].to_wire(), params.flatten())
        reply = decode_reply(KIND_FIT, answer.to_wire(), sender=_name(m))
        assert isinstance(reply, CKKSEncrypted)
        declared.append(reply.decrypts)
    assert declared == [False, True, True]


def test_a_round_where_nobody_holds_the_secret_aborts_without_asking(tmp_path: Path) -> None:
    spec = _spec()
    worlds = _worlds(tmp_path, spec, secrets=(False, False, False))
    asked: list[tuple[str, int]] = []
    with pytest.raises(RoundAborted, match="none of the 3 contributor\\(s\\) holds the secret context"):
        _run(worlds, spec, asked)
    assert all(kind == KIND_FIT for kind, _ in asked)
