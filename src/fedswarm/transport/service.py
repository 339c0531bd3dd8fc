"""The server side of ``fedswarm.v1.Peer``: authenticate, verify, then hand over to the node.

:class:`PeerService` owns no state of its own: for every call it authenticates the TLS peer
(:class:`~fedswarm.transport.tls.PeerAuthenticator`), verifies the envelope
(:class:`~fedswarm.transport.envelope.EnvelopeVerifier`), receives streamed bytes with bounded memory
(:class:`~fedswarm.transport.blobs.BlobReceiver`) or checks inline ones
(:func:`~fedswarm.transport.blobs.check_inline`), and calls a :class:`PeerHandler` (the node daemon).
Every refusal is reported to :meth:`PeerHandler.on_refused` (which logs it with the reason) and answered
with a gRPC status whose details carry the reason.

:class:`AuthInterceptor` applies the certificate check to every service on the server, the standard
health service included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2_grpc as pb_grpc
from fedswarm.transport.blobs import BlobReceiver, check_inline
from fedswarm.transport.envelope import EnvelopeVerifier, MessageRefused, RefusalReason, RoundCheck, Verified, open_body
from fedswarm.transport.tls import PeerAuthenticator

__all__ = ["Assignment", "AuthInterceptor", "PeerHandler", "PeerService", "status_code"]

T = TypeVar("T")

_CODES: dict[RefusalReason, grpc.StatusCode] = {
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "malformed": grpc.StatusCode.INVALID_ARGUMENT,
    "oversized": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "wrong-round": grpc.StatusCode.FAILED_PRECONDITION,
    "unexpected": grpc.StatusCode.FAILED_PRECONDITION,
    "digest-mismatch": grpc.StatusCode.DATA_LOSS,
}


def status_code(reason: RefusalReason) -> grpc.StatusCode:
    """The gRPC status a refusal is answered with (``PERMISSION_DENIED`` unless listed otherwise)."""
    return _CODES.get(reason, grpc.StatusCode.PERMISSION_DENIED)


@dataclass(frozen=True, slots=True)
class Assignment:
    """A verified assignment: its envelope, its body, and the model's bytes if they came inline (checked)."""

    message: Verified
    body: pb.Assign
    model: bytes | None


class PeerHandler(Protocol):
    """What a node does with verified messages. Methods raise :class:`MessageRefused` to refuse."""

    def round_check(self, kind: str) -> RoundCheck | None:
        """The round check for messages of ``kind`` (``"assign"``, ``"update"``, ...), or ``None``."""
        ...

    def on_assign(self, assignment: Assignment) -> str: ...

    def update_limit(self, message: Verified, header: pb.UpdateHeader) -> int:
        """Check an update header before its bytes are read; return the size limit for them."""
        ...

    def on_update(
        self, message: Verified, header: pb.UpdateHeader, data: bytes | bytearray | None, *, wait: float | None
    ) -> pb.Ack:
        """An update (``data``; ``None`` for a dropout report). The reply may carry the next message to the
        sender if it is ready within ``wait`` seconds (``None``: the call has no deadline)."""
        ...

    def on_evaluation(self, message: Verified, body: pb.EvaluationReport, *, wait: float | None) -> pb.Ack:
        """An evaluation report; the reply may carry the next message to the sender, as for an update."""
        ...

    def on_commit(
        self, message: Verified, body: pb.Commit, model: bytes | None, state: bytes | None, next: Assignment | None
    ) -> str | pb.Ack:
        """A commit; ``model`` and ``state``: their bytes if they came inline (checked against the body);
        ``next``: the sender's assignment of the following round that came with it, to handle after it.
        Returns the reply's detail, or the whole reply (with the node's ledger cosignature)."""
        ...

    def on_checkpoint(self, message: Verified, body: pb.CheckpointRequest, *, wait: float | None) -> pb.CheckpointReply:
        """A peer's ledger view; the reply is this node's (``wait``: how long the call may wait for a
        final checkpoint when the request asks for one)."""
        ...

    def open_blob(self, digest: str) -> tuple[int, Iterator[bytes]] | None:
        """Size and chunks of a stored blob, or ``None`` if this node does not have it."""
        ...

    def on_status(self, message: Verified, body: pb.StatusRequest) -> pb.NodeStatus: ...

    def on_refused(self, method: str, peer: str | None, refusal: MessageRefused) -> None: ...


