"""The member side of a round on a real node: fetch the model, train or evaluate, send the result.

Work arrives as assignments (``Peer.Assign``) and runs on one worker thread, in order, so the gRPC
server stays responsive while local training takes as long as it takes: the coordinator is not
holding a call open, it waits for the update until its deadline. A small model comes with its
assignment; a larger one is fetched by digest from the coordinator unless already stored (the global
model of a round is the model the previous round committed, which every member already holds). A small
update goes back in one message (``Peer.SubmitUpdateInline``), a larger one as a stream. A delivery call
waits for the coordinator's next message to this member, which comes back in the reply and is handed to
``on_reply`` (the daemon verifies and handles it as if it had come as a call).

A fit result is kept until the next round: if the leader dies and the next one re-assigns the same
round from the same model, the member sends the same update again instead of training twice (which
would also advance stateful tasks' member state twice).

An extension exchange (``WORK_EXCHANGE``: a SecAgg+ phase, a private or encrypted fit, a CKKS
decryption) is served by the member runtime's handler of its kind, with the request's wire bytes (inline,
or fetched by digest) and the round's global model; the worker decodes nothing itself. The reply's wire
bytes go back like an update whose header names the kind, a failed handler as a dropout with its reason.
The handlers keep the member's protocol state for the round (SecAgg+ keys); a new attempt at the round
starts the protocol again from its first phase, which replaces that state.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from fedswarm.codec import tensors
from fedswarm.core.errors import FedswarmError
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import FitConfig
from fedswarm.node.network import Network
from fedswarm.node.persist import NodeStore
from fedswarm.rounds.member import MemberRuntime
from fedswarm.rounds.messages import Dropout, EvaluateRequest, FitReply, FitRequest
from fedswarm.rounds.privacy.wire import WireMessage
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.blobs import inline_limit
from fedswarm.transport.client import PeerError
from fedswarm.transport.envelope import MessageRefused
from fedswarm.transport.wire import encode_update, metrics_to_wire, sha256_hex

__all__ = ["Job", "MemberWorker"]

log = logging.getLogger("fedswarm.node")


@dataclass(frozen=True, slots=True)
class Job:
    """One assignment: train from, or evaluate, the model ``model_digest`` for ``coordinator``; or serve an
    extension exchange of ``kind`` (``work = "exchange"``) whose request is ``payload`` (checked) or is to be
    fetched by ``payload_digest``."""

    work: Literal["fit", "evaluate", "exchange"]
    round: int
    attempt: int
    coordinator: str
    model_digest: str
    model_size: int
    config: FitConfig | None
    deadline: float = 0.0  # time.time() after which the coordinator stops waiting
    model: bytes | None = None  # the model's bytes, when they came with the assignment (checked)
    kind: str = ""  # work "exchange": the exchange kind
    payload: bytes | None = None  # work "exchange": the request's bytes, when they came inline (checked)
    payload_digest: str = ""
    payload_size: int = 0


@dataclass(frozen=True, slots=True)
class _FitResult:
    key: tuple[int, str, int]
    header: pb.UpdateHeader
    data: bytes | bytearray | None


class MemberWorker:
    """Runs this member's assignments on a background thread."""

    def __init__(
        self,
        *,
        member: int,
        runtime: MemberRuntime,
        store: NodeStore,
        network: Network,
        on_phase: Callable[[str], None],
        on_reply: Callable[[str, pb.Ack], None],
    ) -> None:
        self.member = member
        self.runtime = runtime
        self.store = store
        self.network = network
        self._on_phase = on_phase
        self._on_reply = on_reply
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="member-worker", daemon=True)
        self._last_fit: _FitResult | None = None
        self._sent: dict[tuple[int, str], str] = {}
        self._lock = threading.Lock()
        self._vector: tuple[str, npt.NDArray[np.float64]] | None = None  # the last global model, flattened
        self._quiet = threading.Event()  # set while this worker computes nothing (idle, or its result is sent)
        self._quiet.set()
        self.sign_header: Callable[[int, pb.UpdateHeader, bytes | bytearray | None], None] | None = None  # ledger

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout=timeout)
        self._quiet.set()

    def wait_quiet(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) until this worker computes nothing: it is idle, or has sent its
        result and waits for the coordinator. Background work that can wait (a member writing a round it
        follows) runs then, instead of competing with the work the round waits for."""
        self._quiet.wait(timeout)

    def enqueue(self, job: Job) -> None:
        self._quiet.clear()  # work is pending from now on
        self._queue.put(job)

    def sent_digest(self, rnd: int, leader: str) -> str | None:
        """Digest of the update this member delivered to ``leader`` for round ``rnd`` (acknowledged)."""
        with self._lock:
            return self._sent.get((rnd, leader))

    # ---------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._on_phase("evaluating" if job.work == "evaluate" else "training")
                if job.work == "fit":
                    self._fit(job)
                elif job.work == "exchange":
                    self._exchange(job)
                else:
                    self._evaluate(job)
            except Exception as exc:  # keep serving: the coordinator sees a dropout at its deadline
                log.exception("round %d: %s for %s failed: %s", job.round, job.work, job.coordinator, exc)
            finally:
                if self._queue.empty():
                    self._quiet.set()
                self._on_phase("idle")

    def _model(self, job: Job) -> Parameters:
        if job.model is not None:  # bytes that came with the work, checked against its digest
            return tensors.decode(job.model, source=f"model {job.model_digest[:16]} from {job.coordinator}")
        if not self.store.has(job.model_digest):
            envelope = self.network.seal(pb.FetchRequest(digest=job.model_digest), round=job.round)
            data = self.network.client(job.coordinator).fetch(
                envelope,
                digest=job.model_digest,
                limit=min(job.model_size, self.network.settings.max_model_bytes),
                timeout=max(self.network.settings.rpc_timeout, 60.0),
            )
            self.store.put(data, digest=job.model_digest)
        return self.store.parameters(job.model_digest)

    def _fit(self, job: Job) -> None:
        assert job.config is not None
        key = (job.round, job.model_digest, job.config.seed)
        cached = self._last_fit
        if cached is None or cached.key != key:
            cached = self._train(job, key)
            self._last_fit = cached
        header = pb.UpdateHeader()
        header.CopyFrom(cached.header)
        header.attempt = job.attempt
        if self.sign_header is not None:  # the ledger: this member's signed entry for the update, its cosignature
            self.sign_header(job.round, header, cached.data)
        reply = self._submit(job, header, cached.data)
        if cached.data is not None and reply is not None:
            with self._lock:
                self._sent[(job.round, job.coordinator)] = header.update_digest
                for old in [k for k in self._sent if k[0] < job.round - 2]:
                    del self._sent[old]
        if reply is not None:
            self._on_reply(job.coordinator, reply)

    def _submit(self, job: Job, header: pb.UpdateHeader, data: bytes | bytearray | None) -> pb.Ack | None:
        """Send ``header`` and ``data`` (an update or an exchange reply) to the job's coordinator: inline when
        small, else as a stream; returns the coordinator's reply (``None``: superseded while unreachable)."""
        settings = self.network.settings
        timeout = max(settings.rpc_timeout, 60.0 + (len(data or b"") >> 20)) + self._patience(job)
        small = data is None or len(data) <= inline_limit(settings.chunk_bytes)

        def send() -> pb.Ack:
            envelope = self.network.seal(header, round=job.round)
            client = self.network.client(job.coordinator)
            if small:
                return client.submit_update_inline(envelope, data, timeout=timeout, wait_for_ready=False)
            return client.submit_update(
                envelope, data, timeout=timeout, chunk_bytes=settings.chunk_bytes, wait_for_ready=False
            )

        return self._deliver(job, send)

    def _patience(self, job: Job) -> float:
        """How long a delivery call may wait for the coordinator's next message: until the exchange's
        deadline, then through an evaluation, and the time to reply."""
        s = self.network.settings
        return max(0.0, job.deadline - time.time()) + s.evaluate_timeout + s.rpc_timeout

    def _train(self, job: Job, key: tuple[int, str, int]) -> _FitResult:
        assert job.config is not None
        try:
            params = self._model(job)
        except (FedswarmError, MessageRefused) as exc:
            return _FitResult(
                key, pb.UpdateHeader(base_digest=job.model_digest, dropout=f"cannot get model: {exc}"), None
            )
        reply = self.runtime.fit(self.member, FitRequest(params, job.config), params.flatten())
        flush = getattr(self.runtime.state_store, "flush", None)
        if flush is not None:
            flush()
        if not isinstance(reply, FitReply):
            log.warning("round %d: this member drops out: %s", job.round, reply.reason)
            return _FitResult(key, pb.UpdateHeader(base_digest=job.model_digest, dropout=reply.reason), None)
        data = encode_update(reply.update)
        header = pb.UpdateHeader(
            base_digest=job.model_digest,
            update_digest=sha256_hex(data),
            update_size=len(data),
            num_examples=reply.num_examples,
            payload_bytes=reply.payload_bytes,
            seconds=reply.seconds,
            metrics=metrics_to_wire(reply.metrics),
        )
        return _FitResult(key, header, data)

    def _global_vector(self, job: Job) -> npt.NDArray[np.float64]:
        """The round's global model as a flat vector (kept for the round's next exchanges)."""
        kept = self._vector
        if kept is not None and kept[0] == job.model_digest:
            return kept[1]
        vector = self._model(job).flatten()
        self._vector = (job.model_digest, vector)
        return vector

    def _payload(self, job: Job) -> bytes:
        """The exchange request's bytes: those that came inline, else fetched from the coordinator by digest."""
        if job.payload is not None:
            return job.payload
        limit = self.network.settings.max_model_bytes
        if job.payload_size > limit:
            raise MessageRefused(
                "oversized", f"{job.kind} request of {job.payload_size:,} bytes; network.max_model_bytes is {limit:,}"
            )
        envelope = self.network.seal(pb.FetchRequest(digest=job.payload_digest), round=job.round)
        data = self.network.client(job.coordinator).fetch(
            envelope,
            digest=job.payload_digest,
            limit=job.payload_size,
            timeout=max(self.network.settings.rpc_timeout, 60.0),
        )
        return bytes(data)

    def _exchange(self, job: Job) -> None:
        start = time.perf_counter()
        header = pb.UpdateHeader(attempt=job.attempt, base_digest=job.model_digest, exchange_kind=job.kind)
        data: bytes | None = None
        try:
            payload = self._payload(job)
            vector = self._global_vector(job)
        except (FedswarmError, MessageRefused, PeerError) as exc:
            header.dropout = f"{self.runtime.member_name(self.member)}: cannot get the {job.kind} request: {exc}"
        else:
            answer = self.runtime.handle(job.kind, self.member, payload, vector)
            flush = getattr(self.runtime.state_store, "flush", None)
            if flush is not None:
                flush()
            if isinstance(answer, Dropout):
                log.warning("round %d: this member drops out of %s: %s", job.round, job.kind, answer.reason)
                header.dropout = answer.reason
            elif isinstance(answer, WireMessage):
                data = answer.to_wire()
                header.update_digest = sha256_hex(data)
                header.update_size = len(data)
            else:  # pragma: no cover - extension handlers return wire messages
                header.dropout = f"{job.kind}: the member's handler returned a {type(answer).__name__}"
        header.seconds = time.perf_counter() - start
        reply = self._submit(job, header, data)
        if reply is not None:
            self._on_reply(job.coordinator, reply)

    def _evaluate(self, job: Job) -> None:
        start = time.perf_counter()
        try:
            params = self._model(job)
        except (FedswarmError, MessageRefused) as exc:
            report = pb.EvaluationReport(model_digest=job.model_digest, dropout=f"cannot get model: {exc}")
        else:
            reply = self.runtime.evaluate(self.member, EvaluateRequest(job.round, params))
            if isinstance(reply, Dropout):
                report = pb.EvaluationReport(model_digest=job.model_digest, dropout=reply.reason)
            else:
                report = pb.EvaluationReport(
                    model_digest=job.model_digest,
                    num_examples=reply.num_examples,
                    loss=reply.loss,
                    metrics=metrics_to_wire(reply.metrics),
                )
        report.attempt = job.attempt
        log.debug("round %d: evaluated in %.3f s", job.round, time.perf_counter() - start)

        timeout = self.network.settings.rpc_timeout + self._patience(job)

        def send() -> pb.Ack:
            envelope = self.network.seal(report, round=job.round)
            return self.network.client(job.coordinator).submit_evaluation(
                envelope, timeout=timeout, wait_for_ready=False
            )

        ack = self._deliver(job, send)
        if ack is not None:
            self._on_reply(job.coordinator, ack)

    def _deliver(self, job: Job, send: Callable[[], pb.Ack]) -> pb.Ack | None:
        """Call ``send`` until it succeeds (its reply), is refused, or the coordinator's deadline passed."""
        self._quiet.set()  # the result is ready: from here this worker waits on the network
        while True:
            try:
                return send()
            except PeerError as exc:
                if not exc.unreachable or time.time() + 0.5 > job.deadline:
                    raise
                if self._superseded(job):
                    log.warning("round %d: %s unreachable and replaced by a new assignment", job.round, job.coordinator)
                    return None
                log.info("round %d: %s unreachable, retrying: %s", job.round, job.coordinator, exc.detail)
                time.sleep(0.5)

    def _superseded(self, job: Job) -> bool:
        """Whether a later assignment of the same work for the same or a later round is waiting."""
        with self._queue.mutex:
            waiting = list(self._queue.queue)
        return any(
            j is not None and j.round >= job.round and j.work == job.work and j.coordinator != job.coordinator
            for j in waiting
        )
