"""Entry 0 registers exactly the manifest's founding members (``since == 1``), with their manifest keys, and
every node checks it so: a member that joined later refuses a creation that registers a subset of the
founders or a name that is not a founder, as a founding member does."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from node_ledger_harness import FED, INITIAL, Federation, key_of

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.entries import Entry, FederationCreated, MemberKey, SignedEntry, sign_entry
from fedswarm.ledger.roundblock import BlockRefused
from fedswarm.node.ledger_block import GenesisFacts, check_creation, check_founder, coordinator_name
from fedswarm.node.ledger_views import catch_up

FOUNDERS = ("member-00000", "member-00001", "member-00002")
FOUNDER = FOUNDERS[0]
LATER = "member-00003"  # added by add-member: since 2
ORDER = [*FOUNDERS, LATER, "mallory"]


def _key(name: str) -> bytes:
    return key_of(name).public_key().raw


GENESIS = GenesisFacts(
    spec_digest="11" * 32,
    population=4,
    strategy="fedavg",
    initial_model="33" * 32,
    config_digest="22" * 32,
    founders=tuple(MemberKey(n, _key(n)) for n in FOUNDERS),
)
EXPECTED = GENESIS.creation(ORDER.index)


def _creation(names: Sequence[str], *, by: str = FOUNDER, keys: dict[str, bytes] | None = None) -> SignedEntry:
    """Entry 0 by ``by``'s coordinator name, registering ``names`` (their own keys unless ``keys`` says)."""
    keys = {n: _key(n) for n in names} | (keys or {})
    body = FederationCreated(
        spec_digest=GENESIS.spec_digest, population=GENESIS.population,
        members=tuple(MemberKey(n, keys[n]) for n in names), strategy=GENESIS.strategy,
        initial_model=GENESIS.initial_model, keys="provisioned",
    )  # fmt: skip
    return sign_entry(Entry(FED, 0, coordinator_name(by), _key(by), body), key_of(by))


def test_the_creation_a_node_writes_registers_the_founders_in_member_order() -> None:
    assert [(m.name, m.key) for m in EXPECTED.members] == [(n, _key(n)) for n in FOUNDERS]
    backwards = GENESIS.creation(lambda name: -ORDER.index(name))
    assert [m.name for m in backwards.members] == list(reversed(FOUNDERS))


@pytest.mark.parametrize("names", [FOUNDERS, tuple(reversed(FOUNDERS))])
def test_exactly_the_founders_are_accepted_in_any_order(names: Sequence[str]) -> None:
    check_creation(_creation(names), FOUNDER, expected=EXPECTED)


def test_a_subset_of_the_founders_is_refused_naming_the_missing() -> None:
    with pytest.raises(BlockRefused, match=re.escape("does not register the founding members ['member-00002']")):
        check_creation(_creation(FOUNDERS[:2]), FOUNDER, expected=EXPECTED)


@pytest.mark.parametrize("extra", ["mallory", LATER])
def test_a_name_that_is_not_a_founder_is_refused(extra: str) -> None:
    with pytest.raises(BlockRefused, match=re.escape(f"registers ['{extra}'], who are not founding members")):
        check_creation(_creation((*FOUNDERS, extra)), FOUNDER, expected=EXPECTED)


def test_a_founder_registered_with_another_key_is_refused() -> None:
    forged = _creation(FOUNDERS, keys={FOUNDERS[2]: _key("mallory")})
    with pytest.raises(BlockRefused, match=re.escape("registers another key for member-00002")):
        check_creation(forged, FOUNDER, expected=EXPECTED)


def test_a_creation_by_a_member_that_is_not_a_founder_is_refused() -> None:
    by_later = _creation(FOUNDERS, by=LATER)
    with pytest.raises(BlockRefused, match=re.escape("member-00003, who is not a founding member")):
        check_creation(by_later, LATER, expected=EXPECTED)
    with pytest.raises(VerificationError, match=re.escape("member-00003 is not a founding member")):
        check_founder(by_later.entry, GENESIS.founder_keys())


def test_a_founder_that_signs_with_another_key_is_refused() -> None:
    body = _creation(FOUNDERS).entry.body
    forged = sign_entry(Entry(FED, 0, coordinator_name(FOUNDER), _key("mallory"), body), key_of("mallory"))
    with pytest.raises(BlockRefused, match=re.escape(f"not signed with {FOUNDER}'s key")):
        check_creation(forged, FOUNDER, expected=EXPECTED)
    with pytest.raises(VerificationError, match=re.escape(f"with another key than {FOUNDER}'s")):
        check_founder(forged.entry, GENESIS.founder_keys())


# ------------------------------------------------------------------------- a joiner's replica


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    made = Federation(tmp_path, FOUNDERS)
    made.admit_to_manifest(LATER)
    made.start(LATER)
    yield made
    made.close()


def _as_in_harness(fed: Federation, names: Sequence[str]) -> SignedEntry:
    body = fed.genesis.creation(fed.names.index)
    registered = tuple(MemberKey(n, fed.manifest[n]) for n in names)
    return sign_entry(
        Entry(FED, 0, coordinator_name(FOUNDER), fed.manifest[FOUNDER], _replace_members(body, registered)),
        key_of(FOUNDER),
    )


def _replace_members(body: FederationCreated, members: tuple[MemberKey, ...]) -> FederationCreated:
    return FederationCreated(
        spec_digest=body.spec_digest, population=body.population, members=members, strategy=body.strategy,
        initial_model=body.initial_model, keys=body.keys,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (FOUNDERS[1:], "does not register the founding members ['member-00000']"),
        ((*FOUNDERS, LATER), "registers ['member-00003'], who are not founding members"),
    ],
)
def test_a_member_that_joined_later_refuses_another_creation_when_it_catches_up(
    fed: Federation, names: Sequence[str], message: str
) -> None:
    link = fed.nodes[LATER].link
    link.put_object(INITIAL)
    with pytest.raises(VerificationError, match=re.escape(message)):
        catch_up(link, [_as_in_harness(fed, names)])
    assert link.size == 0


def test_a_member_that_joined_later_catches_up_the_founders_creation(fed: Federation) -> None:
    fed.rounds([(FOUNDER, FOUNDERS)])
    fed.catch_up(LATER, FOUNDER)
    link = fed.nodes[LATER].link
    state = link.state()
    assert state is not None and state.size == fed.nodes[FOUNDER].link.size
    assert state.members() == {n: fed.manifest[n] for n in FOUNDERS}  # LATER is admitted when it takes part
