"""The node daemon: one member of a federation, serving gRPC with mutual TLS next to its own data.

A node loads and verifies its startup kit (:func:`fedswarm.node.kit.load_kit`), builds its task and data
from the spec (:mod:`fedswarm.node.world`), resumes from its data folder (:mod:`fedswarm.node.persist`),
and serves ``fedswarm.v1.Peer`` and the standard ``grpc.health.v1.Health`` service. Then, depending on
``[federation] topology``:

* ``star``: the manifest's aggregator coordinates every round (:mod:`fedswarm.node.lead`); the other
  members train when assigned and follow the commits;
* ``swarm``: every member follows the same deterministic leader order (:mod:`fedswarm.node.leader`) and
  leads when its turn comes, taking over from a leader that does not deliver.

``SIGTERM`` stops it gracefully: health turns ``NOT_SERVING``, calls in flight finish (5 s grace),
state is flushed. Everything a node refuses is logged with the reason and counted in its status.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import functools
import gc
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedswarm.core.errors import ConfigurationError, FedswarmError, VerificationError
from fedswarm.core.parameters import Parameters
from fedswarm.node.exchange_service import ExchangePeerService, payload_of
from fedswarm.node.kit import Kit, load_kit, reload_kit
from fedswarm.node.leader import DeclaredInput, check_own_input, leader_order
from fedswarm.node.ledger_node import NodeLedger
from fedswarm.node.network import Network
from fedswarm.node.persist import NodeStore, Progress
from fedswarm.node.records import stop_reason
from fedswarm.node.roster import Roster, tls_material, trust_from_kit
from fedswarm.node.roundloop import ExchangeDriver
from fedswarm.node.status import PHASES, Phase
from fedswarm.node.worker import Job, MemberWorker
from fedswarm.node.world import NodeWorld, build_node_world, job_digest, kit_ckks_keys
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.rounds.observer import RunObserver
from fedswarm.spec.schema import Spec
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2_grpc as pb_grpc
from fedswarm.transport.blobs import inline_limit
from fedswarm.transport.client import PeerError
from fedswarm.transport.envelope import EnvelopeVerifier, MessageRefused, RoundCheck, Verified, open_body
from fedswarm.transport.loopback import loopback_client
from fedswarm.transport.service import Assignment, AuthInterceptor
from fedswarm.transport.tls import PeerAuthenticator, server_credentials, server_options
from fedswarm.transport.wire import config_from_wire

__all__ = ["NodeDaemon"]

log = logging.getLogger("fedswarm.node")

DEFER_WRITE_SECONDS = 1.0  # longest a member's write of a followed round waits for its worker to send


class NodeDaemon:
    """One running member. Construct, :meth:`start`, then :meth:`run` until :meth:`stop`.

    Parameters
    ----------
    kit_dir
        The member's startup kit (verified at start).
    spec
        The federation spec (the same for every member).
    data_path
        The member's own table; default: its share of the spec's dataset.
    state_dir
        The node's data folder (default ``KIT/state``).
    observers
        Told about the run and about every round this node commits as leader (the ledger hook).
    listen
        ``host:port`` to bind (default: the address the manifest lists for this member).
    exit_when_finished
        Return from :meth:`run` once the job's last round is committed (after a short linger so
        peers can fetch the final model).
    """

    def __init__(
        self,
        kit_dir: Path,
        *,
        spec: Spec,
        data_path: Path | None = None,
        state_dir: Path | None = None,
        observers: Sequence[RunObserver] = (),
        listen: str | None = None,
        exit_when_finished: bool = False,
        password: bytes | None = None,
    ) -> None:
        self.kit_dir = Path(kit_dir)
        self.spec = spec
        self.settings = spec.network
        self.kit: Kit = load_kit(self.kit_dir, password=password)
        self.me = self.kit.name
        self.roster = Roster.build(self.kit.manifest, spec)
        self.member = self.roster.id_of(self.me)
        self.topology = spec.federation.topology
        if self.topology == "star" and self.roster.aggregator is None:
            raise ConfigurationError("star topology: the manifest names no aggregator")
        self.job = job_digest(spec)
        self.store = NodeStore(Path(state_dir) if state_dir is not None else self.kit_dir / "state")
        self.world: NodeWorld = build_node_world(
            spec,
            member=self.member,
            name=self.me,
            data_path=data_path,
            state_dir=self.store.directory,
            population=self.roster.population,
            ckks_keys=kit_ckks_keys(spec, self.kit_dir, password=password),
        )
        self.observers = list(observers)
        self.exit_when_finished = exit_when_finished
        self._listen = listen or self.kit.entry.address
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._phase: Phase = "starting"
        self._last_error = ""
        self._refused: collections.Counter[str] = collections.Counter()
        self._started_ms = int(time.time() * 1000)
        self._progress = self._initial_progress()
        self._round_started = time.monotonic()
        self._catchup_wanted = threading.Event()
        self._refused_commits: dict[int, str] = {}  # round -> model digest of a commit this member refused
        self._stopped_early: str | None = self._commit_stop(self._progress)
        trust = trust_from_kit(self.kit)
        self.authenticator = PeerAuthenticator(trust)
        self.verifier = EnvelopeVerifier(
            trust.federation_id,
            keys=lambda name: self.authenticator.trust.keys.get(name),
            max_skew=self.settings.max_clock_skew,
            vouched=lambda envelope: self.network.sealed.vouches(envelope),  # its own messages, e.g. via loopback
        )
        self.network = Network(
            me=self.me,
            key=self.kit.signing_key,
            federation_id=trust.federation_id,
            material=tls_material(self.kit),
            addresses=trust.addresses,
            settings=self.settings,
        )
        self.driver = ExchangeDriver(
            network=self.network,
            store=self.store,
            names=self.roster.name_of,
            ids=self.roster.id_of,
            job=self.job,
            stop=self._stop,
        )
        self.worker = MemberWorker(
            member=self.member,
            runtime=self.world.runtime,
            store=self.store,
            network=self.network,
            on_phase=self._worker_phase,
            on_reply=self.on_reply,
        )
        self._writer = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
        self._server: grpc.Server | None = None
        self._service = ExchangePeerService(self, verifier=self.verifier, authenticator=self.authenticator)
        self._health = health.HealthServicer(experimental_non_blocking=True)
        self.port = 0
        from fedswarm.node.lead import Leadership

        self.leadership = Leadership(self)
        self.ledger: NodeLedger | None = NodeLedger(self) if spec.ledger.enabled else None

    # lifecycle ------------------------------------------------------------------------------------
    def _initial_progress(self) -> Progress:
        progress = self.store.progress(job=self.job)
        if progress is not None:
            log.info("%s resumes after round %d (model %s)", self.me, progress.round, progress.model_digest[:16])
            if progress.commit and progress.round not in self.store.history_rounds():
                commit = open_body(pb.Envelope.FromString(bytes.fromhex(progress.commit)), pb.Commit)
                if commit.record_json:  # killed between saving the progress and appending the history
                    self.store.append_history(json.loads(commit.record_json))
            return progress
        model_digest, _ = self.store.put_parameters(self.world.initial)
        state = self.leadership_state_blob()
        progress = Progress(job=self.job, round=0, model_digest=model_digest, state_digest=state, leader="", commit="")
        self.store.save_progress(progress)
        return progress

    @staticmethod
    def _commit_stop(progress: Progress) -> str | None:
        """The reason the run stopped before its last round, if the commit of ``progress`` says so."""
        if not progress.commit:
            return None
        return stop_reason(open_body(pb.Envelope.FromString(bytes.fromhex(progress.commit)), pb.Commit))

    def leadership_state_blob(self) -> str:
        from fedswarm.spec.build import build_strategy

        digest, _ = self.store.put_parameters(Parameters(build_strategy(self.spec).state_dict()))
        return digest

    def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        server = grpc.server(
            cf.ThreadPoolExecutor(max_workers=max(16, 2 * len(self.roster.names) + 4), thread_name_prefix="rpc"),
            interceptors=[AuthInterceptor(self.authenticator, on_refused=self._refused_connection)],
            options=server_options(
                max_message_bytes=self.settings.max_message_bytes, keepalive_seconds=self.settings.keepalive
            ),
        )
        pb_grpc.add_PeerServicer_to_server(self._service, server)  # type: ignore[no-untyped-call]
        self.network.set_loopback(loopback_client(self.me, self._service, cert_pem=self.kit.tls_certificate.pem))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            from grpc_reflection.v1alpha import reflection

            names = (
                pb.DESCRIPTOR.services_by_name["Peer"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            )
            reflection.enable_server_reflection(names, server)
        except ImportError:  # pragma: no cover - reflection is optional
            pass
        port = server.add_secure_port(self._listen, server_credentials(tls_material(self.kit)))
        if port == 0:
            raise ConfigurationError(f"cannot listen on {self._listen} (in use, or not an address of this machine)")
        server.start()
        self._server = server
        self.port = port
        self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._health.set("fedswarm.v1.Peer", health_pb2.HealthCheckResponse.SERVING)
        self.network.start()
        self.worker.start()
        if self.ledger is not None:
            self.ledger.start()
        threading.Thread(target=self._watch_kit, name="kit-watch", daemon=True).start()
        log.info(
            "%s serving on %s (federation %s, %s topology, round %d of %d)",
            self.me, self._listen.rsplit(":", 1)[0] + f":{port}", self.kit.manifest.federation_id[:8], self.topology,
            self._progress.round, self.spec.federation.rounds,
        )  # fmt: skip
        for observer in self.observers:
            observer.on_start(self.leadership.run_start())
        return port

    def stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def run(self) -> None:
        """Take part in the federation until stopped (or finished, with ``exit_when_finished``)."""
        # what start-up built (modules, the task and its data) is left out of later garbage collections: a
        # full collection then takes milliseconds instead of tens, which would stall a round (GIL held)
        gc.collect()
        gc.freeze()
        try:
            self.leadership.loop()
        finally:
            self.shutdown()
        if self.ledger is not None and self.ledger.alarm is not None:
            raise self.ledger.alarm  # the node halted on a ledger alarm: exit non-zero

    def shutdown(self) -> None:
        self.set_phase("stopping")
        self._health.enter_graceful_shutdown()
        if self._server is not None:
            self._server.stop(grace=5.0).wait(6.0)
            self._server = None
        self.worker.stop()
        self._writer.shutdown(wait=True)  # the rounds adopted so far are on disk before the node exits
        try:
            self.store.write_resident()  # blobs held in memory get files, for whoever reads the folder next
        except OSError as exc:
            log.error("cannot write the blobs held in memory to %s: %s", self.store.directory, exc)
        if self.ledger is not None:
            self.ledger.stop()
        self.network.close()
        self.world.runtime.state_store.close()
        for observer in self.observers:
            observer.close()
        log.info("%s stopped after round %d", self.me, self._progress.round)

    def _kit_stamp(self) -> tuple[float, ...]:
        files = ("manifest.sig", "crl.pem")
        return tuple((self.kit_dir / f).stat().st_mtime if (self.kit_dir / f).exists() else 0.0 for f in files)

    def _watch_kit(self) -> None:
        """Reload the kit's manifest and CRL when they change (a member added or revoked)."""
        stamp = self._kit_stamp()
        while not self._stop.wait(1.0):
            now = self._kit_stamp()
            if now == stamp:
                continue
            stamp = now
            try:
                kit = reload_kit(self.kit)  # the keys stay those already open: no password needed
            except FedswarmError as exc:
                log.error("kit changed but does not verify, keeping the previous one: %s", exc)
                continue
            trust = trust_from_kit(kit)
            self.kit = kit
            self.authenticator.update(trust)
            self.roster = Roster.build(kit.manifest, self.spec)
            self.network.set_addresses(trust.addresses)
            self.network.set_loopback(loopback_client(self.me, self._service, cert_pem=kit.tls_certificate.pem))
            log.info(
                "kit reloaded: manifest version %d, CRL %d, %d members",
                trust.version,
                trust.crl.number,
                len(trust.fingerprints),
            )

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    # state ----------------------------------------------------------------------------------------
    @property
    def progress(self) -> Progress:
        with self._cond:
            return self._progress

    @property
    def round_started(self) -> float:
        with self._cond:
            return self._round_started

    @property
    def finished(self) -> bool:
        """The job's last round is committed, or a commit stopped the run early (a privacy budget)."""
        with self._cond:
            return self._progress.round >= self.spec.federation.rounds or self._stopped_early is not None

    @property
    def stopped_early(self) -> str | None:
        """Why the run stopped before its last round (from the commit that stopped it), or ``None``."""
        with self._cond:
            return self._stopped_early

    def set_phase(self, phase: Phase) -> None:
        assert phase in PHASES
        with self._cond:
            self._phase = phase

    def set_error(self, message: str) -> None:
        with self._cond:
            self._last_error = message

    def _worker_phase(self, phase: str) -> None:
        if phase == "idle":
            self.set_phase("finished" if self.finished else "idle")
        elif phase in PHASES:
            self.set_phase(phase)  # type: ignore[arg-type]

    def wait_commit(self, rnd: int, timeout: float) -> bool:
        """Wait until round ``rnd`` is committed (``True``) or ``timeout`` passes, the node stops, or a peer
        showed that this node fell behind (:meth:`want_catch_up`)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._progress.round < rnd and not self._stop.is_set() and not self._catchup_wanted.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return self._progress.round >= rnd

    def want_catch_up(self) -> None:
        """Note that a peer is ahead of this node, and wake the loop that catches up."""
        self._catchup_wanted.set()
        with self._cond:
            self._cond.notify_all()

    def apply_commit(
        self,
        envelope: pb.Envelope,
        body: pb.Commit,
        *,
        leader: str,
        then: Callable[[], None] | None = None,
        background: bool = False,
        defer: bool = False,
        source: str | None = None,
    ) -> cf.Future[None] | None:
        """Adopt a verified commit whose blobs are stored, wake whoever waits for it, and persist it.

        The new progress is in place (``then`` runs, e.g. to queue the next round's work) before it is
        written: the blobs and then the progress that names them are written durably
        (:meth:`~fedswarm.node.persist.NodeStore.save_round`: one flush when they are small), then the
        history appended and old blobs pruned, so the progress on disk only ever names blobs that are on
        disk. The method returns once that is done, or at once with ``background``: the writes go to one
        thread, in order, and the returned future tells when the round is durable (``None``: done already,
        or nothing to do). A
        member following a leader does not wait for it: a crash loses at most the rounds not yet written,
        which the member catches up from its peers when it restarts; a leader waits for it before its
        commit leaves the node. With ``defer`` (a member following a commit that came with its next
        assignment) the writes wait until this node's worker has sent that work's result (at most
        :data:`DEFER_WRITE_SECONDS`): on a busy machine they then do not hold up the round.

        With a ledger, the commit's entries are checked and appended first (the records before them are
        fetched from ``source`` if this node lacks them); ``VerificationError`` refuses the commit.
        """
        rnd = int(envelope.round)
        if self.ledger is not None:
            with self._cond:
                if rnd <= self._progress.round:
                    return None
            self.ledger.adopt(envelope, body, leader=leader, source=source)
        progress = Progress(
            job=self.job,
            round=rnd,
            model_digest=body.model_digest,
            state_digest=body.state_digest,
            leader=leader,
            commit=envelope.SerializeToString().hex(),
        )
        record = json.loads(body.record_json) if body.record_json else None
        stop = stop_reason(body, record=record)
        with self._cond:
            if rnd <= self._progress.round:
                return None
            self._progress = progress
            self._stopped_early = stop
            self._round_started = time.monotonic()
            self._cond.notify_all()
        if then is not None:
            then()
        keep = {body.model_digest, body.state_digest, body.previous_digest}
        written: cf.Future[None] | None = None
        if background:
            written = cf.Future()
            self._writer.submit(self._persist, progress, record, keep, written, defer)
        else:
            self._persist(progress, record, keep, None, False)
        log.info("round %d committed by %s: model %s", rnd, leader, body.model_digest[:16])
        if self.finished:
            self.set_phase("finished")
        if self.ledger is not None:
            self.ledger.adopted(leader)
        return written

    def _persist(
        self,
        progress: Progress,
        record: dict[str, object] | None,
        keep: set[str],
        written: cf.Future[None] | None,
        defer: bool,
    ) -> None:
        """Write a round: blobs and progress (one flush for small ones; ``written`` is done then), then the
        history and pruning, which nobody waits for; with ``defer``, once the worker's result is sent."""
        if defer:
            self.worker.wait_quiet(DEFER_WRITE_SECONDS)
        try:
            try:
                blobs = (progress.model_digest, progress.state_digest)
                self.store.save_round(progress, blobs=blobs, inline_limit=inline_limit(self.settings.chunk_bytes))
            except BaseException as exc:
                if written is not None and not isinstance(exc, OSError):
                    written.set_exception(exc)
                raise
            finally:
                if written is not None and not written.done():
                    written.set_result(None)
            if record is not None:
                self.store.append_history(record)
            self.store.prune(keep)
        except OSError as exc:  # the round stays adopted in memory; a restart catches it up from peers
            log.error("cannot write round %d to %s: %s", progress.round, self.store.directory, exc)

    def fetch_blob(self, peer: str, digest: str, size: int, rnd: int, *, inline: bytes | None = None) -> None:
        """Make sure blob ``digest`` is stored: from ``inline`` (bytes already checked against it), else from ``peer``.

        Raises
        ------
        MessageRefused
            The peer sent other bytes than announced.
        PeerError
            The fetch failed.
        """
        if self.store.has(digest):
            return
        if inline is not None:
            self.store.stage(inline, digest=digest)  # written and flushed by apply_commit
            return
        envelope = self.network.seal(pb.FetchRequest(digest=digest), round=rnd)
        data = self.network.client(peer).fetch(
            envelope,
            digest=digest,
            limit=min(size, self.settings.max_model_bytes),
            timeout=max(60.0, self.settings.rpc_timeout),
        )
        self.store.put(data, digest=digest, durable=False)  # flushed by apply_commit

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

    # catch-up -------------------------------------------------------------------------------------
    def catch_up(self) -> bool:
        """Adopt the latest commit any reachable peer holds, if it is ahead of ours. ``True`` if adopted."""
        self._catchup_wanted.clear()
        progress = self.progress
        peers = [n for n in sorted(self.roster.current) if n != self.me]
        request = pb.StatusRequest(round=progress.round)
        futures = {}
        with cf.ThreadPoolExecutor(max_workers=min(8, max(1, len(peers)))) as pool:
            for name in peers:
                futures[name] = pool.submit(self._peer_status, name, request)
            statuses = {n: f.result() for n, f in futures.items()}
        best: tuple[int, str, pb.Envelope] | None = None
        for name, status in statuses.items():
            if status is None or not status.HasField("last_commit") or status.round <= progress.round:
                continue
            if best is None or status.round > best[0]:
                best = (int(status.round), name, status.last_commit)
        if best is None:
            return False
        rnd, holder, envelope = best
        try:
            verified = self.verifier.verify_record(envelope)
            body = open_body(envelope, pb.Commit)
            problem = self._catch_up_problem(rnd, verified.sender, body)
            if problem is not None:
                log.error("not catching up to round %d from %s: %s", rnd, holder, problem)
                return False
            self.set_phase("catching-up")
            self.fetch_blob(holder, body.model_digest, int(body.model_size), rnd)
            self.fetch_blob(holder, body.state_digest, int(body.state_size), rnd)
        except (MessageRefused, PeerError, FedswarmError) as exc:
            log.warning("catch-up from %s failed: %s", holder, exc)
            return False
        try:
            self.apply_commit(envelope, body, leader=verified.sender, source=holder)
        except VerificationError as exc:
            log.warning("catch-up from %s failed: ledger: %s", holder, exc)
            return False
        log.info("caught up to round %d from %s (led by %s)", rnd, holder, verified.sender)
        self.set_phase("finished" if self.finished else "idle")
        return True

    def _catch_up_problem(self, rnd: int, leader: str, body: pb.Commit) -> str | None:
        """Why this member must not adopt a peer's commit of round ``rnd``: it declares this member's update
        wrongly, or it is (or directly builds on) a commit this member refused."""
        inputs = [DeclaredInput(i.member, i.update_digest, i.accepted, i.reason) for i in body.inputs]
        refusal = check_own_input(self.me, self.worker.sent_digest(rnd, leader), inputs)
        if refusal is not None:
            return f"{self.me} refuses the aggregate of round {rnd} by {leader}: {refusal}"
        for refused_round, digest in self._refused_commits.items():
            if body.model_digest == digest or body.previous_digest == digest:
                return f"it is, or builds on, the aggregate of round {refused_round} this member refused"
        return None

    def _peer_status(self, name: str, request: pb.StatusRequest) -> pb.NodeStatus | None:
        try:
            status = self.network.client(name).status(
                self.network.seal(request, round=0), timeout=min(3.0, self.settings.rpc_timeout)
            )
        except PeerError as exc:
            if exc.unreachable:
                self.network.mark(name, ok=False, error=exc.detail)
            return None
        self.network.mark(name, ok=True)
        return status

    @property
    def catchup_wanted(self) -> threading.Event:
        return self._catchup_wanted

    def model(self) -> Parameters:
        """The last committed global model."""
        return self.store.parameters(self.progress.model_digest)

    def peers_in_order(self, rnd: int) -> list[str]:
        """Swarm leader order for round ``rnd`` over the current members."""
        return leader_order(self.progress.model_digest, rnd, self.roster.current)
