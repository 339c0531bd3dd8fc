"""Extension exchanges on a node: replies are read through a strict registry, malformed ones are refused with
their reason (and the member becomes a dropout of the exchange), inline requests are held to their signed
digest and size, and the coordinator waits as long as the kind's work needs."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedswarm.crypto import pki
from fedswarm.crypto.signing import SigningKey
from fedswarm.node.exchange_service import ExchangeAssignment, ExchangePeerService, payload_of
from fedswarm.node.exchanges import REPLIES, decode_reply, exchange_timeout, round_seconds
from fedswarm.node.mailbox import Slot
from fedswarm.node.persist import NodeStore
from fedswarm.node.roundloop import ExchangeDriver
from fedswarm.rounds.messages import Dropout
from fedswarm.rounds.privacy.messages import PrivateFitReply, SecAggAdvertise, SecAggKeys
from fedswarm.spec.network import NetworkSpec
from fedswarm.spec.schema import parse_spec
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.client import PeerError
from fedswarm.transport.envelope import EnvelopeVerifier, MessageRefused, seal
from fedswarm.transport.loopback import loopback_client
from fedswarm.transport.service import Assignment
from fedswarm.transport.tls import PeerAuthenticator, Trust

NAMES = ("member-00000", "member-00001", "member-00002")
BASE = "ab" * 32
KEYS = SecAggKeys("member-00001", b"\x01" * 32, b"\x02" * 32)


# --- the registry ------------------------------------------------------------------------------
def test_a_reply_decodes_as_its_kinds_class_from_its_sender() -> None:
    got = decode_reply("secagg.advertise", KEYS.to_wire(), sender="member-00001")
    assert got == KEYS
    fit = PrivateFitReply("member-00002", np.array([0.5, -1.0]), 0, ("train_loss",), (0.25,))
    back = decode_reply("privacy.fit", fit.to_wire(), sender="member-00002")
    assert isinstance(back, PrivateFitReply) and back.vector.tolist() == [0.5, -1.0]
    assert set(REPLIES) == {
        "privacy.fit", "secagg.advertise", "secagg.share", "secagg.fit", "secagg.unmask", "ckks.fit", "ckks.decrypt"
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "data", "sender", "reason"),
    [
        ("secagg.advertise", KEYS.to_wire(), "member-00002", "claims to come from 'member-00001'"),
        ("secagg.share", KEYS.to_wire(), "member-00001", "a 'SecAggKeys' message is not expected here"),
        ("secagg.advertise", SecAggAdvertise(1, b"x").to_wire(), "member-00001", "'SecAggAdvertise' message is not"),
        ("secagg.advertise", b"\x00not canonical", "member-00001", "secagg.advertise reply from member-00001"),
        ("secagg.advertise", KEYS.to_wire().replace(b'"v":1', b'"v":2'), "member-00001", "unsupported wire version"),
        ("secagg.leak", KEYS.to_wire(), "member-00001", "unknown exchange kind 'secagg.leak'"),
    ],
    ids=["impersonation", "other-class", "a-request", "garbage", "version", "unknown-kind"],
)
def test_anything_else_is_refused_as_malformed_with_the_reason(
    kind: str, data: bytes, sender: str, reason: str
) -> None:
    with pytest.raises(MessageRefused) as refused:
        decode_reply(kind, data, sender=sender)
    assert refused.value.reason == "malformed" and reason in str(refused.value)


# --- the coordinator's mailbox -----------------------------------------------------------------
def _driver(tmp_path: Path) -> ExchangeDriver:
    driver = ExchangeDriver(
        network=None,  # type: ignore[arg-type]  # not used to accept replies
        store=NodeStore(tmp_path),
        names=lambda m: NAMES[m],
        ids=NAMES.index,
        job="job",
        stop=threading.Event(),
    )
    driver._model_digest = BASE  # the round's global model, as drive() sets it
    return driver


def _header(kind: str, data: bytes | None, *, dropout: str = "") -> pb.UpdateHeader:
    header = pb.UpdateHeader(attempt=1, base_digest=BASE, exchange_kind=kind, dropout=dropout)
    if data is not None:
        header.update_digest = hashlib.sha256(data).hexdigest()
        header.update_size = len(data)
    return header


def test_a_malformed_reply_is_refused_and_its_member_drops_out_of_the_exchange(tmp_path: Path) -> None:
    driver = _driver(tmp_path)
    slot = Slot(4, 1, "secagg.advertise")
    driver.mailbox.open(slot, [0, 1, 2])
    bad = KEYS.to_wire()
    with pytest.raises(MessageRefused, match="claims to come from"):
        driver.accept_update("member-00002", 4, _header("secagg.advertise", bad), bad)
    detail = driver.accept_update("member-00001", 4, _header("secagg.advertise", bad), bad)
    assert detail == "secagg.advertise reply for round 4 received"
    driver.accept_update("member-00000", 4, _header("secagg.advertise", None, dropout="no keys"), None)
    replies = driver.mailbox.wait(0.0)
    assert replies[1] == KEYS and replies[0] == Dropout("no keys")
    assert isinstance(replies[2], Dropout) and "secagg.advertise reply refused" in replies[2].reason
    assert "claims to come from" in replies[2].reason


def test_a_reply_to_another_kind_or_attempt_is_refused(tmp_path: Path) -> None:
    driver = _driver(tmp_path)
    driver.mailbox.open(Slot(4, 1, "secagg.share"), [1])
    data = KEYS.to_wire()
    with pytest.raises(MessageRefused, match=r"secagg.advertise from member-00001 for round 4 attempt 1"):
        driver.accept_update("member-00001", 4, _header("secagg.advertise", data), data)
    stale = _header("secagg.share", data)
    stale.attempt = 0
    with pytest.raises(MessageRefused, match="attempt 0"):
        driver.accept_update("member-00001", 4, stale, data)


# --- inline requests ---------------------------------------------------------------------------
FED = "ef" * 16
BOB = SigningKey.from_seed(b"\x09" * 32)
PAYLOAD = SecAggAdvertise(4, b"params").to_wire()


class Handler:
    def __init__(self) -> None:
        self.assigned: list[Assignment] = []
        self.refused: list[tuple[str, str]] = []

    def round_check(self, kind: str) -> Any:
        return None

    def on_assign(self, assignment: Assignment) -> str:
        self.assigned.append(assignment)
        return "queued"

    def on_refused(self, method: str, peer: str | None, refusal: MessageRefused) -> None:
        self.refused.append((method, str(refusal)))


@pytest.fixture(scope="module")
def client_and_handler() -> tuple[Any, Handler]:
    ca = pki.create_ca("unit CA", validity_days=2)
    issued = {}
    for name in ("alice", "bob"):
        key = pki.TlsPrivateKey.generate()
        issued[name] = pki.issue_certificate(ca, key.public_key(), name=name, dns_names=(name,), validity_days=1)
    trust = Trust(FED, ca.certificate, pki.create_crl(ca, number=1),
                  {n: c.fingerprint for n, c in issued.items()}, {"bob": BOB.public_key()}, {}, 1)  # fmt: skip
    handler = Handler()
    service = ExchangePeerService(
        handler,  # type: ignore[arg-type]
        verifier=EnvelopeVerifier(FED, keys=lambda n: trust.keys.get(n)),
        authenticator=PeerAuthenticator(trust),
    )
    return loopback_client("alice", service, cert_pem=issued["bob"].pem), handler


def _exchange(*, work: pb.Work = pb.WORK_EXCHANGE, size: int = len(PAYLOAD)) -> pb.Envelope:
    body = pb.Assign(
        work=work, attempt=1, model_digest=BASE, model_size=10, exchange_kind="secagg.advertise",
        payload_digest=hashlib.sha256(PAYLOAD).hexdigest(), payload_size=size,
    )  # fmt: skip
    return seal(body, key=BOB, sender="bob", federation_id=FED, round=4)


def test_an_inline_request_is_held_to_its_signed_digest_and_size(client_and_handler: tuple[Any, Handler]) -> None:
    client, handler = client_and_handler
    handler.assigned.clear()
    handler.refused.clear()
    client.assign(pb.AssignRequest(assign=_exchange(), payload=PAYLOAD), timeout=5)
    got = handler.assigned[-1]
    assert isinstance(got, ExchangeAssignment) and payload_of(got) == PAYLOAD and got.message.sender == "bob"
    client.assign(pb.AssignRequest(assign=_exchange()), timeout=5)  # no payload: to be fetched by digest
    assert payload_of(handler.assigned[-1]) is None
    tampered = PAYLOAD.replace(b"params", b"paramz")
    cases = [
        (pb.AssignRequest(assign=_exchange(), payload=tampered), "DATA_LOSS", "digest-mismatch"),
        (pb.AssignRequest(assign=_exchange(size=3), payload=PAYLOAD), "INVALID_ARGUMENT", "inline bytes"),
        (pb.AssignRequest(assign=_exchange(work=pb.WORK_EVALUATE), payload=PAYLOAD), "INVALID_ARGUMENT", "not an exchange"),
    ]  # fmt: skip
    for request, code, reason in cases:
        with pytest.raises(PeerError) as refused:
            client.assign(request, timeout=5)
        assert refused.value.code == code and reason in refused.value.detail
    assert len(handler.assigned) == 2 and len(handler.refused) == 3
    assert [reason in text for (_, text), (_, _, reason) in zip(handler.refused, cases, strict=True)] == [True] * 3


# --- deadlines ---------------------------------------------------------------------------------
def test_members_train_in_fit_kinds_only_and_get_the_round_timeout_there() -> None:
    s = NetworkSpec(round_timeout=30.0, evaluate_timeout=5.0)
    assert [exchange_timeout(k, s) for k in ("fit", "privacy.fit", "secagg.fit", "ckks.fit")] == [30.0] * 4
    assert [exchange_timeout(k, s) for k in ("secagg.advertise", "secagg.share", "secagg.unmask", "ckks.decrypt")] == [
        5.0
    ] * 4


def test_a_rounds_time_budget_counts_every_phase_and_group() -> None:
    base = {
        "federation": {"name": "t", "members": 6, "rounds": 1},
        "data": {"dataset": "breast_cancer"},
        "network": {"round_timeout": 30.0, "evaluate_timeout": 5.0},
    }
    assert round_seconds(parse_spec(base)) == 30.0
    assert round_seconds(parse_spec({**base, "privacy": {"secure_aggregation": "secagg+"}})) == 45.0
    assert round_seconds(parse_spec({**base, "privacy": {"secure_aggregation": "ckks"}})) == 45.0
    groups = {**base, "privacy": {"secure_aggregation": "secagg+"}, "robustness": {"groupwise": {"groups": 2}}}
    assert round_seconds(parse_spec(groups)) == 90.0
