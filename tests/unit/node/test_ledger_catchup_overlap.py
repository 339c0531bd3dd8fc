"""Catching up with records that overlap the local log: held records are skipped when identical (two
catch-ups racing), a differing one is refused, a gap is refused; nothing is written on a refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from node_ledger_harness import Federation

from fedswarm.core.errors import VerificationError
from fedswarm.ledger.entries import SignedEntry
from fedswarm.ledger.store import LedgerStore
from fedswarm.node.ledger_views import catch_up, missing_models
from fedswarm.node.ledgerlink import parse_records

FOUR = ("member-00000", "member-00001", "member-00002", "member-00003")
FOUNDER, A, B, LATE = FOUR


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    """Two rounds by the founder's side; LATE took part in neither and holds no entry."""
    made = Federation(tmp_path, FOUR)
    previous = made.rounds([(FOUNDER, (FOUNDER, A, B))])
    made.rounds([(A, (FOUNDER, A, B))], previous=previous, start=2)
    yield made
    made.close()


def _items(fed: Federation, source: str, start: int) -> list[SignedEntry]:
    with LedgerStore(fed.nodes[source].link.folder, readonly=True) as store:
        return parse_records([r for _, r in store.records(start)], f"records from {source}")


def _fetch_models(fed: Federation, name: str, source: str, items: list[SignedEntry]) -> None:
    link, peer = fed.nodes[name].link, fed.nodes[source].link
    for digest in link.run(lambda: missing_models(link, items)):
        link.put_object(peer.object_path(digest).read_bytes())


def test_records_already_held_are_skipped_when_identical(fed: Federation) -> None:
    link = fed.nodes[LATE].link
    everything = _items(fed, FOUNDER, 0)
    _fetch_models(fed, LATE, FOUNDER, everything)
    catch_up(link, everything[:5], peer=FOUNDER)  # a first catch-up got the beginning
    assert link.size == 5
    catch_up(link, everything, peer=FOUNDER)  # a second one, asked from 0 before the first ended
    assert link.size == len(everything) and link.root() == fed.nodes[FOUNDER].link.root()
    catch_up(link, everything, peer=FOUNDER)  # all held: nothing to do
    assert link.size == len(everything)


def test_a_held_record_that_differs_is_refused_and_nothing_is_written(fed: Federation) -> None:
    link = fed.nodes[LATE].link
    everything = _items(fed, FOUNDER, 0)
    _fetch_models(fed, LATE, FOUNDER, everything)
    catch_up(link, everything[:5], peer=FOUNDER)
    root = link.root()
    forged = [*everything]
    forged[3] = everything[4]  # at position 3 a record that is not this ledger's record 3
    with pytest.raises(VerificationError, match=f"record 3 from {A} differs from the one this ledger holds"):
        catch_up(link, forged, peer=A)
    assert link.size == 5 and link.root() == root


def test_records_beyond_the_local_log_are_refused(fed: Federation) -> None:
    link = fed.nodes[LATE].link
    everything = _items(fed, FOUNDER, 0)
    _fetch_models(fed, LATE, FOUNDER, everything)
    with pytest.raises(VerificationError, match="records from 2 on do not continue this ledger of 0 entries"):
        catch_up(link, everything[2:], peer=FOUNDER)
    assert link.size == 0