class PeerService(pb_grpc.PeerServicer):
    """The ``fedswarm.v1.Peer`` servicer."""

    def __init__(self, handler: PeerHandler, *, verifier: EnvelopeVerifier, authenticator: PeerAuthenticator) -> None:
        self.handler = handler
        self.verifier = verifier
        self.authenticator = authenticator

    # plumbing -------------------------------------------------------------------------------------
    def _refuse(
        self, method: str, peer: str | None, refusal: MessageRefused, context: grpc.ServicerContext
    ) -> NoReturn:
        self.handler.on_refused(method, peer, refusal)
        context.abort(status_code(refusal.reason), str(refusal))
        raise AssertionError("unreachable")  # pragma: no cover - abort raises

    def _guard(self, method: str, context: grpc.ServicerContext, fn: Callable[[str], T]) -> T:
        peer: str | None = None
        try:
            peer = getattr(context, "authenticated_peer", None)  # set by AuthInterceptor on this very call
            if peer is None:
                peer = self.authenticator.authenticate(context.auth_context())
            return fn(peer)
        except MessageRefused as refusal:
            self._refuse(method, peer, refusal, context)

    @staticmethod
    def _wait(context: grpc.ServicerContext) -> float | None:
        """How long a delivery call can wait for the next message: its deadline less a margin for the reply."""
        remaining: float | None = context.time_remaining()  # None: no deadline
        if remaining is None:
            return None
        return max(0.0, remaining - min(2.0, 0.25 * remaining))

    def _verify(self, envelope: pb.Envelope, peer: str, kind: str) -> Verified:
        return self.verifier.verify(envelope, peer=peer, round_check=self.handler.round_check(kind))

    def _assignment(self, request: pb.AssignRequest, peer: str, *, after: int | None = None) -> Assignment:
        """Verify an assignment; ``after``: it came with the commit of that round, so it must be for the next."""
        if after is None:
            verified = self._verify(request.assign, peer, "assign")
        else:

            def follows(rnd: int) -> str | None:
                return None if rnd == after + 1 else f"round {rnd} does not follow the commit of round {after}"

            verified = self.verifier.verify(request.assign, peer=peer, round_check=follows)
        body = open_body(request.assign, pb.Assign)
        model = None
        if request.model:
            what = f"model inline in the assignment of round {verified.round} from {peer}"
            model = check_inline(request.model, digest=body.model_digest, size=body.model_size, what=what)
        return Assignment(verified, body, model)

    # RPCs -----------------------------------------------------------------------------------------
    def Assign(self, request: pb.AssignRequest, context: grpc.ServicerContext) -> pb.Ack:  # noqa: N802 - gRPC method name
        def run(peer: str) -> pb.Ack:
            return pb.Ack(detail=self.handler.on_assign(self._assignment(request, peer)))

        return self._guard("Assign", context, run)

    def SubmitEvaluation(self, request: pb.Envelope, context: grpc.ServicerContext) -> pb.Ack:  # noqa: N802 - gRPC method name
        def run(peer: str) -> pb.Ack:
            verified = self._verify(request, peer, "evaluation")
            body = open_body(request, pb.EvaluationReport)
            return self.handler.on_evaluation(verified, body, wait=self._wait(context))

        return self._guard("SubmitEvaluation", context, run)

    def Commit(self, request: pb.CommitRequest, context: grpc.ServicerContext) -> pb.Ack:  # noqa: N802 - gRPC method name
        return self._guard("Commit", context, lambda peer: self._commit(request, peer))

    def Checkpoint(self, request: pb.Envelope, context: grpc.ServicerContext) -> pb.CheckpointReply:  # noqa: N802 - gRPC method name
        def run(peer: str) -> pb.CheckpointReply:
            verified = self._verify(request, peer, "checkpoint")
            return self.handler.on_checkpoint(
                verified, open_body(request, pb.CheckpointRequest), wait=self._wait(context)
            )

        return self._guard("Checkpoint", context, run)

    def accept_reply(self, peer: str, reply: pb.Ack) -> None:
        """Handle the message a reply from ``peer`` carries (see ``Ack``), as if ``peer`` had called with it.

        ``peer`` is the member this node called: the channel's TLS checks established its identity.

        Raises
        ------
        MessageRefused
            The message was refused (and reported to the handler like any refusal).
        """
        method = "Commit (in a reply)" if reply.HasField("commit") else "Assign (in a reply)"
        try:
            if reply.HasField("commit"):
                self._commit(reply.commit, peer)
            elif reply.HasField("assign"):
                self.handler.on_assign(self._assignment(reply.assign, peer))
        except MessageRefused as refusal:
            self.handler.on_refused(method, peer, refusal)
            raise

    def _commit(self, request: pb.CommitRequest, peer: str) -> pb.Ack:
        verified = self._verify(request.commit, peer, "commit")
        body = open_body(request.commit, pb.Commit)
        model = state = None
        what = f"inline in the commit of round {verified.round} from {peer}"
        if request.model:
            model = check_inline(request.model, digest=body.model_digest, size=body.model_size, what=f"model {what}")
        if request.state:
            state = check_inline(request.state, digest=body.state_digest, size=body.state_size, what=f"state {what}")
        following = None
        if request.HasField("next"):
            following = self._assignment(request.next, peer, after=verified.round)
        result = self.handler.on_commit(verified, body, model, state, following)
        return result if isinstance(result, pb.Ack) else pb.Ack(detail=result)

    def Status(self, request: pb.Envelope, context: grpc.ServicerContext) -> pb.NodeStatus:  # noqa: N802 - gRPC method name
        def run(peer: str) -> pb.NodeStatus:
            verified = self._verify(request, peer, "status")
            return self.handler.on_status(verified, open_body(request, pb.StatusRequest))

        return self._guard("Status", context, run)

    def SubmitUpdate(self, request_iterator: Iterator[pb.UploadPart], context: grpc.ServicerContext) -> pb.Ack:  # noqa: N802 - gRPC method name
        def run(peer: str) -> pb.Ack:
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("part") != "header":
                raise MessageRefused("malformed", f"update stream from {peer!r} does not start with a signed header")
            verified = self._verify(first.header, peer, "update")
            header = open_body(first.header, pb.UpdateHeader)
            limit = self.handler.update_limit(verified, header)
            if header.dropout:
                if next(request_iterator, None) is not None:
                    raise MessageRefused("malformed", f"dropout report from {peer!r} carries data")
                return self.handler.on_update(verified, header, None, wait=self._wait(context))
            receiver = BlobReceiver(
                digest=header.update_digest,
                size=header.update_size,
                limit=limit,
                what=f"update from {peer} for round {verified.round}",
            )
            for part in request_iterator:
                if part.WhichOneof("part") != "data":
                    raise MessageRefused("malformed", f"update stream from {peer!r} carries a second header")
                receiver.feed(part.data)
            return self.handler.on_update(verified, header, receiver.finish(), wait=self._wait(context))

        return self._guard("SubmitUpdate", context, run)

    def SubmitUpdateInline(self, request: pb.InlineUpdate, context: grpc.ServicerContext) -> pb.Ack:  # noqa: N802 - gRPC method name
        def run(peer: str) -> pb.Ack:
            verified = self._verify(request.header, peer, "update")
            header = open_body(request.header, pb.UpdateHeader)
            self.handler.update_limit(verified, header)  # the size limit and the open round, as for a stream
            if header.dropout:
                if request.data:
                    raise MessageRefused("malformed", f"dropout report from {peer!r} carries data")
                return self.handler.on_update(verified, header, None, wait=self._wait(context))
            what = f"update from {peer} for round {verified.round}"
            data = check_inline(request.data, digest=header.update_digest, size=header.update_size, what=what)
            return self.handler.on_update(verified, header, data, wait=self._wait(context))

        return self._guard("SubmitUpdateInline", context, run)

    def Fetch(self, request: pb.Envelope, context: grpc.ServicerContext) -> Iterator[pb.BlobPart]:  # noqa: N802 - gRPC method name
        def run(peer: str) -> tuple[int, Iterator[bytes], str]:
            self._verify(request, peer, "fetch")
            digest = open_body(request, pb.FetchRequest).digest
            found = self.handler.open_blob(digest)
            if found is None:
                raise MessageRefused(
                    "unexpected", f"{peer!r} asked for blob {digest[:16]}, which this node does not have"
                )
            return found[0], found[1], digest

        size, chunks, digest = self._guard("Fetch", context, run)
        yield pb.BlobPart(header=pb.BlobHeader(digest=digest, size=size))
        for chunk in chunks:
            yield pb.BlobPart(data=chunk)


