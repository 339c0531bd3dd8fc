"""Property tests of the ledger: canonical entries, tamper evidence, and store/tree agreement."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from fedswarm.codec import canonical
from fedswarm.core.errors import VerificationError
from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.entries import (
    AggregateCommitted,
    AnomalyFlagged,
    Entry,
    EntryError,
    EvaluationReported,
    PrivacySpent,
    RoundOpened,
    SignedEntry,
    UpdateSubmitted,
    sign_entry,
)
from fedswarm.ledger.merkle import consistency_proof, inclusion_proof, root, verify_consistency, verify_inclusion
from fedswarm.ledger.store import LedgerStore

KEY = SigningKey.from_seed(bytes(range(32)))
names = st.text(st.characters(codec="utf-8", categories=("L", "M", "N", "P", "S")), min_size=1, max_size=12)
digests = st.binary(min_size=32, max_size=32).map(bytes.hex)
reals = st.floats(allow_nan=False, allow_infinity=False, width=64)
metric_values = st.one_of(st.none(), st.floats(width=64))
metrics = st.dictionaries(st.text(max_size=8).filter(lambda k: k != "$b"), metric_values, max_size=4)
rounds = st.integers(min_value=1, max_value=2**40)
counts = st.integers(min_value=0, max_value=2**53)

bodies = st.one_of(
    st.builds(UpdateSubmitted, round=rounds, update=digests, examples=counts, norm=reals, bytes=counts),
    st.builds(
        RoundOpened,
        round=rounds,
        leader=names,
        selected=st.lists(names, max_size=4).map(tuple),
        config_digest=digests,
        base_model=digests,
    ),
    st.builds(
        EvaluationReported,
        round=rounds,
        model=digests,
        scope=st.sampled_from(["central", "members"]),
        members=counts,
        metrics=metrics,
    ),
    st.builds(
        AnomalyFlagged,
        round=rounds,
        member=names,
        scores=metrics,
        reason=st.text(max_size=20),
        action=st.sampled_from(["flagged", "excluded", "downweighted"]),
    ),
    st.builds(
        PrivacySpent,
        round=rounds,
        epsilon=st.floats(min_value=0, max_value=1e6),
        delta=st.floats(min_value=0, max_value=0.5),
        accountant=names,
        member=st.one_of(st.none(), names),
    ),
    st.integers(min_value=0, max_value=3).flatmap(
        lambda n: st.builds(
            AggregateCommitted,
            round=rounds,
            strategy=names,
            base_model=digests,
            inputs=st.lists(digests, min_size=n, max_size=n).map(tuple),
            contributors=st.lists(names, min_size=n, max_size=n).map(tuple),
            weights=st.lists(reals, min_size=n, max_size=n).map(tuple),
            model=digests,
            metrics=metrics,
            rejected=st.dictionaries(names, st.text(max_size=10), max_size=2),
            dropouts=st.dictionaries(names, st.text(max_size=10), max_size=2),
        )
    ),
)
entries = st.builds(Entry, federation=names, seq=counts, author=names, key=st.just(KEY.public_key().raw), body=bodies)


def _canonical_value(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$b"}:
            return bytes.fromhex(value["$b"])
        return {k: _canonical_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_value(v) for v in value]
    return value


@given(entries)
def test_entry_bytes_equal_the_codec_canonical_bytes_and_round_trip(entry: Entry) -> None:
    data = entry.encode()
    assert data == canonical.encode(_canonical_value(entry.to_json()))
    assert Entry.decode(data) == entry
    assert Entry.decode(data).encode() == data


@settings(max_examples=40)
@given(entries, st.data())
def test_any_changed_byte_of_a_record_is_caught(entry: Entry, data: st.DataObject) -> None:
    record = sign_entry(entry, KEY).record
    position = data.draw(st.integers(min_value=0, max_value=len(record) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    changed = bytearray(record)
    changed[position] ^= flip
    try:
        parsed = SignedEntry.from_record(bytes(changed))
    except EntryError:
        return
    try:
        KEY.public_key().verify(parsed.message, parsed.signature)
    except VerificationError:
        return
    raise AssertionError(f"byte {position} changed and the record still parses and verifies")


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=6), st.data())
def test_the_store_tree_matches_the_pure_functions(batches: list[int], data: st.DataObject) -> None:
    body = UpdateSubmitted(round=1, update="ab" * 32, examples=1, norm=1.0, bytes=1)
    with tempfile.TemporaryDirectory() as folder:
        store = LedgerStore(Path(folder) / "l", create=True, federation="p")
        records: list[bytes] = []
        for size in batches:
            batch = [
                sign_entry(Entry("p", len(records) + i, "a", KEY.public_key().raw, body), KEY) for i in range(size)
            ]
            store.append_many(batch)
            records.extend(s.record for s in batch)
        n = len(records)
        assert store.root() == root(records)
        index = data.draw(st.integers(min_value=0, max_value=n - 1))
        size = data.draw(st.integers(min_value=index + 1, max_value=n))
        old = data.draw(st.integers(min_value=0, max_value=n))
        assert store.inclusion_proof(index, size) == inclusion_proof(records[:size], index)
        verify_inclusion(store.tree.leaf_hash(index), index, size, store.inclusion_proof(index, size), store.root(size))
        assert store.consistency_proof(old) == consistency_proof(records, old)
        verify_consistency(old, n, store.root(old), store.root(), store.consistency_proof(old))
        store.close()
