"""Mutual TLS for gRPC: credentials, channel options, and the post-handshake check of the peer certificate.

The TLS handshake (BoringSSL inside gRPC) already refuses a client without a certificate, or with one
not issued by the federation CA, or expired. Python's gRPC has no CRL option, so after the handshake
:class:`PeerAuthenticator` checks the certificate the client presented (``x509_pem_cert`` in the
call's auth context) against the current :class:`Trust`: issued by the CA and valid
(:func:`fedswarm.crypto.pki.verify_certificate`), not revoked by the CRL, and exactly the certificate the
manifest lists for its common name (fingerprint pinning: another certificate with the same name is
refused). Clients pin the server the same way through its name: every member certificate carries its
member name as a DNS name, and channels override the TLS target name with the member they dial.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from fedswarm.core.errors import VerificationError
from fedswarm.crypto import pki
from fedswarm.crypto.signing import VerifyKey
from fedswarm.transport.envelope import MessageRefused

__all__ = [
    "PeerAuthenticator",
    "TlsMaterial",
    "Trust",
    "channel_credentials",
    "channel_options",
    "server_credentials",
    "server_options",
]


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes of the CA certificate, this node's certificate and its private key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


@dataclass(frozen=True)
class Trust:
    """What a node trusts right now: the CA, the CRL, and the members' certificate fingerprints and keys."""

    federation_id: str
    ca: pki.Certificate
    crl: pki.RevocationList
    fingerprints: Mapping[str, str]
    keys: Mapping[str, VerifyKey]
    addresses: Mapping[str, str]
    version: int


def server_credentials(material: TlsMaterial) -> grpc.ServerCredentials:
    """Server credentials that require a client certificate issued by the CA."""
    return grpc.ssl_server_credentials(
        [(material.key_pem, material.cert_pem)], root_certificates=material.ca_pem, require_client_auth=True
    )


def channel_credentials(material: TlsMaterial) -> grpc.ChannelCredentials:
    """Client credentials presenting this node's certificate and trusting only the CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca_pem, private_key=material.key_pem, certificate_chain=material.cert_pem
    )


def _keepalive(keepalive_seconds: float) -> list[tuple[str, Any]]:
    return [
        ("grpc.keepalive_time_ms", int(keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(max(1.0, keepalive_seconds / 2) * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def channel_options(*, peer: str, max_message_bytes: int, keepalive_seconds: float) -> list[tuple[str, Any]]:
    """Options of a channel to member ``peer``: its name as TLS target, message size limits, keepalive."""
    return [
        ("grpc.ssl_target_name_override", peer),
        ("grpc.default_authority", peer),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500),  # a restarted peer is reachable again quickly
        *_keepalive(keepalive_seconds),
    ]


def server_options(*, max_message_bytes: int, keepalive_seconds: float) -> list[tuple[str, Any]]:
    """Server options: message size limits and keepalive (clients may ping as often as they do)."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.http2.min_ping_interval_without_data_ms", int(max(1.0, keepalive_seconds / 2) * 1000)),
        ("grpc.so_reuseport", 0),
        *_keepalive(keepalive_seconds),
    ]


@dataclass(frozen=True, slots=True)
class _Checked:
    """A certificate that verified against the CA, and what every call needs of it."""

    cert: pki.Certificate
    until: dt.datetime
    name: str
    serial: int
    fingerprint: str


class PeerAuthenticator:
    """Maps a call's TLS auth context to a member name, or refuses it.

    The expensive part (certificate signature and validity, and parsing it) is cached per certificate
    and trust revision; revocation and manifest membership are re-checked on every call, so a reloaded
    CRL or manifest applies to connections that are already open.
    """

    def __init__(self, trust: Trust) -> None:
        self._trust = trust
        self._revoked = trust.crl.revoked_serials
        self._lock = threading.Lock()
        self._cache: dict[bytes, _Checked] = {}

    @property
    def trust(self) -> Trust:
        return self._trust

    def update(self, trust: Trust) -> None:
        """Install a new trust state (a newer manifest or CRL)."""
        with self._lock:
            self._trust = trust
            self._revoked = trust.crl.revoked_serials
            self._cache.clear()

    def authenticate(self, auth_context: Mapping[str, Any]) -> str:
        """Return the member name of the peer.

        Raises
        ------
        MessageRefused
            ``unauthenticated``: no certificate, or it is not valid, revoked, or not the manifest's.
        """
        pems = auth_context.get("x509_pem_cert") or []
        if not pems:
            raise MessageRefused("unauthenticated", "the peer presented no client certificate")
        pem = bytes(pems[0])
        with self._lock:
            trust, revoked, hit = self._trust, self._revoked, self._cache.get(pem)
        now = dt.datetime.now(dt.UTC)
        if hit is None or hit.until < now:
            try:
                cert = pki.Certificate.from_pem(pem, source="peer certificate")
                pki.verify_certificate(cert, ca=trust.ca, crl=trust.crl, now=now)
            except VerificationError as exc:
                raise MessageRefused("unauthenticated", str(exc)) from None
            except Exception as exc:  # unreadable material: KeyMaterialError and friends
                raise MessageRefused("unauthenticated", f"peer certificate: {exc}") from None
            until = min(cert.not_after, now + dt.timedelta(minutes=5))
            hit = _Checked(cert, until, cert.name, cert.serial, cert.fingerprint)
            with self._lock:
                if self._trust is trust:
                    self._cache[pem] = hit
        if hit.serial in revoked:
            raise MessageRefused(
                "unauthenticated",
                f"certificate {hit.name!r} (serial {hit.serial:x}): revoked by CRL {trust.crl.number}",
            )
        expected = trust.fingerprints.get(hit.name)
        if expected is None:
            raise MessageRefused(
                "unauthenticated", f"certificate {hit.name!r}: not a member in manifest version {trust.version}"
            )
        if expected != hit.fingerprint:
            raise MessageRefused(
                "unauthenticated",
                f"certificate {hit.name!r}: fingerprint {hit.fingerprint[:16]} is not the one the manifest "
                f"lists ({expected[:16]})",
            )
        return hit.name
