"""Ledgers compared between nodes over ``Peer.Checkpoint``: fork detection, finality, catching up.

One RPC carries every ledger exchange that is not part of a round's own messages. A request states the
caller's view (size, root, latest final checkpoint, its cosignature of its head) and may ask for more; the
reply states the callee's view with a consistency proof from the caller's size, and what was asked:

* **comparing** (:meth:`LedgerPeers.compare`): each side checks the other's view against its own replica
  (equal roots at the smaller size, or a valid consistency proof); a mismatch is a fork, and the node
  raises the alarm naming the peer. Nodes compare with every peer when they start (so a replica edited
  while its node was down is caught), and with one peer in turn every ``GOSSIP_SECONDS`` after that.
* **the last round's checkpoint** (:meth:`LedgerPeers.request_final`): members cosign the head after each
  commit and send the cosignature with their next update; after the job's last round there is no next
  update, so each member sends it in a call that waits until the leader has a final checkpoint.
* **catching up** (:meth:`LedgerPeers.sync`): a node whose ledger is shorter than a peer's fetches the
  records it lacks (and the models they name), checks their signatures and rules, and appends them.
* **asking for a signature** (:meth:`LedgerPeers.ask_to_sign`): a leader asks a member to sign an entry
  of its own for the round's block: its update statement again at the position it has there, or (a
  leader not registered yet) the admission of a new member.

The replica's side of each exchange is in :mod:`fedswarm.node.ledger_views`.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

from fedswarm.core.errors import FedswarmError, VerificationError
from fedswarm.ledger.checkpoint import CosignedHead
from fedswarm.ledger.entries import Entry, EntryError, MemberAdmitted
from fedswarm.node.ledger_views import catch_up, compare_view, missing_models, reply_view, request_view
from fedswarm.node.ledgerlink import LedgerLink, parse_records
from fedswarm.node.network import Network
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.client import PeerError
from fedswarm.transport.envelope import MessageRefused

__all__ = ["GOSSIP_SECONDS", "LedgerPeers", "sign_asked"]

log = logging.getLogger("fedswarm.node")

GOSSIP_SECONDS = 30.0
"""Seconds between two comparisons with a peer, once every peer was compared with at start."""

_PAGE = 1024
"""Records asked for per catch-up call."""


def sign_asked(link: LedgerLink, data: bytes) -> bytes:
    """Sign an entry a leader asks this member to sign, if it is one this member would write: its own update
    statement at another position, or an admission (returns the signed record).

    Raises
    ------
    VerificationError
        The bytes are not an entry, or not one this member signs.
    """
    try:
        entry = Entry.decode(bytes(data))
    except EntryError as exc:
        raise VerificationError(f"entry to sign: {exc}") from None
    if isinstance(entry.body, MemberAdmitted):
        return link.blocks.sign_admission(entry)
    return link.statements.sign_again(entry)


class LedgerPeers:
    """The ledger side of a node's conversations with its peers.

    Parameters
    ----------
    link
        The node's replica.
    network
        Channels to the peers and envelope sealing.
    peers
        The other current members, now.
    """

    def __init__(self, link: LedgerLink, network: Network, *, peers: Callable[[], list[str]]) -> None:
        self.link = link
        self.network = network
        self.peers = peers
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Compare with every peer now (retrying unreachable ones for a while), then one in turn."""
        self._spawn(self._gossip, "ledger-gossip")

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop gossiping and wait (up to ``timeout`` seconds) for the calls in flight."""
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=timeout)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        def run() -> None:
            try:
                target()
            except RuntimeError:  # the ledger or the network closed under it: the node is stopping
                if not self._stop.is_set():
                    raise

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _gossip(self) -> None:
        settings = self.network.settings
        pending = list(self.peers())
        waited = 0.0
        while pending and not self._stop.is_set() and self.link.alarm is None:
            pending = [p for p in pending if not self.compare(p)]
            if not pending or waited >= settings.gather_timeout:
                break
            self._stop.wait(1.0)
            waited += 1.0
        for turn in itertools.count():
            if self._stop.wait(GOSSIP_SECONDS) or self.link.alarm is not None:
                return
            peers = self.peers()
            if peers:
                self.compare(peers[turn % len(peers)])

    # calls ----------------------------------------------------------------------------------------
    def _call(self, peer: str, request: pb.CheckpointRequest, *, timeout: float) -> pb.CheckpointReply:
        envelope = self.network.seal(request, round=0)
        return self.network.client(peer).checkpoint(envelope, timeout=timeout)

    def compare(self, peer: str, *, sync: bool = True) -> bool:
        """Compare ledgers with ``peer`` (and catch up from it if it is ahead); ``False`` if unreachable."""
        request = request_view(self.link)
        try:
            reply = self._call(peer, request, timeout=self.network.settings.rpc_timeout)
        except (PeerError, KeyError) as exc:
            log.debug("ledger: cannot compare with %s: %s", peer, exc)
            return False
        self.network.mark(peer, ok=True)
        self._check(peer, request, reply)
        if sync and self.link.alarm is None and reply.size > self.link.size:
            try:
                self.sync(peer)
            except VerificationError as exc:
                log.warning("ledger: catching up from %s failed: %s", peer, exc)
        return True

    def _check(self, peer: str, request: pb.CheckpointRequest, reply: pb.CheckpointReply) -> None:
        compare_view(
            self.link, peer, int(reply.size), bytes(reply.root), proof=list(reply.consistency),
            base=int(request.size), checkpoint=bytes(reply.checkpoint),
        )  # fmt: skip

    def request_final(self, leader: str) -> None:
        """Send this member's cosignature of the last round's head to ``leader`` and store the final
        checkpoint it answers with (in the background)."""

        def run() -> None:
            request = request_view(self.link, cosign=True, wait_final=True)
            try:
                reply = self._call(leader, request, timeout=self.network.settings.rpc_timeout + 10.0)
            except (PeerError, KeyError) as exc:
                log.warning("ledger: the last round's checkpoint from %s: %s", leader, exc)
                return
            self._check(leader, request, reply)

        self._spawn(run, "ledger-final")

    def sync(self, peer: str, *, upto: int | None = None) -> None:
        """Fetch, check and append the records ``peer`` has beyond this ledger (up to ``upto`` entries).

        Raises
        ------
        VerificationError
            A record or a model it names is bad (what came before it stays appended).
        """
        while not self._stop.is_set():
            size = self.link.size
            if upto is not None and size >= upto:
                return
            want = _PAGE if upto is None else min(_PAGE, upto - size)
            request = request_view(self.link, records_from=size, max_records=want)
            try:
                reply = self._call(peer, request, timeout=max(30.0, self.network.settings.rpc_timeout))
            except (PeerError, KeyError) as exc:
                raise VerificationError(f"ledger: cannot fetch entries {size}.. from {peer}: {exc}") from None
            records = list(reply.records)
            if not records:
                return
            items = parse_records(records, f"records from {peer}")
            for digest in self.link.run(lambda: missing_models(self.link, items)):  # noqa: B023 (run at once)
                self._fetch_object(peer, digest)
            catch_up(self.link, items, peer=peer)
            log.info("ledger: appended entries %d..%d from %s", size, size + len(records) - 1, peer)
            if size + len(records) >= reply.size:
                self._check(peer, request, reply)
                return

    def _fetch_object(self, peer: str, digest: str) -> None:
        settings = self.network.settings
        envelope = self.network.seal(pb.FetchRequest(digest=digest), round=0)
        try:
            data = self.network.client(peer).fetch(
                envelope, digest=digest, limit=settings.max_model_bytes, timeout=max(60.0, settings.rpc_timeout)
            )
        except (PeerError, MessageRefused, KeyError) as exc:
            raise VerificationError(f"ledger: cannot fetch model {digest[:16]} from {peer}: {exc}") from None
        self.link.put_object(bytes(data))

    def ask_to_sign(self, member: str, entry: bytes) -> bytes:
        """Ask ``member`` to sign ``entry``, an entry of its own (its statement at the position it now names,
        or an admission); returns the signed record.

        Raises
        ------
        VerificationError
            The member could not be reached or refused.
        """
        request = request_view(self.link)
        request.renumber = entry
        try:
            reply = self._call(member, request, timeout=self.network.settings.rpc_timeout)
        except (PeerError, KeyError) as exc:
            raise VerificationError(f"ledger: {member} did not sign entry: {exc}") from None
        return bytes(reply.record)

    # serving --------------------------------------------------------------------------------------
    def serve(self, sender: str, request: pb.CheckpointRequest, *, wait: float | None) -> pb.CheckpointReply:
        """Answer a peer's ``Checkpoint`` call.

        Raises
        ------
        MessageRefused
            A renumbered entry this node does not sign.
        """
        link = self.link
        record = b""
        if request.renumber:
            try:
                record = sign_asked(link, request.renumber)
            except FedswarmError as exc:
                raise MessageRefused("unexpected", f"{link.me} does not sign the entry: {exc}") from None
        if request.cosignature:
            link.witness.note(request.cosignature, sender=sender)
        if len(request.root) == 32 and request.size <= link.size:
            # a fork raises the alarm here; the reply still goes out, so that the peer sees it too
            compare_view(link, sender, int(request.size), bytes(request.root), checkpoint=bytes(request.checkpoint))
        if request.wait_final and request.cosignature:
            try:
                size = CosignedHead.decode(request.cosignature).head.size
            except VerificationError:
                size = 0
            link.witness.wait_final(size, min(10.0, wait if wait is not None else 10.0))
        settings = self.network.settings
        reply = reply_view(link, request, max_bytes=max(1 << 16, settings.max_message_bytes // 2))
        reply.record = record
        return reply
