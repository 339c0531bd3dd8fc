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

This module builds the daemon and holds its start-up, shutdown and kit reload; the rest of
:class:`NodeDaemon` comes from its parts: the shared state (:mod:`fedswarm.node.daemon_state`), adopting
commits (:mod:`fedswarm.node.daemon_commits`), catching up with peers (:mod:`fedswarm.node.daemon_catchup`)
and handling peers' messages (:mod:`fedswarm.node.daemon_handler`).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import gc
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedswarm.core.errors import ConfigurationError, FedswarmError
from fedswarm.core.parameters import Parameters
from fedswarm.node.daemon_catchup import CatchUp
from fedswarm.node.daemon_handler import DaemonPeerHandler
from fedswarm.node.exchange_service import ExchangePeerService
from fedswarm.node.kit import load_kit, reload_kit
from fedswarm.node.ledger_node import NodeLedger
from fedswarm.node.network import Network
from fedswarm.node.persist import NodeStore, Progress
from fedswarm.node.records import stop_reason
from fedswarm.node.roster import Roster, tls_material, trust_from_kit
from fedswarm.node.roundloop import ExchangeDriver
from fedswarm.node.worker import MemberWorker
from fedswarm.node.world import NodeWorld, build_node_world, job_digest, kit_ckks_keys
from fedswarm.rounds.observer import RunObserver
from fedswarm.spec.schema import Spec
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2_grpc as pb_grpc
from fedswarm.transport.envelope import EnvelopeVerifier, open_body
from fedswarm.transport.loopback import loopback_client
from fedswarm.transport.service import AuthInterceptor
from fedswarm.transport.tls import PeerAuthenticator, server_credentials, server_options

__all__ = ["NodeDaemon"]

log = logging.getLogger("fedswarm.node")


class NodeDaemon(DaemonPeerHandler, CatchUp):
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
        self.kit = load_kit(self.kit_dir, password=password)
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
        self._phase = "starting"
        self._last_error = ""
        self._refused = collections.Counter()
        self._started_ms = int(time.time() * 1000)
        self._progress = self._initial_progress()
        self._round_started = time.monotonic()
        self._catchup_wanted = threading.Event()
        self._refused_commits = {}
        self._stopped_early = self._commit_stop(self._progress)
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
        self.ledger = NodeLedger(self) if spec.ledger.enabled else None

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
