"""The spec's ``ledger.quorum`` on the network: the founding node writes it into entry 0, checkpoints are
final with strictly more than that fraction of the registered members, and a node whose spec sets another
quorum refuses the creation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from node_ledger_harness import FED, Federation, Node, key_of

from fedswarm.ledger.entries import Entry, FederationCreated, MemberKey, sign_entry
from fedswarm.ledger.roundblock import BlockRefused
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger
from fedswarm.node.ledger_block import GenesisFacts, check_creation, coordinator_name

FIVE = ("member-00000", "member-00001", "member-00002", "member-00003", "member-00004")
FOUNDER = FIVE[0]
THREE = FIVE[:3]  # strictly more than 1/2 of 5 members, not strictly more than 2/3 (that needs 4)


class QuorumFederation(Federation):
    """A :class:`Federation` whose nodes' specs set ``ledger.quorum`` to ``quorum``."""

    def __init__(self, tmp: Path, names: tuple[str, ...], *, quorum: tuple[int, int]) -> None:
        self.quorum = quorum
        super().__init__(tmp, names)

    def start(self, name: str) -> Node:
        self.genesis = replace(self.genesis, quorum=self.quorum)
        return super().start(name)


@pytest.fixture(params=[(1, 2), (2, 3)], ids=["half", "default"])
def fed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QuorumFederation]:
    made = QuorumFederation(tmp_path, FIVE, quorum=request.param)
    yield made
    made.close()


def test_entry_0_records_the_quorum_and_finality_counts_with_it(fed: QuorumFederation) -> None:
    fed.rounds([(FOUNDER, THREE)])  # only three of the five members take part and cosign
    for name in THREE:
        with LedgerStore(fed.nodes[name].link.folder, readonly=True) as store:
            created = store.entry(0).entry.body
        assert isinstance(created, FederationCreated) and created.quorum == fed.quorum, name
    final = fed.nodes[FOUNDER].link.witness.latest_final()
    if fed.quorum == (1, 2):
        assert final is not None and final.head.size == fed.nodes[FOUNDER].link.size
        assert {c.member for c in final.cosignatures} == set(THREE)
    else:
        assert final is None  # 3 of 5 is not more than 2/3
    fed.close()
    report = verify_ledger(fed.nodes[FOUNDER].link.folder, workers=1)
    assert [c.final for c in report.checkpoints] == ([True] if fed.quorum == (1, 2) else [])


def _facts(quorum: tuple[int, int]) -> GenesisFacts:
    return GenesisFacts(
        spec_digest="11" * 32,
        population=len(FIVE),
        strategy="fedavg",
        initial_model="33" * 32,
        config_digest="22" * 32,
        founders=tuple(MemberKey(n, key_of(n).public_key().raw) for n in FIVE),
        quorum=quorum,
    )


def test_the_creation_carries_the_quorum_and_another_one_is_refused() -> None:
    half, default = _facts((1, 2)), _facts((2, 3))
    assert half.creation(FIVE.index).quorum == (1, 2)
    assert default.creation(FIVE.index).quorum == (2, 3)
    assert replace(half, quorum=(2, 3)) == default  # nothing else differs
    founder_key = key_of(FOUNDER)
    for written, expected in ((half, default), (default, half)):
        entry = Entry(FED, 0, coordinator_name(FOUNDER), founder_key.public_key().raw, written.creation(FIVE.index))
        signed = sign_entry(entry, founder_key)
        check_creation(signed, FOUNDER, expected=written.creation(FIVE.index))
        message = f"entry 0 states quorum {written.quorum!r}, this node {expected.quorum!r}"
        with pytest.raises(BlockRefused, match=re.escape(message)):
            check_creation(signed, FOUNDER, expected=expected.creation(FIVE.index))
