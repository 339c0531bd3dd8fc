"""How a node daemon catches up: it adopts the latest commit a reachable peer holds, if ahead of its own.

:class:`CatchUp` is the part of :class:`~fedswarm.node.daemon.NodeDaemon` that asks every other current
member for its status, picks the most advanced signed commit, checks it (the leader's signature, this
member's own update as declared in it, no commit this member refused), fetches its blobs and adopts it
through :meth:`~fedswarm.node.daemon_commits.CommitApplier.apply_commit`.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging

from fedswarm.core.errors import FedswarmError, VerificationError
from fedswarm.node.daemon_commits import CommitApplier
from fedswarm.node.leader import DeclaredInput, check_own_input
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.client import PeerError
from fedswarm.transport.envelope import MessageRefused, open_body

__all__ = ["CatchUp"]

log = logging.getLogger("fedswarm.node")


class CatchUp(CommitApplier):
    """Adopts a peer's more recent commit (the daemon's catch-up)."""

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
