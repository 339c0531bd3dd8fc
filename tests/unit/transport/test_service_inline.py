"""The Peer service's checks of inline blobs, of a commit's bundled next assignment, and of messages carried
in replies, exercised through the loopback client (the same service and checks, without a socket)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from fedswarm.crypto import pki
from fedswarm.crypto.signing import SigningKey
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.client import PeerError
from fedswarm.transport.envelope import EnvelopeVerifier, MessageRefused, Verified, seal
from fedswarm.transport.loopback import loopback_client
from fedswarm.transport.service import Assignment, PeerService
from fedswarm.transport.tls import PeerAuthenticator, Trust

FED = "cd" * 16
BOB = SigningKey.from_seed(b"\x07" * 32)
MODEL = b"model bytes"
DIGEST = hashlib.sha256(MODEL).hexdigest()


class Handler:
    """Records what the service hands over; commits are accepted for round 3, assignments for round 4."""

    def __init__(self) -> None:
        self.assigned: list[Assignment] = []
        self.committed: list[tuple[int, bytes | None, Assignment | None]] = []
        self.updates: list[bytes | bytearray | None] = []
        self.refused: list[tuple[str, str]] = []

    def round_check(self, kind: str) -> Any:
        if kind == "commit":
            return lambda r: None if r == 3 else f"round {r} is not the next"
        if kind == "assign":
            return lambda r: None if r == 4 else f"round {r} is not the next"
        return None

    def on_assign(self, assignment: Assignment) -> str:
        self.assigned.append(assignment)
        return "queued"

    def update_limit(self, message: Verified, header: pb.UpdateHeader) -> int:
        return 1 << 20

    def on_update(self, message: Verified, header: pb.UpdateHeader, data: Any, *, wait: float | None) -> pb.Ack:
        self.updates.append(data)
        return pb.Ack(detail="update")

    def on_evaluation(self, message: Verified, body: pb.EvaluationReport, *, wait: float | None) -> pb.Ack:
        return pb.Ack(detail="evaluation")

    def on_commit(self, message: Verified, body: pb.Commit, model: Any, state: Any, next: Any) -> str:
        self.committed.append((message.round, model, next))
        return "committed"

    def open_blob(self, digest: str) -> None:
        return None

    def on_status(self, message: Verified, body: pb.StatusRequest) -> pb.NodeStatus:
        return pb.NodeStatus()

    def on_refused(self, method: str, peer: str | None, refusal: MessageRefused) -> None:
        self.refused.append((method, refusal.reason))


@pytest.fixture(scope="module")
def world() -> tuple[Trust, bytes]:
    ca = pki.create_ca("unit CA", validity_days=2)
    issued = {}
    for name in ("alice", "bob"):
        key = pki.TlsPrivateKey.generate()
        issued[name] = pki.issue_certificate(ca, key.public_key(), name=name, dns_names=(name,), validity_days=1)
    trust = Trust(FED, ca.certificate, pki.create_crl(ca, number=1),
                  {n: c.fingerprint for n, c in issued.items()}, {"bob": BOB.public_key()}, {}, 1)  # fmt: skip
    return trust, issued["bob"].pem


def _service(world: tuple[Trust, bytes]) -> tuple[PeerService, Handler, Any]:
    trust, bob_pem = world
    handler = Handler()
    service = PeerService(
        handler,  # type: ignore[arg-type]
        verifier=EnvelopeVerifier(FED, keys=lambda n: trust.keys.get(n)),
        authenticator=PeerAuthenticator(trust),
    )
    return service, handler, loopback_client("alice", service, cert_pem=bob_pem)


def _assign(rnd: int, *, size: int = len(MODEL)) -> pb.Envelope:
    body = pb.Assign(work=pb.WORK_EVALUATE, attempt=1, model_digest=DIGEST, model_size=size)
    return seal(body, key=BOB, sender="bob", federation_id=FED, round=rnd)


def _commit(rnd: int) -> pb.Envelope:
    body = pb.Commit(attempt=1, model_digest=DIGEST, model_size=len(MODEL), state_digest=DIGEST, state_size=len(MODEL))
    return seal(body, key=BOB, sender="bob", federation_id=FED, round=rnd)


def test_an_inline_model_is_checked_against_the_signed_digest_and_size(world: tuple[Trust, bytes]) -> None:
    _, handler, client = _service(world)
    client.assign(pb.AssignRequest(assign=_assign(4), model=MODEL), timeout=5)
    assert handler.assigned[0].model == MODEL and handler.assigned[0].message.sender == "bob"
    with pytest.raises(PeerError) as refused:
        client.assign(pb.AssignRequest(assign=_assign(4), model=b"longer model bytes"), timeout=5)
    assert refused.value.code == "INVALID_ARGUMENT" and "inline bytes" in refused.value.detail
    with pytest.raises(PeerError) as refused:
        client.assign(pb.AssignRequest(assign=_assign(4), model=b"xodel bytes"), timeout=5)
    assert refused.value.code == "DATA_LOSS" and refused.value.detail.startswith("digest-mismatch")
    assert [r for _, r in handler.refused] == ["malformed", "digest-mismatch"] and len(handler.assigned) == 1


def test_a_commit_carries_its_blobs_and_the_next_rounds_assignment(world: tuple[Trust, bytes]) -> None:
    _, handler, client = _service(world)
    client.commit(_commit(3), model=MODEL, next=pb.AssignRequest(assign=_assign(4)), timeout=5)
    rnd, model, following = handler.committed[0]
    assert (rnd, model) == (3, MODEL) and following is not None and following.message.round == 4
    with pytest.raises(PeerError) as refused:  # the bundled assignment must be for the round after the commit
        client.commit(_commit(3), next=pb.AssignRequest(assign=_assign(5)), timeout=5)
    assert "round 5 does not follow the commit of round 3" in refused.value.detail
    with pytest.raises(PeerError) as refused:
        client.commit(_commit(3), state=b"tampered!!!", timeout=5)
    assert refused.value.code == "DATA_LOSS"
    assert len(handler.committed) == 1


def test_an_inline_update_is_held_to_its_signed_header(world: tuple[Trust, bytes]) -> None:
    _, handler, client = _service(world)
    header = pb.UpdateHeader(attempt=1, update_digest=DIGEST, update_size=len(MODEL))
    sealed = seal(header, key=BOB, sender="bob", federation_id=FED, round=4)
    assert client.submit_update_inline(sealed, MODEL, timeout=5).detail == "update"
    assert handler.updates == [MODEL]
    again = seal(header, key=BOB, sender="bob", federation_id=FED, round=4)
    with pytest.raises(PeerError) as refused:
        client.submit_update_inline(again, MODEL[:-1], timeout=5)
    assert refused.value.code == "INVALID_ARGUMENT"
    with pytest.raises(PeerError) as refused:  # replaying the accepted message
        client.submit_update_inline(sealed, MODEL, timeout=5)
    assert refused.value.detail.startswith("replayed")
    dropout = seal(pb.UpdateHeader(attempt=1, dropout="no data"), key=BOB, sender="bob", federation_id=FED, round=4)
    with pytest.raises(PeerError, match="carries data"):
        client.submit_update_inline(dropout, b"x", timeout=5)


def test_a_message_carried_in_a_reply_gets_every_check_of_a_call(world: tuple[Trust, bytes]) -> None:
    service, handler, _ = _service(world)
    service.accept_reply("bob", pb.Ack(assign=pb.AssignRequest(assign=_assign(4), model=MODEL)))
    assert handler.assigned[0].model == MODEL
    forged = _assign(4)
    forged.round = 5
    with pytest.raises(MessageRefused, match="bad-signature"):
        service.accept_reply("bob", pb.Ack(assign=pb.AssignRequest(assign=forged)))
    with pytest.raises(MessageRefused, match="wrong-sender"):  # signed by bob, handed over by another peer
        service.accept_reply("alice", pb.Ack(commit=pb.CommitRequest(commit=_commit(3))))
    assert handler.refused == [("Assign (in a reply)", "bad-signature"), ("Commit (in a reply)", "wrong-sender")]
    service.accept_reply("bob", pb.Ack(detail="nothing carried"))
    assert len(handler.assigned) == 1 and handler.committed == []
