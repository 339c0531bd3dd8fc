"""What a node daemon's parts share: its members (declared once) and its state across threads.

:class:`DaemonState` is the base of :class:`~fedswarm.node.daemon.NodeDaemon` and of the parts it is
assembled from (:mod:`fedswarm.node.daemon_commits`, :mod:`fedswarm.node.daemon_catchup`,
:mod:`fedswarm.node.daemon_handler`). It declares the members the daemon builds at start-up, and reads and
changes the state its threads share under one condition variable: the last committed round
(:class:`~fedswarm.node.persist.Progress`), the phase shown in its status, the last error, and whether a
peer showed that the node fell behind.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import threading
import time
from typing import TYPE_CHECKING, Literal

from fedswarm.core.parameters import Parameters
from fedswarm.node.leader import leader_order
from fedswarm.node.persist import NodeStore, Progress
from fedswarm.node.status import PHASES, Phase

if TYPE_CHECKING:
    from fedswarm.node.exchange_service import ExchangePeerService
    from fedswarm.node.kit import Kit
    from fedswarm.node.lead import Leadership
    from fedswarm.node.ledger_node import NodeLedger
    from fedswarm.node.network import Network
    from fedswarm.node.roster import Roster
    from fedswarm.node.roundloop import ExchangeDriver
    from fedswarm.node.worker import MemberWorker
    from fedswarm.spec.network import NetworkSpec
    from fedswarm.spec.schema import Spec
    from fedswarm.transport.envelope import EnvelopeVerifier

__all__ = ["DaemonState"]


class DaemonState:
    """The members of a node daemon and the state its threads share (set up by ``NodeDaemon.__init__``)."""

    spec: Spec
    settings: NetworkSpec
    kit: Kit
    me: str
    roster: Roster
    topology: Literal["star", "swarm"]
    job: str
    store: NodeStore
    verifier: EnvelopeVerifier
    network: Network
    driver: ExchangeDriver
    worker: MemberWorker
    leadership: Leadership
    ledger: NodeLedger | None
    _service: ExchangePeerService
    _writer: cf.ThreadPoolExecutor
    _stop: threading.Event
    _cond: threading.Condition
    _phase: Phase
    _last_error: str
    _refused: collections.Counter[str]
    _started_ms: int
    _progress: Progress
    _round_started: float
    _catchup_wanted: threading.Event
    _refused_commits: dict[int, str]  # round -> model digest of a commit this member refused
    _stopped_early: str | None

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

    @property
    def catchup_wanted(self) -> threading.Event:
        return self._catchup_wanted

    def model(self) -> Parameters:
        """The last committed global model."""
        return self.store.parameters(self.progress.model_digest)

    def peers_in_order(self, rnd: int) -> list[str]:
        """Swarm leader order for round ``rnd`` over the current members."""
        return leader_order(self.progress.model_digest, rnd, self.roster.current)
