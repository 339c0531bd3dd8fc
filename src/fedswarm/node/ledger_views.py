"""A replica's side of ``Peer.Checkpoint``: the view it states and answers with, the check of a peer's
view, and catching up from a peer's records.

A view is a node's size, root and latest final checkpoint (and, when asked, its cosignature of its head,
a consistency proof from the other side's size, and records to catch up with). :mod:`fedswarm.node.ledger_peers`
makes and serves the calls; these functions read, check and extend the replica on the ledger's thread, so
no network call ever runs there. Catching up appends a peer's records after checking their signatures (in
one batch) and rules, with the models they name stored first; updates are never fetched (they stay with
the nodes they were sent to).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.entries import FederationCreated, SignedEntry
from fedswarm.ledger.replica import ForkDetected
from fedswarm.node.ledger_block import check_creation, check_founder
from fedswarm.node.ledgerlink import LedgerLink
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb

__all__ = ["catch_up", "compare_view", "missing_models", "reply_view", "request_view"]

log = logging.getLogger("fedswarm.node")


def request_view(
    link: LedgerLink, *, cosign: bool = False, wait_final: bool = False, records_from: int = 0, max_records: int = 0
) -> pb.CheckpointRequest:
    """This node's view of the ledger, for a ``Checkpoint`` call (``cosign``: with its cosignature)."""
    final = link.witness.latest_final()
    cosignature = link.witness.cosignature() if cosign else b""

    def run() -> pb.CheckpointRequest:
        return pb.CheckpointRequest(
            checkpoint=final.encode() if final is not None else b"",
            size=link.store.size,
            root=link.reported_root or link.store.root(),
            cosignature=cosignature,
            wait_final=wait_final,
            records_from=records_from,
            max_records=max_records,
        )

    return link.run(run)


def reply_view(link: LedgerLink, request: pb.CheckpointRequest, *, max_bytes: int) -> pb.CheckpointReply:
    """This node's answer to a peer's view: its checkpoint, size, root, a consistency proof and records."""
    final = link.witness.latest_final()
    cosignature = link.witness.cosignature()

    def run() -> pb.CheckpointReply:
        store = link.store
        out = pb.CheckpointReply(
            checkpoint=final.encode() if final is not None else b"",
            size=store.size,
            root=link.reported_root or store.root(),
            cosignature=cosignature,
        )
        if link.reported_root is None and 0 < request.size < store.size:
            out.consistency.extend(store.consistency_proof(int(request.size)))
        if request.max_records and request.records_from < store.size:
            stop = min(store.size, int(request.records_from) + int(request.max_records))
            budget = max_bytes
            for _, record in store.records(int(request.records_from), stop):
                budget -= len(record) + 8
                if budget < 0 and out.records:
                    break
                out.records.append(record)
        return out

    return link.run(run)


def compare_view(
    link: LedgerLink,
    peer: str,
    size: int,
    root: bytes,
    *,
    proof: Sequence[bytes] = (),
    base: int | None = None,
    checkpoint: bytes = b"",
) -> None:
    """Check a peer's account of its log and its final checkpoint against this replica.

    A peer that holds another history raises the alarm (the replica halts); a checkpoint that does not
    verify is logged and ignored. ``base`` is the size this node announced when it asked (the start of
    ``proof``).
    """
    if link.alarm is not None:
        return

    def run() -> None:
        if link.replica is None:
            if link.store.size == 0:
                return
            raise VerificationError("this ledger does not replay")
        link.replica.check_peer(peer, size, root, proof=proof, base=base)
        if checkpoint:
            link.witness.take(checkpoint, source=peer)

    try:
        link.run(run)
    except ForkDetected as exc:
        link.raise_alarm(exc)
    except VerificationError as exc:
        log.warning("ledger: %s's view refused: %s", peer, exc)


def missing_models(link: LedgerLink, records: Sequence[SignedEntry]) -> list[str]:
    """Digests of the models ``records`` name that the ledger does not store yet (on the ledger's thread)."""
    out = []
    for item in records:
        body = item.entry.body
        digest = getattr(body, "model", None) if item.entry.kind == "aggregate_committed" else None
        if isinstance(body, FederationCreated):
            digest = body.initial_model
        if digest is not None and not link.store.objects.has(digest) and digest not in out:
            out.append(digest)
    return out


def catch_up(link: LedgerLink, items: Sequence[SignedEntry], *, peer: str | None = None) -> None:
    """Append records a peer sent (``items``: parsed; the models they name must be stored first).

    The records are checked as a commit's entries are: their signatures (in one batch), the admissions
    against this node's manifest (:meth:`~fedswarm.node.ledgerlink.LedgerLink.check_admissions`), entry 0
    against the founding members, and the rules of the history; the replica writes them in one transaction
    only if every record passes.

    Parameters
    ----------
    link
        This node's replica.
    items
        The peer's records from at most this ledger's size on: records it already holds (another catch-up
        or a commit appended them since they were asked for) must be byte for byte the local ones and are
        skipped.
    peer
        Who sent them, named in a refusal (``None``: "a peer").

    Raises
    ------
    VerificationError
        A record is bad or a model it names is missing (an admission refused names the entry, the member and
        ``peer``); nothing is written.
    """
    link.check_running()
    source = f"from {peer}" if peer is not None else "from a peer"

    def run() -> None:
        fresh = _beyond_held(link, items, source=source)
        if not fresh:
            return
        _append_checked(link, fresh, source=source)

    link.run(run)


def _beyond_held(link: LedgerLink, items: Sequence[SignedEntry], *, source: str) -> Sequence[SignedEntry]:
    """``items`` without the records this ledger already holds (another catch-up, or a commit, may have
    appended them since they were requested), after checking those are byte for byte the local ones."""
    if not items:
        return items
    held, start = link.store.size, items[0].entry.seq
    if start > held:
        raise VerificationError(f"records from {start} on do not continue this ledger of {held} entries")
    for seq, item in enumerate(items[: held - start], start=start):
        if link.store.record(seq) != item.record:
            raise VerificationError(f"record {seq} {source} differs from the one this ledger holds")
    return items[held - start :]


def _append_checked(link: LedgerLink, items: Sequence[SignedEntry], *, source: str) -> None:
    """Check ``items`` (continuing the local log) and append them through the replica, on the ledger's thread."""
    for digest in missing_models(link, items):
        raise VerificationError(f"model {digest[:16]} named by the records is missing")
    link.check_admissions(items, source=source)
    link.verify(items)
    replica = link.replica
    if replica is not None:
        replica.extend(items, signatures_checked=True)
        return
    first = items[0]
    founder = check_founder(first.entry, link.genesis.founder_keys())
    check_creation(first, founder, expected=link.creation())
    try:
        link.install(first.entry).extend(items, signatures_checked=True)
    except VerificationError:
        link.replica = link.coordinator = None  # nothing was written: the ledger is still empty
        raise
