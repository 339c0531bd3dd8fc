"""How a node daemon adopts a commit: the round's blobs fetched, its progress in place, then written to disk.

:class:`CommitApplier` is the part of :class:`~fedswarm.node.daemon.NodeDaemon` that every path to a new
round goes through: a commit received from the round's leader (:mod:`fedswarm.node.daemon_handler`), one
adopted from a peer that is ahead (:mod:`fedswarm.node.daemon_catchup`), and the node's own commit as
leader (:mod:`fedswarm.node.lead`). The writes go to one writer thread, in order, so that the progress on
disk only ever names blobs that are on disk (:mod:`fedswarm.node.persist`).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import time
from collections.abc import Callable

from fedswarm.node.daemon_state import DaemonState
from fedswarm.node.persist import Progress
from fedswarm.node.records import stop_reason
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.blobs import inline_limit

__all__ = ["DEFER_WRITE_SECONDS", "CommitApplier"]

log = logging.getLogger("fedswarm.node")

DEFER_WRITE_SECONDS = 1.0  # longest a member's write of a followed round waits for its worker to send


class CommitApplier(DaemonState):
    """Adopts verified commits and persists them (the daemon's commit path)."""

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
