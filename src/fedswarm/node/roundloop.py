"""The coordinator side of a round on a real node: deliver the round engine's exchanges over the network.

:class:`ExchangeDriver` runs a :meth:`~fedswarm.rounds.coordinator.Coordinator.run_round` generator the
way the simulation engine's ``drive`` does, but each exchange becomes signed ``Assign`` calls to the
members (all at once, on the node's call pool), and the replies are collected in a
:class:`~fedswarm.node.mailbox.Mailbox` as members send them back, until every member replied or the
exchange's deadline passed. An evaluation assignment carries a small model inline (members already hold
the model they train from: the previous round's commit). A commit the node holds back
(:meth:`ExchangeDriver.hold`, star topology) goes out with the next round's fit assignments, one call per
member instead of two; :meth:`ExchangeDriver.flush` sends it alone when there are none. A message for a
member whose delivery call is waiting for it (:class:`~fedswarm.node.outbox.Outbox`) goes back in that
call's reply instead of as a call of its own. Members that
cannot be reached, or that stop answering health checks while the coordinator waits, become dropouts
with the reason; the round engine then completes the round with the survivors or aborts it below
``min_members``.

Run extensions' exchanges (SecAgg+ phases, a private fit, CKKS; :mod:`fedswarm.node.exchanges`) travel
the same way: each member's request is a ``WORK_EXCHANGE`` assignment naming the kind and the round's
global model, with the request's wire bytes inline when small (else stored here and fetched by digest),
and the reply comes back as an update whose header names the kind; it is decoded through a strict
registry of reply classes before it reaches the mailbox slot of that exchange. The held commit goes out
with the first exchange of the next round, whatever its kind.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedswarm.codec import tensors
from fedswarm.core.errors import ConfigurationError
from fedswarm.core.parameters import Parameters
from fedswarm.node.exchanges import decode_reply, exchange_timeout
from fedswarm.node.mailbox import Mailbox, Slot
from fedswarm.node.network import Network
from fedswarm.node.outbox import Outbox
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
from fedswarm.rounds.privacy.wire import WireMessage
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.blobs import inline_limit
from fedswarm.transport.client import PeerClient, PeerError
from fedswarm.transport.envelope import MessageRefused
from fedswarm.transport.wire import config_to_wire, decode_update, sha256_hex

__all__ = ["ExchangeDriver", "PendingCommit", "commit_recipients", "summarize_inputs"]

log = logging.getLogger("fedswarm.node")

_STOPPING_TIMEOUT = 2.0  # deadline of the last commit's calls while this node stops


@dataclass(frozen=True)
class PendingCommit:
    """A signed commit this node made, with the blobs that go inline, and who is to receive it."""

    round: int
    envelope: pb.Envelope
    model: bytes
    state: bytes
    timeout: float
    recipients: tuple[str, ...]
    written: cf.Future[None] | None = None  # this node's own writes of the commit, done before it is sent

    def wait_written(self) -> None:
        """Block until this node has the commit on disk: it leaves the node only then."""
        if self.written is not None:
            self.written.result()


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
        self.outbox = Outbox()
        self._lock = threading.Lock()
        self._model_digest = ""
        self._update_digests: dict[int, str] = {}
        self._pending: PendingCommit | None = None
        self._base: tuple[str, int] = ("", 0)
        self._base_params: Parameters | None = None
        self._first = False
        self.attempt = 0

    # commits --------------------------------------------------------------------------------------
    def hold(self, commit: PendingCommit) -> None:
        """Send ``commit`` with the next fit exchange (or at :meth:`flush`)."""
        self.flush()
        self._pending = commit

    def flush(self) -> None:
        """Send a held commit now, alone."""
        commit, self._pending = self._pending, None
        if commit is not None:
            self.send_commit(commit)

    def send_commit(self, commit: PendingCommit) -> None:
        """Send ``commit`` to its recipients; those that do not take it catch up later.

        While this node stops, the calls go out with a short deadline and are not waited for: peers that
        stop too must not hold up its exit (calls still running when it closes its channels are cancelled).
        """
        commit.wait_written()
        request = _commit_request(commit)
        waiting = self.outbox.tickets()
        pushed = [n for n in commit.recipients if not self.outbox.offer(n, commit=request)]
        self.outbox.release(waiting)  # nothing more for them from here

        def done(name: str, result: pb.Ack | PeerError) -> None:
            if isinstance(result, PeerError) and result.code not in ("NOT_FOUND", "CANCELLED"):
                log.warning("round %d: commit not taken by %s: %s", commit.round, name, result)

        if self.stop.is_set():
            send = _committer(commit, min(commit.timeout, _STOPPING_TIMEOUT))
            self.network.call_each_async(pushed, send, method="Commit", on_done=done)
            return
        for name, result in self.network.call_each(pushed, _committer(commit, commit.timeout), method="Commit").items():
            done(name, result)

    # running a round ------------------------------------------------------------------------------
    def drive(
        self,
        gen: RoundGenerator,
        *,
        attempt: int,
        base_digest: str,
        base_size: int,
        base: Parameters | None = None,
    ) -> tuple[RoundOutcome, dict[int, str]]:
        """Run ``gen`` to completion; returns the outcome and the digests of the updates received.

        ``base_digest`` / ``base_size``: the stored global model the round starts from, which extension
        exchanges name (members serve them with it); ``base``: that model as the round engine got it (an
        exchange that sends this very object names the stored blob without encoding it again).
        """
        self.attempt = attempt
        self._base = (base_digest, int(base_size))
        self._base_params = base
        self._first = True
        with self._lock:
            self._update_digests = {}
            self._model_digest = base_digest
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
            work, timeout = pb.WORK_EXCHANGE, exchange_timeout(exchange.kind, s)
        if not exchange.requests:
            return {}
        first_of_round, self._first = self._first, False
        model = b""
        if work == pb.WORK_EXCHANGE:
            digest, size = self._base
        elif self._base_params is not None and all(
            getattr(r, "parameters", None) is self._base_params for r in exchange.requests.values()
        ):
            digest, size = self._base  # the round's stored global model: members hold it already
        else:
            first = next(iter(exchange.requests.values()))
            data = tensors.encode(first.parameters)
            limit = inline_limit(s.chunk_bytes)
            digest, size = self.store.put_staged(data, limit=limit), len(data)  # written if a commit adopts it
            inline = work == pb.WORK_EVALUATE and size <= limit
            model = data if inline else b""
            del data
        with self._lock:
            self._model_digest = digest
        slot = Slot(exchange.round, attempt, exchange.kind)
        self.mailbox.open(slot, exchange.requests.keys())
        deadline = time.monotonic() + timeout
        deadline_ms = int((time.time() + timeout) * 1000)
        members = {self.names(m): m for m in exchange.requests}
        requests = self._assignments(exchange, work, attempt, digest, size, deadline_ms, model)
        commit, self._pending = (self._pending, None) if first_of_round else (None, self._pending)
        if commit is not None:
            commit.wait_written()
        with_commit = set(commit.recipients) if commit is not None else set()
        commit_only = [n for n in commit.recipients if n not in members] if commit is not None else []
        timeout = max(s.rpc_timeout, commit.timeout) if commit is not None else s.rpc_timeout

        def send(client: PeerClient) -> pb.Ack:
            name = client.name
            if name not in requests:
                assert commit is not None
                return _committer(commit, commit.timeout)(client)
            if commit is not None and name in with_commit:
                return client.commit(
                    commit.envelope, model=commit.model, state=commit.state, next=requests[name], timeout=timeout
                )
            return client.assign(requests[name], timeout=s.rpc_timeout)

        def done(name: str, result: pb.Ack | PeerError) -> None:
            if not isinstance(result, PeerError):
                return
            if name not in members:
                if result.code != "NOT_FOUND":
                    log.warning("round %d: commit not taken by %s: %s", exchange.round - 1, name, result)
                return
            what = "commit and assignment" if name in with_commit else "assignment"
            log.warning("round %d: %s not taken by %s: %s", exchange.round, what, name, result)
            problem = "unreachable" if result.unreachable else "refused"
            self.mailbox.fail(members[name], f"{name}: {problem} ({result.code}: {result.detail})", slot=slot)

        def offered(name: str) -> bool:
            if name not in requests:
                assert commit is not None
                return self.outbox.offer(name, commit=_commit_request(commit))
            if commit is not None and name in with_commit:
                return self.outbox.offer(name, commit=_commit_request(commit, next=requests[name]))
            return self.outbox.offer(name, assign=requests[name])

        # the members waiting for their next message get it in their reply; the others get a call, and
        # replies may arrive before those calls return: wait for the replies, and hear of failed calls
        waiting = self.outbox.tickets()
        pushed = [n for n in [*requests, *commit_only] if not offered(n)]
        if first_of_round:
            self.outbox.release(waiting)  # a new round: nothing more of the previous one will come
        self.network.call_each_async(pushed, send, method="Assign", on_done=done)
        return self.mailbox.wait(deadline, probe=self._probe, probe_interval=s.probe_interval, stop=self.stop)

    def _assignments(
        self,
        exchange: Exchange[Any],
        work: pb.Work,
        attempt: int,
        digest: str,
        size: int,
        deadline_ms: int,
        model: bytes,
    ) -> dict[str, pb.AssignRequest]:
        """The signed assignment of every member of ``exchange`` (one envelope for all when the bodies agree)."""
        if work == pb.WORK_EXCHANGE:
            return self._exchange_assignments(exchange, attempt, digest, size, deadline_ms)
        out: dict[str, pb.AssignRequest] = {}
        shared: pb.AssignRequest | None = None
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
            if isinstance(request, EvaluateRequest):  # the same body for every member: sign it once
                if shared is None:
                    shared = pb.AssignRequest(assign=self.network.seal(body, round=exchange.round), model=model)
                out[self.names(m)] = shared
            else:
                out[self.names(m)] = pb.AssignRequest(assign=self.network.seal(body, round=exchange.round), model=model)
        return out

    def _exchange_assignments(
        self, exchange: Exchange[Any], attempt: int, digest: str, size: int, deadline_ms: int
    ) -> dict[str, pb.AssignRequest]:
        """Signed ``WORK_EXCHANGE`` assignments: the request's wire bytes inline when small, else stored here
        for the member to fetch by digest; members with the same request share one envelope."""
        limit = inline_limit(self.network.settings.chunk_bytes)
        sealed: dict[str, pb.AssignRequest] = {}
        out: dict[str, pb.AssignRequest] = {}
        for m, request in exchange.requests.items():
            if not isinstance(request, WireMessage):  # pragma: no cover - extensions send only wire messages
                raise ConfigurationError(
                    f"round {exchange.round}: {exchange.kind} request of type {type(request).__name__} cannot travel"
                )
            payload = request.to_wire()
            key = sha256_hex(payload)
            found = sealed.get(key)
            if found is None:
                if len(payload) > limit:
                    self.store.put(payload, digest=key, durable=False)  # served by Fetch, pruned with old blobs
                body = pb.Assign(
                    work=pb.WORK_EXCHANGE,
                    attempt=attempt,
                    model_digest=digest,
                    model_size=size,
                    spec_digest=self.job,
                    deadline_ms=deadline_ms,
                    exchange_kind=exchange.kind,
                    payload_digest=key,
                    payload_size=len(payload),
                )
                found = pb.AssignRequest(
                    assign=self.network.seal(body, round=exchange.round),
                    payload=payload if len(payload) <= limit else b"",
                )
                sealed[key] = found
            out[self.names(m)] = found
        return out

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
        """Check that an update header answers the open fit exchange (or the open exchange of the kind it
        names); returns its slot."""
        slot = Slot(rnd, int(header.attempt), header.exchange_kind or "fit")
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

    def accept_update(self, sender: str, rnd: int, header: pb.UpdateHeader, data: bytes | bytearray | None) -> str:
        """Deliver an update (or a dropout report, or an extension exchange's reply) into the mailbox.

        Raises
        ------
        MessageRefused
            ``malformed``: an exchange reply that does not decode as the kind's reply class (the member is
            then a dropout of the exchange, with the reason).
        """
        slot = self.update_slot(sender, rnd, header)
        member = self._member(sender)
        if header.exchange_kind:
            return self._accept_exchange_reply(sender, member, slot, header, data)
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

    def _accept_exchange_reply(
        self, sender: str, member: int, slot: Slot, header: pb.UpdateHeader, data: bytes | bytearray | None
    ) -> str:
        kind = header.exchange_kind
        answer: WireMessage | Dropout
        if data is None:
            answer = Dropout(header.dropout or f"{sender}: no {kind} reply")
        else:
            try:
                answer = decode_reply(kind, data, sender=sender)
            except MessageRefused as refusal:
                self.mailbox.fail(member, f"{sender}: {kind} reply refused: {refusal}", slot=slot)
                raise
        self.mailbox.put(slot, member, answer)
        return f"{kind} reply for round {slot.round} received"

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


def _commit_request(commit: PendingCommit, *, next: pb.AssignRequest | None = None) -> pb.CommitRequest:
    return pb.CommitRequest(commit=commit.envelope, model=commit.model, state=commit.state, next=next)


def _committer(commit: PendingCommit, timeout: float) -> Callable[[PeerClient], pb.Ack]:
    def send(client: PeerClient) -> pb.Ack:
        return client.commit(commit.envelope, model=commit.model, state=commit.state, timeout=timeout)

    return send


def commit_recipients(current: Sequence[str], *, me: str, reachable: Callable[[str], bool]) -> tuple[str, ...]:
    """The members a commit goes to: every current member but this node that is not known to be unreachable."""
    return tuple(n for n in sorted(current) if n != me and reachable(n))


def summarize_inputs(outcome: RoundOutcome, digests: Mapping[int, str], names: Callable[[int], str]) -> list[pb.Input]:
    """The commit's declaration of every update received: accepted, or excluded with the reason."""
    inputs = []
    for m in sorted(digests):
        reason = outcome.rejected.get(m, "")
        inputs.append(
            pb.Input(member=names(m), update_digest=digests[m], accepted=m in outcome.accepted, reason=reason)
        )
    return inputs
