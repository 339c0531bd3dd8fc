"""The server side of ``fedswarm.v1.Peer``: authenticate, verify, then hand over to the node.

:class:`PeerService` owns no state of its own: for every call it authenticates the TLS peer
(:class:`~fedswarm.transport.tls.PeerAuthenticator`), verifies the envelope
(:class:`~fedswarm.transport.envelope.EnvelopeVerifier`), receives streamed bytes with bounded memory
(:class:`~fedswarm.transport.blobs.BlobReceiver`), and calls a :class:`PeerHandler` (the node daemon).
Every refusal is reported to :meth:`PeerHandler.on_refused` (which logs it with the reason) and answered
with a gRPC status whose details carry the reason.

:class:`AuthInterceptor` applies the certificate check to every service on the server, the standard
health service included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2_grpc as pb_grpc
from fedswarm.transport.blobs import BlobReceiver
from fedswarm.transport.envelope import EnvelopeVerifier, MessageRefused, RefusalReason, RoundCheck, Verified, open_body
from fedswarm.transport.tls import PeerAuthenticator

__all__ = ["AuthInterceptor", "PeerHandler", "PeerService", "status_code"]

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


class PeerHandler(Protocol):
    """What a node does with verified messages. Methods raise :class:`MessageRefused` to refuse."""

    def round_check(self, kind: str) -> RoundCheck | None:
        """The round check for messages of ``kind`` (``"assign"``, ``"update"``, ...), or ``None``."""
        ...

    def on_assign(self, message: Verified, body: pb.Assign) -> str: ...

    def update_limit(self, message: Verified, header: pb.UpdateHeader) -> int:
        """Check an update header before its bytes are read; return the size limit for them."""
        ...

    def on_update(self, message: Verified, header: pb.UpdateHeader, data: bytearray | None) -> str: ...

    def on_evaluation(self, message: Verified, body: pb.EvaluationReport) -> str: ...

    def on_commit(self, message: Verified, body: pb.Commit) -> str: ...

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
            peer = self.authenticator.authenticate(context.auth_context())
            return fn(peer)
        except MessageRefused as refusal:
            self._refuse(method, peer, refusal, context)

    def _verify(self, envelope: pb.Envelope, peer: str, kind: str) -> Verified:
        return self.verifier.verify(envelope, peer=peer, round_check=self.handler.round_check(kind))

    # RPCs -----------------------------------------------------------------------------------------
    def Assign(self, request: pb.Envelope, context: grpc.ServicerContext) -> pb.Ack:  # noqa: N802 - gRPC method name
        def run(peer: str) -> pb.Ack:
            verified = self._verify(request, peer, "assign")
            return pb.Ack(detail=self.handler.on_assign(verified, open_body(request, pb.Assign)))

        return self._guard("Assign", context, run)

    def SubmitEvaluation(self, request: pb.Envelope, context: grpc.ServicerContext) -> pb.Ack:  # noqa: N802 - gRPC method name
        def run(peer: str) -> pb.Ack:
            verified = self._verify(request, peer, "evaluation")
            return pb.Ack(detail=self.handler.on_evaluation(verified, open_body(request, pb.EvaluationReport)))

        return self._guard("SubmitEvaluation", context, run)

    def Commit(self, request: pb.Envelope, context: grpc.ServicerContext) -> pb.Ack:  # noqa: N802 - gRPC method name
        def run(peer: str) -> pb.Ack:
            verified = self._verify(request, peer, "commit")
            return pb.Ack(detail=self.handler.on_commit(verified, open_body(request, pb.Commit)))

        return self._guard("Commit", context, run)

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
                return pb.Ack(detail=self.handler.on_update(verified, header, None))
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
            return pb.Ack(detail=self.handler.on_update(verified, header, receiver.finish()))

        return self._guard("SubmitUpdate", context, run)

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


def _guarded(fn: Callable[[Any, grpc.ServicerContext], T], check: Callable[[grpc.ServicerContext], None]) -> Any:
    def wrapper(request: Any, context: grpc.ServicerContext) -> T:
        check(context)
        return fn(request, context)

    return wrapper


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses, on every service, a call whose client certificate fails :class:`PeerAuthenticator`."""

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

        def check(context: grpc.ServicerContext) -> None:
            try:
                self.authenticator.authenticate(context.auth_context())
            except MessageRefused as refusal:
                self.on_refused(method, refusal)
                context.abort(status_code(refusal.reason), str(refusal))

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
