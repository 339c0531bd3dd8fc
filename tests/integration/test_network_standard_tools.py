"""A running node seen through tools that are not part of fedswarm.

* OpenSSL's ``s_client``: without a client certificate the node ends the TLS handshake with the
  "certificate required" alert; with a member's certificate and key the session is established and the
  node's certificate chains to the federation CA.
* gRPC server reflection, read with grpcio-reflection's descriptor database: the node serves exactly the
  services and methods that ``proto/fedswarm/v1/federation.proto`` declares, compiled here by protoc.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from network_harness import federation, wait_for, write_spec

from fedswarm.node.kit import CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE, load_kit
from fedswarm.node.roster import tls_material
from fedswarm.transport.client import PeerClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"


def _s_client(address: str, kit: Path, *, with_certificate: bool) -> tuple[str, bool]:
    """s_client's output, and whether the server ended the session by itself within two seconds."""
    host, port = address.rsplit(":", 1)
    args = [
        "openssl",
        "s_client",
        "-connect",
        f"{host}:{port}",
        "-CAfile",
        str(kit / CA_FILE),
        "-verify_return_error",
        "-alpn",
        "h2",
    ]
    if with_certificate:
        args += ["-cert", str(kit / TLS_CERT_FILE), "-key", str(kit / TLS_KEY_FILE)]
    # -ign_eof keeps the session open after the handshake: with TLS 1.3 the server checks the client's
    # certificate after the client considers the handshake done, and ends a refused session by itself
    proc = subprocess.Popen(
        [*args, "-ign_eof"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = proc.communicate(timeout=3.0)
        closed = True
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        closed = False
    return out.decode(errors="replace"), closed


def _declared_services() -> dict[str, dict[str, tuple[str, str, bool, bool]]]:
    """Services of the .proto files as protoc compiles them: name -> method -> (in, out, streams)."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        sources = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
        assert protoc.main(["protoc", f"-I{PROTO}", f"--descriptor_set_out={out}", *sources]) == 0
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    services: dict[str, dict[str, tuple[str, str, bool, bool]]] = {}
    for f in files.file:
        for s in f.service:
            services[f"{f.package}.{s.name}"] = {
                m.name: (m.input_type.lstrip("."), m.output_type.lstrip("."), m.client_streaming, m.server_streaming)
                for m in s.method
            }
    return services


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_standard_tools_see_mutual_tls_and_the_declared_protocol(tmp_path: Path) -> None:
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    _, spec = write_spec(tmp_path, name="tools", members=3, rounds=1)
    fed = federation(tmp_path, spec)
    node = "member-00000"
    fed.start(node)
    address = load_kit(fed.kits[node]).entry.address
    member_kit = fed.kits["member-00001"]
    material = tls_material(load_kit(member_kit))
    try:
        client = PeerClient(node, address, material, max_message_bytes=4 << 20, keepalive_seconds=30)
        wait_for(lambda: client.healthy(timeout=1.0), timeout=30, what="the node", fed=fed)

        # without a certificate: the server ends the session (an alert or a plain close, depending on
        # the TLS library) before anything can be sent; with one the session stays open
        refused, closed = _s_client(address, member_kit, with_certificate=False)
        assert closed and ("alert" in refused or "unexpected eof" in refused), refused
        accepted, closed = _s_client(address, member_kit, with_certificate=True)
        assert not closed and "Verify return code: 0 (ok)" in accepted, accepted
        assert "alert" not in accepted and "unexpected eof" not in accepted, accepted

        credentials = grpc.ssl_channel_credentials(
            root_certificates=material.ca_pem, private_key=material.key_pem, certificate_chain=material.cert_pem
        )
        options = [("grpc.ssl_target_name_override", node)]  # the node's certificate names the member
        with grpc.secure_channel(address, credentials, options=options) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            served = set(database.get_services())
            declared = _declared_services()
            assert set(declared) <= served, served
            assert served - set(declared) <= {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
            for name, methods in declared.items():
                file = database.FindFileContainingSymbol(name)  # a FileDescriptorProto, as served
                (service,) = [s for s in file.service if f"{file.package}.{s.name}" == name]
                got = {
                    m.name: (
                        m.input_type.lstrip("."),
                        m.output_type.lstrip("."),
                        m.client_streaming,
                        m.server_streaming,
                    )
                    for m in service.method
                }
                assert got == methods, name
    finally:
        fed.stop()
