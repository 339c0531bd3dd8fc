"""A running node refuses strangers at the TLS handshake, revoked and expired certificates, and tampered,
replayed, unsigned, wrong-federation and oversized messages, logging each reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from network_harness import federation, log_text, wait_for, write_spec

from fedswarm.crypto import pki
from fedswarm.node.kit import load_kit, revoke_member, update_kit
from fedswarm.node.roster import tls_material
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.client import PeerClient, PeerError
from fedswarm.transport.envelope import seal
from fedswarm.transport.tls import TlsMaterial

pytestmark = pytest.mark.integration


def _client(material: TlsMaterial, address: str) -> PeerClient:
    return PeerClient("member-00000", address, material, max_message_bytes=4 << 20, keepalive_seconds=30)


def test_node_refuses_bad_peers_and_bad_messages(tmp_path: Path) -> None:
    _, spec = write_spec(tmp_path, name="sec", members=3, rounds=1, max_model_bytes=4096)
    fed = federation(tmp_path, spec)
    node = "member-00000"
    fed.start(node)  # the aggregator alone: it serves while it waits for the others
    address = load_kit(fed.kits[node]).entry.address
    kit = load_kit(fed.kits["member-00001"])
    good = tls_material(kit)
    fid = kit.manifest.federation_id
    try:
        wait_for(lambda: _client(good, address).healthy(timeout=1.0), timeout=30, what="the node", fed=fed)

        def status(envelope: pb.Envelope, material: TlsMaterial = good) -> pb.NodeStatus:
            return _client(material, address).status(envelope, timeout=5)

        def fresh(**kw: object) -> pb.Envelope:
            return seal(pb.StatusRequest(), key=kit.signing_key, sender=kit.name, federation_id=fid, round=0, **kw)  # type: ignore[arg-type]

        assert status(fresh()).member == node

        # another CA: refused during the TLS handshake (UNAVAILABLE), never reaching the service
        stranger = pki.create_ca("sec CA", validity_days=2)
        key = pki.TlsPrivateKey.generate()
        cert = pki.issue_certificate(stranger, key.public_key(), name="member-00001", dns_names=("member-00001",),
                                     ip_addresses=("127.0.0.1",), validity_days=1)  # fmt: skip
        other = TlsMaterial(good.ca_pem, cert.pem, key.to_pem())
        assert not _client(other, address).healthy(timeout=2.0)
        with pytest.raises(PeerError) as refused:
            status(fresh(), other)
        assert refused.value.code == "UNAVAILABLE"

        # an expired certificate from the federation's own CA: refused at the handshake too
        ca = pki.CertificateAuthority.load(
            fed.out_dir / "federation/ca/ca-key.pem", fed.out_dir / "federation/ca/ca.pem"
        )
        old = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
        expired = pki.issue_certificate(ca, kit.tls_key.public_key(), name="member-00001", dns_names=("member-00001",),
                                        ip_addresses=("127.0.0.1",), validity_days=1, now=old)  # fmt: skip
        with pytest.raises(PeerError) as refused:
            status(fresh(), TlsMaterial(good.ca_pem, expired.pem, good.key_pem))
        assert refused.value.code == "UNAVAILABLE"

        # tampered, replayed, unsigned, wrong federation: refused with the reason, and logged
        tampered = fresh()
        tampered.round = 9
        replayed = fresh()
        status(replayed)
        unsigned = fresh()
        unsigned.ClearField("signature")
        foreign = seal(pb.StatusRequest(), key=kit.signing_key, sender=kit.name, federation_id="0" * 32, round=0)
        for envelope, reason, code in [
            (tampered, "bad-signature", "PERMISSION_DENIED"),
            (replayed, "replayed", "PERMISSION_DENIED"),
            (unsigned, "unsigned", "PERMISSION_DENIED"),
            (foreign, "wrong-federation", "PERMISSION_DENIED"),
        ]:
            with pytest.raises(PeerError) as refused:
                status(envelope)
            assert refused.value.code == code and refused.value.detail.startswith(reason), refused.value
            wait_for(
                lambda r=reason: f"refused Status from member-00001: {r}" in log_text(fed, node), timeout=5, what=reason
            )

        # an update larger than network.max_model_bytes: refused before any data is read
        header = pb.UpdateHeader(attempt=1, base_digest="0" * 64, update_digest="1" * 64, update_size=1 << 20)
        envelope = seal(header, key=kit.signing_key, sender=kit.name, federation_id=fid, round=1)
        with pytest.raises(PeerError) as refused:
            _client(good, address).submit_update(envelope, b"x" * 10, timeout=5)
        assert refused.value.code == "RESOURCE_EXHAUSTED" and "max_model_bytes" in refused.value.detail
        # a single gRPC message above network.max_message_bytes: refused by the transport
        big = fresh()
        big.body = b"\0" * (5 << 20)
        with pytest.raises(PeerError) as refused:
            status(big)
        assert refused.value.code == "RESOURCE_EXHAUSTED"

        # revocation: the node reloads its kit and refuses the revoked member's still-valid certificate
        publication = revoke_member(fed.out_dir / "federation", "member-00001")
        update_kit(fed.kits[node], publication)
        wait_for(lambda: "kit reloaded" in log_text(fed, node), timeout=10, what="kit reload", fed=fed)
        with pytest.raises(PeerError) as refused:
            status(fresh())
        assert refused.value.code == "UNAUTHENTICATED" and "revoked" in refused.value.detail
        assert "revoked" in log_text(fed, node)
    finally:
        fed.stop()
    assert fed.processes[node].returncode == 0, "SIGTERM must stop the node gracefully"
