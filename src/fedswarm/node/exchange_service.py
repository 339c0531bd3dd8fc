"""The node's ``Peer`` servicer: the transport's, plus the request of an extension exchange that came inline.

An extension exchange's request (``Assign.work = WORK_EXCHANGE``) travels in ``AssignRequest.payload``
when it is small, next to the signed assignment that announces its digest and size, exactly like a small
model in ``AssignRequest.model``. :class:`ExchangePeerService` checks those bytes against the signed
announcement (:func:`~fedswarm.transport.blobs.check_inline`) wherever an assignment arrives (a call, a
commit's ``next``, a reply's ``assign``) and hands them to the node in :class:`ExchangeAssignment`; a
payload on any other work is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.blobs import check_inline
from fedswarm.transport.envelope import MessageRefused
from fedswarm.transport.service import Assignment, PeerService

__all__ = ["ExchangeAssignment", "ExchangePeerService", "payload_of"]


@dataclass(frozen=True, slots=True)
class ExchangeAssignment(Assignment):
    """A verified assignment whose exchange request came inline (checked against the signed digest and size)."""

    payload: bytes | None = None


def payload_of(assignment: Assignment) -> bytes | None:
    """The checked inline request of an exchange assignment, or ``None`` (to be fetched by digest)."""
    return assignment.payload if isinstance(assignment, ExchangeAssignment) else None


class ExchangePeerService(PeerService):
    """:class:`~fedswarm.transport.service.PeerService` that also checks and keeps inline exchange requests."""

    def _assignment(self, request: pb.AssignRequest, peer: str, *, after: int | None = None) -> Assignment:
        base = super()._assignment(request, peer, after=after)
        if not request.payload:
            return base
        body = base.body
        if body.work != pb.WORK_EXCHANGE:
            raise MessageRefused("malformed", f"assignment of round {base.message.round} from {peer} carries a "
                                 "payload but is not an exchange")  # fmt: skip
        what = f"{body.exchange_kind[:40]} request inline in the assignment of round {base.message.round} from {peer}"
        payload = check_inline(request.payload, digest=body.payload_digest, size=body.payload_size, what=what)
        return ExchangeAssignment(base.message, body, base.model, payload)
