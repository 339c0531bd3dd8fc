"""A node's calls to itself, without a socket: the same service, the same checks.

A coordinator is usually also a member: it assigns work to itself and receives its own update and
evaluation. Over gRPC each of those calls costs the node both ends of a mutually authenticated call.
:func:`loopback_client` returns a :class:`~fedswarm.transport.client.PeerClient` whose stub calls the
node's own :class:`~fedswarm.transport.service.PeerService` directly, in the caller's thread, with a
call context that presents the node's own certificate: authentication, envelope verification (signature,
nonce, round), size limits and digests are checked exactly as for a remote peer, and a refusal surfaces
as the same :class:`~fedswarm.transport.client.PeerError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health_pb2

from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.client import PeerClient
from fedswarm.transport.service import PeerService

__all__ = ["loopback_client"]


class _Aborted(grpc.RpcError):
    """What :meth:`_Context.abort` raises: carries a status code and details like a failed call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Context:
    """The part of ``grpc.ServicerContext`` the service uses: the caller's certificate, abort, the deadline."""

    def __init__(self, cert_pem: bytes) -> None:
        self._auth = {"x509_pem_cert": [cert_pem], "transport_security_type": [b"loopback"]}

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _Aborted(code, details)

    def time_remaining(self) -> float | None:
        return None  # a call to oneself has no deadline


class _Stream:
    """A server-streaming reply read in the caller's thread; ``cancel`` stops the generator."""

    def __init__(self, parts: Iterator[Any]) -> None:
        self._parts = parts

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        return next(self._parts)

    def cancel(self) -> None:
        close = getattr(self._parts, "close", None)
        if close is not None:
            close()


class _Stub:
    """Stands in for ``PeerStub``: each method runs the service's handler with a fresh context."""

    def __init__(self, service: PeerService, cert_pem: bytes) -> None:
        self._service = service
        self._cert = cert_pem

    def _unary(self, handler: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        def call(request: Any, *, timeout: float | None = None, wait_for_ready: bool | None = None) -> Any:
            return handler(request, _Context(self._cert))

        return call

    def __getattr__(self, method: str) -> Callable[..., Any]:
        handler = getattr(self._service, method)
        if method == "Fetch":

            def fetch(
                request: pb.Envelope, *, timeout: float | None = None, wait_for_ready: bool | None = None
            ) -> _Stream:
                return _Stream(handler(request, _Context(self._cert)))

            return fetch
        return self._unary(handler)


class _Health:
    """A node is always serving itself."""

    def Check(self, request: health_pb2.HealthCheckRequest, *, timeout: float | None = None) -> Any:  # noqa: N802 - gRPC method name
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def loopback_client(name: str, service: PeerService, *, cert_pem: bytes) -> PeerClient:
    """A client for member ``name`` (this node) that calls ``service`` directly, presenting ``cert_pem``."""
    return PeerClient.with_stubs(name, "loopback", _Stub(service, cert_pem), _Health())