# --------------------------------------------------------------------------------- interceptor


class _Authenticated:
    """A call context that also names the peer :class:`AuthInterceptor` authenticated for this call."""

    def __init__(self, context: grpc.ServicerContext, peer: str) -> None:
        self._context = context
        self.authenticated_peer = peer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _guarded(fn: Callable[[Any, Any], T], check: Callable[[grpc.ServicerContext], str]) -> Any:
    def wrapper(request: Any, context: grpc.ServicerContext) -> T:
        return fn(request, _Authenticated(context, check(context)))

    return wrapper


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses, on every service, a call whose client certificate fails :class:`PeerAuthenticator`.

    The handler gets a context that names the authenticated peer, so :class:`PeerService` does not read
    and check the certificate a second time.
    """

    def __init__(self, authenticator: PeerAuthenticator, *, on_refused: Callable[[str, MessageRefused], None]) -> None:
        self.authenticator = authenticator
        self.on_refused = on_refused

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = str(details.method)

        def check(context: grpc.ServicerContext) -> str:
            try:
                return self.authenticator.authenticate(context.auth_context())
            except MessageRefused as refusal:
                self.on_refused(method, refusal)
                context.abort(status_code(refusal.reason), str(refusal))
                raise AssertionError("unreachable") from None  # pragma: no cover - abort raises

        kwargs: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(_guarded(handler.unary_unary, check), **kwargs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(_guarded(handler.unary_stream, check), **kwargs)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(_guarded(handler.stream_unary, check), **kwargs)
        return grpc.stream_stream_rpc_method_handler(_guarded(handler.stream_stream, check), **kwargs)
