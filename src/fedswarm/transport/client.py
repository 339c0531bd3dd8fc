"""The client side of ``fedswarm.v1.Peer``: one mutually authenticated channel per peer.

Every call has a deadline and blocks its caller; a node fans calls out to many peers on its own
persistent pool of threads (:meth:`fedswarm.node.network.Network.call_each`), which costs less per call
than gRPC futures (each burst of those starts a channel thread). Small updates travel in one message
(:meth:`PeerClient.submit_update_inline`). Streams send and receive in chunks; a fetched blob is assembled by a
:class:`~fedswarm.transport.blobs.BlobReceiver` that checks the announced size against the caller's
limit and the digest the caller expected (learned from a signed message), not the one the sender claims.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedswarm.core.errors import FedswarmError
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2_grpc as pb_grpc
from fedswarm.transport.blobs import DEFAULT_CHUNK_BYTES, BlobReceiver, iter_chunks
from fedswarm.transport.envelope import MessageRefused
from fedswarm.transport.tls import TlsMaterial, channel_credentials, channel_options

__all__ = ["PeerClient", "PeerError"]


class PeerError(FedswarmError):
    """A call to a peer failed: unreachable, timed out, or refused (``code`` and ``detail`` say which)."""

    def __init__(self, peer: str, method: str, code: str, detail: str) -> None:
        super().__init__(f"{method} to {peer}: {code}: {detail}")
        self.peer = peer
        self.method = method
        self.code = code
        self.detail = detail

    @classmethod
    def from_rpc(cls, peer: str, method: str, exc: grpc.RpcError) -> PeerError:
        code_fn = getattr(exc, "code", None)
        details_fn = getattr(exc, "details", None)
        code = code_fn() if callable(code_fn) else None
        details = details_fn() if callable(details_fn) else str(exc)
        return cls(peer, method, code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN", str(details or ""))

    @property
    def unreachable(self) -> bool:
        """The peer could not be reached or did not answer in time (as opposed to refusing)."""
        return self.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")


class PeerClient:
    """A channel to member ``name`` at ``address`` (``host:port``), authenticated with ``material``."""

    def __init__(
        self,
        name: str,
        address: str,
        material: TlsMaterial,
        *,
        max_message_bytes: int,
        keepalive_seconds: float,
    ) -> None:
        self.name = name
        self.address = address
        options = channel_options(peer=name, max_message_bytes=max_message_bytes, keepalive_seconds=keepalive_seconds)
        self._channel: grpc.Channel | None = grpc.secure_channel(
            address, channel_credentials(material), options=options
        )
        self._stub: Any = pb_grpc.PeerStub(self._channel)  # type: ignore[no-untyped-call]
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)

    @classmethod
    def with_stubs(cls, name: str, address: str, stub: Any, health: Any) -> PeerClient:
        """A client whose calls go to ``stub`` and ``health`` instead of a channel (see :mod:`.loopback`)."""
        client = cls.__new__(cls)
        client.name, client.address = name, address
        client._channel, client._stub, client._health = None, stub, health
        return client

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()

    def _call(self, method: str, fn: Any, request: Any, timeout: float, *, wait_for_ready: bool = True) -> Any:
        try:
            return fn(request, timeout=timeout, wait_for_ready=wait_for_ready)
        except grpc.RpcError as exc:
            raise PeerError.from_rpc(self.name, method, exc) from None

    # unary ----------------------------------------------------------------------------------------
    def assign(self, request: pb.AssignRequest, *, timeout: float) -> pb.Ack:
        """Send an assignment: its signed envelope, and the model's bytes when they go inline."""
        reply: pb.Ack = self._call("Assign", self._stub.Assign, request, timeout)
        return reply

    def commit(
        self,
        envelope: pb.Envelope,
        *,
        model: bytes = b"",
        state: bytes = b"",
        next: pb.AssignRequest | None = None,
        timeout: float,
    ) -> pb.Ack:
        """Send a commit (with the model's and the state's bytes inline when given, and the next assignment)."""
        request = pb.CommitRequest(commit=envelope, model=model, state=state, next=next)
        reply: pb.Ack = self._call("Commit", self._stub.Commit, request, timeout)
        return reply

    def submit_evaluation(self, envelope: pb.Envelope, *, timeout: float, wait_for_ready: bool = True) -> pb.Ack:
        reply: pb.Ack = self._call(
            "SubmitEvaluation", self._stub.SubmitEvaluation, envelope, timeout, wait_for_ready=wait_for_ready
        )
        return reply

    def submit_update_inline(
        self, header: pb.Envelope, data: bytes | bytearray | None, *, timeout: float, wait_for_ready: bool = True
    ) -> pb.Ack:
        """Send a small update in one message: the signed header and ``data`` (``None`` for a dropout report)."""
        request = pb.InlineUpdate(header=header, data=bytes(data or b""))
        reply: pb.Ack = self._call(
            "SubmitUpdateInline", self._stub.SubmitUpdateInline, request, timeout, wait_for_ready=wait_for_ready
        )
        return reply

    def status(self, envelope: pb.Envelope, *, timeout: float) -> pb.NodeStatus:
        try:
            reply: pb.NodeStatus = self._stub.Status(envelope, timeout=timeout)
        except grpc.RpcError as exc:
            raise PeerError.from_rpc(self.name, "Status", exc) from None
        return reply

    def checkpoint(self, envelope: pb.Envelope, *, timeout: float) -> pb.CheckpointReply:
        """Compare ledgers with the peer (the envelope's body is a ``CheckpointRequest``)."""
        reply: pb.CheckpointReply = self._call("Checkpoint", self._stub.Checkpoint, envelope, timeout)
        return reply

    def healthy(self, *, timeout: float) -> bool:
        """``True`` if the peer's standard health service answers ``SERVING``."""
        try:
            reply = self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    # streams --------------------------------------------------------------------------------------
    def submit_update(
        self,
        header: pb.Envelope,
        data: bytes | bytearray | memoryview | None,
        *,
        timeout: float,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        wait_for_ready: bool = True,
    ) -> pb.Ack:
        """Stream an update: the signed header, then ``data`` in chunks (``None`` for a dropout report)."""

        def parts() -> Iterator[pb.UploadPart]:
            yield pb.UploadPart(header=header)
            if data is not None:
                for chunk in iter_chunks(data, chunk_bytes=chunk_bytes):
                    yield pb.UploadPart(data=chunk)

        reply: pb.Ack = self._call(
            "SubmitUpdate", self._stub.SubmitUpdate, parts(), timeout, wait_for_ready=wait_for_ready
        )
        return reply

    def fetch(self, envelope: pb.Envelope, *, digest: str, limit: int, timeout: float) -> bytearray:
        """Fetch the blob ``digest`` (the envelope's body is a ``FetchRequest`` for it).

        Raises
        ------
        PeerError
            The call failed.
        MessageRefused
            The peer announced another digest, a size above ``limit``, or sent other bytes.
        """
        what = f"blob {digest[:16]} from {self.name}"
        try:
            stream = self._stub.Fetch(envelope, timeout=timeout, wait_for_ready=True)
            first = next(stream, None)
            if first is None or first.WhichOneof("part") != "header":
                raise MessageRefused("malformed", f"{what}: the stream does not start with a header")
            if first.header.digest != digest:
                raise MessageRefused("digest-mismatch", f"{what}: the peer announced {first.header.digest[:16]}")
            receiver = BlobReceiver(digest=digest, size=first.header.size, limit=limit, what=what)
            for part in stream:
                if part.WhichOneof("part") != "data":
                    raise MessageRefused("malformed", f"{what}: a second header in the stream")
                receiver.feed(part.data)
            return receiver.finish()
        except MessageRefused:
            stream.cancel()
            raise
        except grpc.RpcError as exc:
            raise PeerError.from_rpc(self.name, "Fetch", exc) from None
