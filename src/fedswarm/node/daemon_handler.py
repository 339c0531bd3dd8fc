"""What a node daemon does with the messages its peers send: the ``PeerHandler`` of its ``Peer`` servicer.

:class:`DaemonPeerHandler` is the part of :class:`~fedswarm.node.daemon.NodeDaemon` that the servicer
(:class:`~fedswarm.node.exchange_service.ExchangePeerService`) calls with verified messages
(:class:`~fedswarm.transport.service.PeerHandler`): the round checks, assignments queued for the member's
worker, updates and evaluations handed to the round this node coordinates, commits checked and adopted,
blobs, status and ledger views served, refusals counted. It also holds the ledger hooks of a round this
node leads.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping

from fedswarm.core.errors import FedswarmError, VerificationError
from fedswarm.node.daemon_commits import CommitApplier
from fedswarm.node.exchange_service import payload_of
from fedswarm.node.leader import DeclaredInput, check_own_input
from fedswarm.node.worker import Job
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.client import PeerError
from fedswarm.transport.envelope import MessageRefused, RoundCheck, Verified
from fedswarm.transport.service import Assignment
from fedswarm.transport.wire import config_from_wire

__all__ = ["DaemonPeerHandler"]

log = logging.getLogger("fedswarm.node")


class DaemonPeerHandler(CommitApplier):
    """Handles verified peer messages for the daemon (the transport's ``PeerHandler`` protocol)."""

    # PeerHandler ----------------------------------------------------------------------------------
    def round_check(self, kind: str) -> RoundCheck | None:
        if kind in ("assign", "commit"):
            return self._check_next_round
        if kind == "evaluation":  # updates: the size limit is checked first, then the open round
            return self._check_open_round
        return None

    def _check_next_round(self, rnd: int) -> str | None:
        current = self.progress.round
        if rnd == current + 2 and self.wait_commit(current + 1, timeout=min(2.0, self.settings.rpc_timeout)):
            current = self.progress.round  # the previous round's commit was still being adopted here
        if rnd == current + 1:
            return None
        if rnd > current + 1:
            self.want_catch_up()
            return f"round {rnd} is ahead of this node, which committed round {current} (catching up)"
        return f"round {rnd} is already committed here (this node is at round {current})"

    def _check_open_round(self, rnd: int) -> str | None:
        slot = self.driver.mailbox.slot
        if slot is None:
            return f"round {rnd}: this node is not coordinating a round now"
        if slot.round != rnd:
            return f"this node is coordinating round {slot.round}, not {rnd}"
        return None

    def on_assign(self, assignment: Assignment) -> str:
        self.network.mark(assignment.message.sender, ok=True)
        halted = self.ledger.refusal("assignments") if self.ledger is not None else None
        if halted is not None:
            raise halted
        self.worker.enqueue(self._job(assignment))
        return "queued"

    def _job(self, assignment: Assignment, *, model: bytes | None = None) -> Job:
        """The work an assignment asks for (``model``: the model's checked bytes, if they came otherwise)."""
        message, body = assignment.message, assignment.body
        model = assignment.model if assignment.model is not None else model
        if body.spec_digest != self.job:
            raise MessageRefused(
                "unexpected",
                f"{message.sender} runs another job (spec digest {body.spec_digest[:16]}, this node's is {self.job[:16]})",
            )
        problem = self.leadership.leader_problem(message.round, message.sender)
        if problem is not None:
            raise MessageRefused("unexpected", problem)
        if body.work == pb.WORK_FIT:
            job = Job(
                "fit", message.round, int(body.attempt), message.sender, body.model_digest, int(body.model_size),
                config_from_wire(body.config), body.deadline_ms / 1000.0, model,
            )  # fmt: skip
        elif body.work == pb.WORK_EVALUATE:
            job = Job(
                "evaluate", message.round, int(body.attempt), message.sender, body.model_digest, int(body.model_size),
                None, body.deadline_ms / 1000.0, model,
            )  # fmt: skip
        elif body.work == pb.WORK_EXCHANGE and body.exchange_kind:
            job = Job(
                "exchange", message.round, int(body.attempt), message.sender, body.model_digest, int(body.model_size),
                None, body.deadline_ms / 1000.0, model, body.exchange_kind, payload_of(assignment),
                body.payload_digest, int(body.payload_size),
            )  # fmt: skip
        else:
            raise MessageRefused("malformed", f"assignment from {message.sender} has no work")
        return job

    def update_limit(self, message: Verified, header: pb.UpdateHeader) -> int:
        limit = self.settings.max_model_bytes
        if header.update_size > limit:
            raise MessageRefused(
                "oversized",
                f"update from {message.sender} for round {message.round}: {header.update_size:,} bytes announced, "
                f"network.max_model_bytes is {limit:,}",
            )
        problem = self._check_open_round(message.round)
        if problem is not None:
            raise MessageRefused("wrong-round", f"update from {message.sender}: {problem}")
        self.driver.update_slot(message.sender, message.round, header)
        return limit

    def on_update(
        self, message: Verified, header: pb.UpdateHeader, data: bytes | bytearray | None, *, wait: float | None
    ) -> pb.Ack:
        self.network.mark(message.sender, ok=True)
        if self.ledger is not None:
            self.ledger.note_update(message, header, data)
        return self._delivery(
            message.sender, wait, lambda: self.driver.accept_update(message.sender, message.round, header, data)
        )

    def on_evaluation(self, message: Verified, body: pb.EvaluationReport, *, wait: float | None) -> pb.Ack:
        self.network.mark(message.sender, ok=True)
        return self._delivery(
            message.sender, wait, lambda: self.driver.accept_evaluation(message.sender, message.round, body)
        )

    def _delivery(self, sender: str, wait: float | None, accept: Callable[[], str]) -> pb.Ack:
        """Accept a member's reply, then wait (up to ``wait`` seconds) for this node's next message to it."""
        s = self.settings
        limit = s.round_timeout + s.evaluate_timeout + s.rpc_timeout if wait is None else wait
        if limit < 0.1:
            return pb.Ack(detail=accept())
        outbox = self.driver.outbox
        ticket = outbox.enter(sender)  # before the reply is in: the coordinator acts once all are
        try:
            detail = accept()
        except BaseException:
            outbox.leave(ticket)
            raise
        reply = outbox.wait(ticket, timeout=limit, stop=self._stop)
        reply.detail = detail
        return reply

    def on_reply(self, peer: str, reply: pb.Ack) -> None:
        """Handle the message a reply from ``peer`` carries (in the worker's thread: it queues work, and a
        commit's writes go to the writer thread)."""
        if not (reply.HasField("assign") or reply.HasField("commit")):
            return
        try:
            self._service.accept_reply(peer, reply)
        except MessageRefused:
            pass  # logged and counted by on_refused
        except Exception:
            log.exception("handling the message in a reply from %s failed", peer)

    def on_commit(
        self, message: Verified, body: pb.Commit, model: bytes | None, state: bytes | None, next: Assignment | None
    ) -> pb.Ack:
        sender, rnd = message.sender, message.round
        self.network.mark(sender, ok=True)
        halted = self.ledger.refusal("commits") if self.ledger is not None else None
        if halted is not None:
            raise halted
        progress = self.progress
        if body.previous_digest != progress.model_digest:
            self.want_catch_up()
            raise MessageRefused(
                "unexpected",
                f"commit of round {rnd} by {sender} builds on model {body.previous_digest[:16]}, but this node's "
                f"round {progress.round} model is {progress.model_digest[:16]}",
            )
        problem = self.leadership.leader_problem(rnd, sender)
        if problem is not None:
            raise MessageRefused("unexpected", problem)
        inputs = [DeclaredInput(i.member, i.update_digest, i.accepted, i.reason) for i in body.inputs]
        refusal = check_own_input(self.me, self.worker.sent_digest(rnd, sender), inputs)
        if refusal is not None:
            log.error("refusing the aggregate of round %d from %s: %s", rnd, sender, refusal)
            self._refused_commits[rnd] = body.model_digest
            raise MessageRefused("unexpected", f"{self.me} refuses the aggregate of round {rnd}: {refusal}")
        job: Job | None = None
        if next is not None:
            if self.topology != "star":
                raise MessageRefused("unexpected", f"commit of round {rnd} by {sender}: only a star aggregator "
                                     "sends the next assignment with a commit")  # fmt: skip
            same_model = next.body.model_digest == body.model_digest
            job = self._job(next, model=model if same_model else None)
        try:
            self.fetch_blob(sender, body.model_digest, int(body.model_size), rnd, inline=model)
            self.fetch_blob(sender, body.state_digest, int(body.state_size), rnd, inline=state)
        except (PeerError, FedswarmError) as exc:
            raise MessageRefused(
                "unexpected", f"commit of round {rnd}: cannot fetch its blobs from {sender}: {exc}"
            ) from None
        queue = None if job is None else functools.partial(self.worker.enqueue, job)
        try:
            self.apply_commit(
                message.envelope, body, leader=sender, then=queue, background=True, defer=job is not None, source=sender
            )
        except VerificationError as exc:
            log.error("refusing the commit of round %d from %s: ledger: %s", rnd, sender, exc)
            raise MessageRefused("unexpected", f"commit of round {rnd} by {sender}: ledger: {exc}") from None
        detail = f"round {rnd} committed" + ("" if next is None else f", round {rnd + 1} queued")
        return pb.Ack(detail=detail, cosignature=self.ledger.cosignature() if self.ledger is not None else b"")

    def open_blob(self, digest: str) -> tuple[int, Iterator[bytes]] | None:
        try:
            if not self.store.has(digest):
                return self.ledger.open_object(digest) if self.ledger is not None else None
            return self.store.size(digest), self.store.chunks(digest, chunk_bytes=self.settings.chunk_bytes)
        except FedswarmError:
            return None

    def on_status(self, message: Verified, body: pb.StatusRequest) -> pb.NodeStatus:
        self.network.mark(message.sender, ok=True)
        return self.status()

    def on_checkpoint(self, message: Verified, body: pb.CheckpointRequest, *, wait: float | None) -> pb.CheckpointReply:
        self.network.mark(message.sender, ok=True)
        if self.ledger is None:
            raise MessageRefused("unexpected", f"{self.me} keeps no ledger ([ledger] enabled = false)")
        return self.ledger.serve(message, body, wait=wait)

    # ledger hooks of the round this node leads ----------------------------------------------------
    def refuses_to_lead(self) -> bool:
        """Whether this node may not lead (its ledger raised an alarm)."""
        return self.ledger is not None and self.ledger.alarm is not None

    def ledger_entries(self, body: pb.Commit, outcome: RoundOutcome, digests: Mapping[int, str]) -> bool:
        """Add the round's ledger entries to the commit ``body``; ``False``: the round cannot be recorded."""
        return self.ledger is None or self.ledger.add_entries(body, outcome, digests)

    def status(self) -> pb.NodeStatus:
        with self._cond:
            progress, phase, error = self._progress, self._phase, self._last_error
            refused = dict(self._refused)
        out = pb.NodeStatus(
            member=self.me,
            federation_id=self.kit.manifest.federation_id,
            topology=self.topology,
            phase=phase,
            round=progress.round,
            rounds=self.spec.federation.rounds,
            model_digest=progress.model_digest,
            finished=self.finished,
            peers=self.network.peer_states(),
            refused=refused,
            spec_digest=self.job,
            started_ms=self._started_ms,
            last_error=str(self.ledger.alarm) if self.ledger is not None and self.ledger.alarm else error,
        )
        if progress.commit:
            out.last_commit.ParseFromString(bytes.fromhex(progress.commit))
        return out

    def on_refused(self, method: str, peer: str | None, refusal: MessageRefused) -> None:
        with self._cond:
            self._refused[refusal.reason] += 1
        log.warning("refused %s from %s: %s", method, peer or "unauthenticated peer", refusal)

    def _refused_connection(self, method: str, refusal: MessageRefused) -> None:
        with self._cond:
            self._refused[refusal.reason] += 1
        log.warning("refused %s call at the TLS check: %s", method.rsplit("/", 1)[-1], refusal)
