"""The coordinator side of a round on a real node: deliver the round engine's exchanges over the network.

:class:`ExchangeDriver` runs a :meth:`~fedswarm.rounds.coordinator.Coordinator.run_round` generator the
way the simulation engine's ``drive`` does, but each exchange becomes signed ``Assign`` calls to the
members (all at once, as futures), and the replies are collected in a :class:`~fedswarm.node.mailbox.Mailbox`
as members send them back, until every member replied or the exchange's deadline passed. Members that
cannot be reached, or that stop answering health checks while the coordinator waits, become dropouts
with the reason; the round engine then completes the round with the survivors or aborts it below
``min_members``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from fedswarm.core.errors import ConfigurationError
from fedswarm.node.mailbox import Mailbox, Slot
from fedswarm.node.network import Network
from fedswarm.node.persist import NodeStore
from fedswarm.rounds.coordinator import RoundGenerator, RoundOutcome
from fedswarm.rounds.messages import (
    Dropout,
    EvaluateReply,
    EvaluateRequest,
    Exchange,
    FitReply,
    FitRequest,
)
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.client import PeerError
from fedswarm.transport.envelope import MessageRefused
from fedswarm.transport.wire import config_to_wire, decode_update

__all__ = ["ExchangeDriver"]

log = logging.getLogger("fedswarm.node")


class ExchangeDriver:
    """Delivers exchanges of the rounds this node coordinates, and receives the members' replies."""

    def __init__(
        self,
        *,
        network: Network,
        store: NodeStore,
        names: Callable[[int], str],
        ids: Callable[[str], int],
        job: str,
        stop: threading.Event,
    ) -> None:
        self.network = network
        self.store = store
        self.names = names
        self.ids = ids
        self.job = job
        self.stop = stop
        self.mailbox = Mailbox(describe=names)
        self._lock = threading.Lock()
        self._model_digest = ""
        self._update_digests: dict[int, str] = {}
        self.attempt = 0

    # running a round ------------------------------------------------------------------------------
    def drive(self, gen: RoundGenerator, *, attempt: int) -> tuple[RoundOutcome, dict[int, str]]:
        """Run ``gen`` to completion; returns the outcome and the digests of the updates received."""
        self.attempt = attempt
        with self._lock:
            self._update_digests = {}
        try:
            exchange = next(gen)
            while True:
                replies = self._deliver(exchange, attempt)
                exchange = gen.send(replies)
        except StopIteration as stop:
            outcome: RoundOutcome = stop.value
        finally:
            self.mailbox.close()
        with self._lock:
            return outcome, dict(self._update_digests)

    def _deliver(self, exchange: Exchange[Any], attempt: int) -> dict[int, Any]:
        s = self.network.settings
        if exchange.kind == "fit":
            work, timeout = pb.WORK_FIT, s.round_timeout
        elif exchange.kind == "evaluate":
            work, timeout = pb.WORK_EVALUATE, s.evaluate_timeout
        else:
            raise ConfigurationError(
                f"round {exchange.round}: exchanges of kind {exchange.kind!r} cannot run over the network yet"
            )
        if not exchange.requests:
            return {}
        first = next(iter(exchange.requests.values()))
        model = first.parameters
        digest, size = self.store.put_parameters(model)
        with self._lock:
            self._model_digest = digest
        slot = Slot(exchange.round, attempt, exchange.kind)
        self.mailbox.open(slot, exchange.requests.keys())
        deadline = time.monotonic() + timeout
        deadline_ms = int((time.time() + timeout) * 1000)
        calls: dict[int, grpc.Future[pb.Ack]] = {}
        for m, request in exchange.requests.items():
            body = pb.Assign(
                work=work,
                attempt=attempt,
                model_digest=digest,
                model_size=size,
                spec_digest=self.job,
                deadline_ms=deadline_ms,
            )
            if isinstance(request, FitRequest):
                body.config.CopyFrom(config_to_wire(request.config))
            elif not isinstance(request, EvaluateRequest):  # pragma: no cover - the engine sends only these
                raise ConfigurationError(f"unexpected request type {type(request).__name__}")
            name = self.names(m)
            try:
                calls[m] = self.network.client(name).assign_async(
                    self.network.seal(body, round=exchange.round), timeout=s.rpc_timeout
                )
            except KeyError as exc:
                self.mailbox.fail(m, f"{name}: {exc}")
        for m, call in calls.items():
            name = self.names(m)
            try:
                call.result()
                self.network.mark(name, ok=True)
            except grpc.RpcError as exc:
                error = PeerError.from_rpc(name, "Assign", exc)
                if error.unreachable:
                    self.network.mark(name, ok=False, error=error.detail)
                log.warning("round %d: %s not assigned: %s", exchange.round, name, error)
                self.mailbox.fail(m, f"{name}: unreachable ({error.code}: {error.detail})")
        return self.mailbox.wait(deadline, probe=self._probe, probe_interval=s.probe_interval, stop=self.stop)

    def _probe(self, pending: set[int]) -> dict[int, str]:
        names = {self.names(m): m for m in pending}
        health = self.network.probe(names)
        return {
            m: f"{n}: unreachable while the coordinator waited (health check failed)"
            for n, m in names.items()
            if not health.get(n, False)
        }

    # replies ---------------------------------------------------------------------------------------
    def update_slot(self, sender: str, rnd: int, header: pb.UpdateHeader) -> Slot:
        """Check that an update header answers the open fit exchange; returns its slot."""
        slot = Slot(rnd, int(header.attempt), "fit")
        member = self._member(sender)
        self.mailbox.check(slot, member)
        with self._lock:
            digest = self._model_digest
        if header.base_digest != digest:
            raise MessageRefused(
                "unexpected",
                f"update from {sender} for round {rnd} was trained from model {header.base_digest[:16]}, "
                f"not the round's {digest[:16]}",
            )
        return slot

    def accept_update(self, sender: str, rnd: int, header: pb.UpdateHeader, data: bytearray | None) -> str:
        """Deliver an update (or a dropout report) into the mailbox."""
        slot = self.update_slot(sender, rnd, header)
        member = self._member(sender)
        reply: FitReply | Dropout
        if data is None:
            reply = Dropout(header.dropout or f"{sender}: no update")
        else:
            update = decode_update(data, source=f"update from {sender} for round {rnd}")
            reply = FitReply(
                update=update,
                num_examples=int(header.num_examples),
                payload_bytes=int(header.payload_bytes),
                seconds=float(header.seconds),
                metrics=dict(header.metrics),
            )
            with self._lock:
                self._update_digests[member] = header.update_digest
        self.mailbox.put(slot, member, reply)
        return f"update for round {rnd} received"

    def accept_evaluation(self, sender: str, rnd: int, report: pb.EvaluationReport) -> str:
        slot = Slot(rnd, int(report.attempt), "evaluate")
        member = self._member(sender)
        with self._lock:
            digest = self._model_digest
        if report.model_digest != digest:
            raise MessageRefused(
                "unexpected", f"evaluation from {sender} is of model {report.model_digest[:16]}, not {digest[:16]}"
            )
        reply: EvaluateReply | Dropout
        if report.dropout:
            reply = Dropout(report.dropout)
        else:
            reply = EvaluateReply(num_examples=int(report.num_examples), loss=report.loss, metrics=dict(report.metrics))
        self.mailbox.put(slot, member, reply)
        return f"evaluation for round {rnd} received"

    def _member(self, sender: str) -> int:
        try:
            return self.ids(sender)
        except (KeyError, ValueError):
            raise MessageRefused("unexpected", f"{sender} has no member id in this federation") from None


def summarize_inputs(outcome: RoundOutcome, digests: Mapping[int, str], names: Callable[[int], str]) -> list[pb.Input]:
    """The commit's declaration of every update received: accepted, or excluded with the reason."""
    inputs = []
    for m in sorted(digests):
        reason = outcome.rejected.get(m, "")
        inputs.append(
            pb.Input(member=names(m), update_digest=digests[m], accepted=m in outcome.accepted, reason=reason)
        )
    return inputs
