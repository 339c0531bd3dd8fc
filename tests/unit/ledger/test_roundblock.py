"""A round's entries against the commit that carries them: every mismatch is refused with its reason."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.entries import (
    AggregateCommitted,
    Body,
    Entry,
    EvaluationReported,
    FederationCreated,
    MemberAdmitted,
    MemberKey,
    RoundOpened,
    SignedEntry,
    UpdateSubmitted,
    sign_entry,
)
from fedswarm.ledger.roundblock import BlockRefused, CommitFacts, DeclaredUpdate, check_round_block

KEYS = {
    n: SigningKey.from_seed(hashlib.sha256(n.encode()).digest()) for n in ("lead", "a", "b", "c", "coordinator@lead")
}
BASE, MODEL, UA, UB = "10" * 32, "20" * 32, "aa" * 32, "bb" * 32


def _signed(seq: int, author: str, body: Body) -> SignedEntry:
    key = KEYS[author]
    return sign_entry(Entry("fed", seq, author, key.public_key().raw, body), key)


def _block(rnd: int = 3, *, inputs: tuple[str, ...] = (UA, UB)) -> list[SignedEntry]:
    return [
        _signed(10, "lead", RoundOpened(rnd, "lead", ("a", "b"), "00" * 32, BASE)),
        _signed(11, "a", UpdateSubmitted(rnd, UA, 5, 1.0, 100)),
        _signed(12, "b", UpdateSubmitted(rnd, UB, 7, 2.0, 100)),
        _signed(
            13,
            "lead",
            AggregateCommitted(
                rnd, "fedavg", BASE, inputs, ("a", "b")[: len(inputs)] or ("a", "b"), (5.0, 7.0), MODEL, {}, {}, {}
            ),
        ),
        _signed(14, "lead", EvaluationReported(rnd, MODEL, "central", 0, {"accuracy": 0.9})),
    ]


FACTS = CommitFacts(
    3, "lead", BASE, MODEL, {"a": DeclaredUpdate(UA, True), "b": DeclaredUpdate(UB, True)}, "coordinator@lead"
)


def test_a_block_that_says_what_its_commit_says_passes() -> None:
    check_round_block(_block(), FACTS)


def _with(index: int, item: SignedEntry) -> list[SignedEntry]:
    block = _block()
    block[index] = item
    return block


@pytest.mark.parametrize(
    ("block", "facts", "reason"),
    [
        (_with(1, _signed(11, "b", UpdateSubmitted(3, UA, 5, 1.0, 100))), FACTS,
         r"entry 11 \(update_submitted by b\): it states update aaaaaaaaaaaaaaaa, the commit declares bbbbbbbbbbbbbbbb"),
        (_with(1, _signed(11, "a", UpdateSubmitted(3, "cc" * 32, 5, 1.0, 100))), FACTS,
         r"entry 11 .* states update cccccccccccccccc, the commit declares aaaaaaaaaaaaaaaa"),
        (_with(1, _signed(11, "a", UpdateSubmitted(4, UA, 5, 1.0, 100))), FACTS,
         r"entry 11 .* it is about round 4, the commit is of round 3"),
        (_with(0, _signed(10, "a", RoundOpened(3, "a", ("a", "b"), "00" * 32, BASE))), FACTS,
         r"entry 10 \(round_opened by a\): written by a, not by the round's leader lead"),
        (_with(0, _signed(10, "lead", RoundOpened(3, "lead", ("a", "b"), "00" * 32, MODEL))), FACTS,
         r"entry 10 .* starts from model 2020202020202020, the commit from 1010101010101010"),
        (_with(4, _signed(14, "lead", EvaluationReported(3, BASE, "central", 0, {}))), FACTS,
         r"entry 14 .* evaluates model 1010101010101010, the commit's is 2020202020202020"),
        (_block()[:1] + _block()[2:], FACTS, r"the aggregated update of a has no entry"),
        (_block(), replace(FACTS, updates={**FACTS.updates, "c": DeclaredUpdate("dd" * 32, True)}),
         r"the aggregated update of c has no entry"),
        (_block(), replace(FACTS, model=BASE), r"entry 13 .* commits model 2020202020202020 from 1010101010101010"),
        (_block()[:3] + _block()[4:], FACTS, r"must open the round once and commit one aggregate"),
        (_block(), replace(FACTS, updates={"a": DeclaredUpdate(UA, True), "b": DeclaredUpdate(UB, False)}),
         r"the aggregate's inputs are not the updates the commit accepted \(b\)"),
        (_block(inputs=()), FACTS, r"a secure sum with updates in the clear"),
        ([_signed(9, "coordinator@lead", FederationCreated("00" * 32, 2, (), "fedavg", BASE)), *_block()], FACTS,
         r"only the first entry of the ledger creates the federation"),
        (_block(), replace(FACTS, first=True), r"must start the ledger with federation_created"),
    ],
)  # fmt: skip
def test_a_mismatch_is_refused_with_the_reason(block: list[SignedEntry], facts: CommitFacts, reason: str) -> None:
    with pytest.raises(BlockRefused, match=reason):
        check_round_block(block, facts)


def test_the_first_block_is_created_by_the_coordinator() -> None:
    genesis = FederationCreated("00" * 32, 2, (MemberKey("a", KEYS["a"].public_key().raw),), "fedavg", BASE)
    first = replace(FACTS, first=True)
    check_round_block([_signed(9, "coordinator@lead", genesis), *_block()], first)
    with pytest.raises(BlockRefused, match=r"entry 9 \(federation_created by a\): .* created by coordinator@lead"):
        check_round_block([_signed(9, "a", genesis), *_block()], first)


def _admission(seq: int, author: str, member: str = "c") -> SignedEntry:
    return _signed(seq, author, MemberAdmitted(member, KEYS[member].public_key().raw, "listed in the manifest"))


def test_members_are_admitted_before_the_round_by_its_leader_or_one_of_its_members() -> None:
    shifted = [_signed(i.entry.seq + 1, i.entry.author, i.entry.body) for i in _block()]
    check_round_block([_admission(9, "lead"), *shifted], FACTS)  # the leader admits
    check_round_block([_admission(9, "a"), *shifted], FACTS)  # a member of the round (the leader is new)
    with pytest.raises(
        BlockRefused,
        match=r"entry 9 \(member_admitted by c\): c is not the coordinator and neither leads nor takes part",
    ):
        check_round_block([_admission(9, "c", "b"), *shifted], FACTS)
    late = [
        *_block()[:1],
        _admission(11, "lead"),
        *[_signed(i.entry.seq + 1, i.entry.author, i.entry.body) for i in _block()[1:]],
    ]
    with pytest.raises(BlockRefused, match=r"entry 11 \(member_admitted by lead\): admissions come before"):
        check_round_block(late, FACTS)
