"""A node's status: what ``fedswarm node status`` asks a running node, and how it is shown.

The status travels as ``fedswarm.v1.NodeStatus`` (``Peer.Status``); the request is a signed envelope
like any other, so only members can ask. :func:`query_status` asks the node of a kit with that kit's
own identity and also runs the standard gRPC health check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from fedswarm.node.kit import load_kit
from fedswarm.node.roster import tls_material
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.client import PeerClient
from fedswarm.transport.envelope import seal

__all__ = ["PHASES", "Phase", "query_status", "status_to_dict"]

Phase = Literal["starting", "catching-up", "idle", "training", "evaluating", "leading", "finished", "stopping"]
PHASES: tuple[str, ...] = get_args(Phase)


def status_to_dict(status: pb.NodeStatus, *, healthy: bool) -> dict[str, Any]:
    """A JSON-ready view of a status reply."""
    return {
        "member": status.member,
        "federation_id": status.federation_id,
        "topology": status.topology,
        "health": "SERVING" if healthy else "NOT_SERVING",
        "phase": status.phase,
        "round": int(status.round),
        "rounds": int(status.rounds),
        "finished": bool(status.finished),
        "model_digest": status.model_digest,
        "last_leader": status.last_commit.sender if status.HasField("last_commit") else None,
        "spec_digest": status.spec_digest,
        "refused": dict(status.refused),
        "last_error": status.last_error or None,
        "peers": [
            {
                "member": p.member,
                "address": p.address,
                "reachable": bool(p.reachable),
                "last_seen_ms": int(p.last_seen_ms) or None,
                "last_error": p.last_error or None,
            }
            for p in status.peers
        ],
    }


def query_status(
    kit_dir: Path, *, address: str | None = None, timeout: float = 5.0, password: bytes | None = None
) -> dict[str, Any]:
    """Ask the node of ``kit_dir`` (at its manifest address unless ``address`` is given) for its status,
    with the kit's identity (``password`` opens a kit whose keys are encrypted).

    Raises
    ------
    PeerError
        The node cannot be reached or refused the request.
    """
    kit = load_kit(Path(kit_dir), password=password)
    target = address or kit.entry.address
    client = PeerClient(kit.name, target, tls_material(kit), max_message_bytes=64 << 20, keepalive_seconds=30.0)
    try:
        healthy = client.healthy(timeout=timeout)
        envelope = seal(
            pb.StatusRequest(), key=kit.signing_key, sender=kit.name, federation_id=kit.manifest.federation_id, round=0
        )
        status = client.status(envelope, timeout=timeout)
    finally:
        client.close()
    return status_to_dict(status, healthy=healthy)
