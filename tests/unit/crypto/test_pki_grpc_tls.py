"""Certificates from fedswarm.crypto.pki work for gRPC mutual TLS on loopback, and strangers are refused."""

from __future__ import annotations

from concurrent import futures

import pytest

from fedswarm.crypto import pki

grpc = pytest.importorskip("grpc")

SERVICE, METHOD = "fedswarm.test.Echo", "Echo"


def _member(ca: pki.CertificateAuthority, name: str) -> tuple[bytes, bytes]:
    key = pki.TlsPrivateKey.generate()
    cert = pki.issue_certificate(
        ca, key.public_key(), name=name, dns_names=("localhost",), ip_addresses=("127.0.0.1",), validity_days=1
    )
    return key.to_pem(), cert.pem


def test_mutual_tls_accepts_federation_members_and_refuses_another_ca() -> None:
    ca = pki.create_ca("gRPC Test CA", validity_days=2)
    stranger_ca = pki.create_ca("gRPC Test CA", validity_days=2)  # same name, different key
    server_key, server_cert = _member(ca, "aggregator")
    client_key, client_cert = _member(ca, "bank-b")
    stranger_key, stranger_cert = _member(stranger_ca, "bank-b")
    peers: list[str] = []

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        peers.extend(cn.decode() for cn in context.auth_context().get("x509_common_name", []))
        return request[::-1]

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(echo)}),)
    )
    credentials = grpc.ssl_server_credentials(
        [(server_key, server_cert)], root_certificates=ca.certificate.pem, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    assert port > 0
    server.start()
    try:

        def call(key: bytes | None, cert: bytes | None) -> bytes:
            channel_credentials = grpc.ssl_channel_credentials(
                root_certificates=ca.certificate.pem, private_key=key, certificate_chain=cert
            )
            with grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials) as channel:
                response: bytes = channel.unary_unary(f"/{SERVICE}/{METHOD}")(b"hello", timeout=10)
                return response

        # A member of the federation: the handshake succeeds, and the server sees the client's CN.
        assert call(client_key, client_cert) == b"olleh"
        assert peers == ["bank-b"]

        # A client certificate from another CA (same CA name, same CN) is refused during the handshake.
        with pytest.raises(grpc.RpcError) as refused:
            call(stranger_key, stranger_cert)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert peers == ["bank-b"], "the handler must not run for a refused client"

        # No client certificate at all: refused too (client authentication is required).
        with pytest.raises(grpc.RpcError) as anonymous:
            call(None, None)
        assert anonymous.value.code() == grpc.StatusCode.UNAVAILABLE
        assert peers == ["bank-b"]
    finally:
        server.stop(grace=None)
