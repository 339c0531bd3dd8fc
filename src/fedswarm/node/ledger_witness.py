"""A node's part in witnessing the ledger: cosigning its heads, making and checking final checkpoints.

* **cosigning**: after each append a registered member cosigns its new tree head. The head's time is the
  commit's signed timestamp, so every honest replica has the same head and any leader can gather
  cosignatures of it (:class:`~fedswarm.ledger.witness.WitnessPool`).
* **gathering**: cosignatures arrive with members' updates, in their replies to commits and in
  ``Checkpoint`` calls. Once strictly more than the quorum of registered members cosigned a head, it is
  final: the coordinator's checkpoint when the founding member cosigned it, else one that the node that
  gathered them signs itself, under its member name (:mod:`fedswarm.ledger.witness`). No member, the
  founding one included, is needed for finality.
* **checking**: a final checkpoint that comes with a commit or from a peer must be signed by the ledger's
  coordinator or by a member with the key the manifest lists for it, be cosigned by a quorum of registered
  members and describe the local log (:meth:`fedswarm.ledger.replica.Replica.accept_final`); a checkpoint
  that contradicts the log is a fork and halts the replica.

Each signature is checked once: a cosignature a member sends again (with its next update, after its reply
to the commit) is recognized by its bytes, this node's own cosignature is never verified, and a
checkpoint's cosignatures are verified in one batch (:func:`fedswarm.crypto.batch.verify_signatures`).
Everything here runs on the ledger's thread, except the reads of the latest cosignature and checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from fedswarm.core.errors import VerificationError
from fedswarm.crypto.batch import BatchVerificationError, verify_signatures
from fedswarm.ledger.checkpoint import Checkpoint, CosignedHead, TreeHead, cosign_head
from fedswarm.ledger.replica import ForkDetected
from fedswarm.ledger.witness import WitnessPool

if TYPE_CHECKING:
    from fedswarm.node.ledgerlink import LedgerLink

__all__ = ["NodeWitness"]

log = logging.getLogger("fedswarm.node")

_KEEP = 16
"""Recent heads (and this node's cosignatures of them) remembered."""


class NodeWitness:
    """Cosignatures and final checkpoints of one node's replica.

    Parameters
    ----------
    link
        The node's replica.
    due
        Whether the head after a round becomes a checkpoint (``ledger.checkpoint_every``, the last round).
    """

    def __init__(self, link: LedgerLink, *, due: Callable[[int], bool]) -> None:
        self._link = link
        self._due = due
        self._pool = WitnessPool(signer=link.me, keep=_KEEP)
        self._cosigned: bytes = b""  # this member's cosignature of its latest head, encoded
        self._own: dict[int, bytes] = {}  # this member's cosignatures (the signatures) by head size
        self._last: dict[str, bytes] = {}  # the last cosignature bytes each member sent
        self._final: Checkpoint | None = None
        self._final_bytes = b""
        self._sent_final = 0

    # the ledger's thread: heads and checkpoints ----------------------------------------------------
    def load(self, latest: Checkpoint | None, *, size: int) -> None:
        """At start: the latest stored checkpoint is this node's final one."""
        if latest is None:
            return
        with self._link.lock:
            self._final, self._final_bytes = latest, latest.encode()
        self._pool.offer_final(latest)
        if latest.head.size == size:
            self.appended(latest.head, None)

    def appended(self, head: TreeHead, rnd: int | None) -> None:
        """After an append (of round ``rnd``'s entries): remember the head, and cosign it if registered."""
        self._pool.record(head, due=rnd is not None and self._due(rnd))
        replica = self._link.replica
        if replica is None or self._link.me not in replica.state.members():
            return
        mine = cosign_head(head, member=self._link.me, key=self._link.key)
        self._own[head.size] = mine.cosignature.signature
        for size in sorted(self._own)[:-_KEEP]:
            del self._own[size]
        with self._link.lock:
            self._cosigned = mine.encode()
        self._gather(mine, own=True)

    def _gather(self, item: CosignedHead, *, own: bool = False) -> None:
        replica = self._link.replica
        if replica is None or self._link.alarm is not None:
            return
        membership = replica.membership(item.head.size)  # the members registered at the head's size
        final = self._pool.add(
            item, registry=membership.members, coordinator=self._link.coordinator, quorum=membership.quorum, own=own
        )
        if final is not None:
            self._store(final)

    def _store(self, checkpoint: Checkpoint, data: bytes = b"") -> None:
        """Store a checkpoint whose cosignatures were checked here (a fork raises); ``data``: its encoding,
        when it came from another node (logged at debug level: the node that made it logs it)."""
        replica = self._link.replica
        assert replica is not None
        stored = replica.accept_final(checkpoint, cosignatures_checked=True)
        with self._link.lock:
            if self._final is None or checkpoint.head.size > self._final.head.size:
                self._final, self._final_bytes = checkpoint, data or checkpoint.encode()
            self._link.lock.notify_all()
        self._pool.offer_final(checkpoint)
        if stored:
            log.log(
                logging.DEBUG if data else logging.INFO,
                "ledger: checkpoint of %d entries is final (signed by %s, %d cosigners)",
                checkpoint.head.size,
                checkpoint.signer,
                len(checkpoint.cosignatures),
            )

    def take(self, data: bytes, *, source: str) -> None:
        """Check and store a final checkpoint that came from ``source`` (with its commit, or in its reply).

        A bad checkpoint is logged and ignored; one that contradicts the local log raises the alarm.
        """
        if data == self._final_bytes or self._link.replica is None or self._link.alarm is not None:
            return
        try:
            checkpoint = Checkpoint.decode(data)
            if checkpoint.head.size > self._link.store.size:
                return  # beyond this log: compared, not stored, when this node catches up
            if self._final is not None and checkpoint.head.size <= self._final.head.size:
                return self._link.replica.receive_checkpoint(checkpoint)  # no newer: still checked for a fork
            self._check(checkpoint)
            self._store(checkpoint, data)
        except ForkDetected as exc:
            self._link.raise_alarm(exc)
        except VerificationError as exc:
            log.warning("ledger: the checkpoint from %s is refused: %s", source, exc)

    def _check(self, checkpoint: Checkpoint) -> None:
        """The signer is the coordinator or a member with its manifest key; every cosignature is by a
        registered member with its registered key and verifies (this node's own is not verified again)."""
        link, replica = self._link, self._link.replica
        assert replica is not None
        size = checkpoint.head.size
        where = f"checkpoint of size {size}"
        coordinator = link.coordinator.name if link.coordinator is not None else None
        if checkpoint.signer != coordinator and link.keys().get(checkpoint.signer) != checkpoint.key:
            raise VerificationError(f"{where}: signed by {checkpoint.signer} with a key the manifest does not list")
        registry, message = replica.membership(size).members, checkpoint.head.encode()
        names, batch = [], []
        for cosignature in checkpoint.cosignatures:
            if registry.get(cosignature.member) != cosignature.key:
                raise VerificationError(f"{where}: cosignature by {cosignature.member}, not a registered member's key")
            if cosignature.member == link.me and self._own.get(size) == cosignature.signature:
                continue
            names.append(cosignature.member)
            batch.append((cosignature.key, message, cosignature.signature))
        try:
            verify_signatures(batch)
        except BatchVerificationError as exc:
            raise VerificationError(f"{where}: cosignature by {names[exc.index]}: {exc}") from None

    # any thread -----------------------------------------------------------------------------------
    def note(self, data: bytes, *, sender: str, wait: bool = False) -> None:
        """Gather a member's cosigned head (a quorum makes a final checkpoint); bad ones are logged.

        The work is queued on the ledger's thread; ``wait``: return only once it is done.
        """

        def run() -> None:
            if self._last.get(sender) == data or (sender == self._link.me and data == self.cosignature()):
                return  # the same cosignature again (after the commit, then with the next update), or its own
            try:
                item = CosignedHead.decode(data)
                if item.cosignature.member != sender:
                    raise VerificationError(f"{sender} sent a cosignature by {item.cosignature.member}")
                self._gather(item)
                self._last[sender] = data
            except ForkDetected as exc:
                self._link.raise_alarm(exc)
            except VerificationError as exc:
                log.warning("ledger: cosignature from %s refused: %s", sender, exc)

        future = self._link.submit(run)
        if wait and future is not None:
            future.result()

    def cosignature(self) -> bytes:
        """This member's cosignature of its latest head (empty before the first)."""
        with self._link.lock:
            return self._cosigned

    def latest_final(self) -> Checkpoint | None:
        """The largest final checkpoint this node holds."""
        with self._link.lock:
            return self._final

    def commit_checkpoint(self) -> bytes:
        """The latest final checkpoint for this node's next commit, if it did not send it yet."""
        with self._link.lock:
            final = self._final
            if final is None or final.head.size <= self._sent_final:
                return b""
            self._sent_final = final.head.size
            return self._final_bytes

    def wait_final(self, size: int, timeout: float) -> Checkpoint | None:
        """Wait up to ``timeout`` seconds for a final checkpoint of at least ``size`` entries."""
        lock = self._link.lock
        with lock:
            lock.wait_for(
                lambda: self._link.alarm is not None or (self._final is not None and self._final.head.size >= size),
                timeout=max(0.0, timeout),
            )
            return self._final
