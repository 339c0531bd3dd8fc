"""Tests of ledger entries: canonical bytes, strict parsing, signatures, simulation keys."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fedswarm.codec import canonical
from fedswarm.core.errors import VerificationError
from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.entries import (
    AggregateCommitted,
    Entry,
    EntryError,
    FederationCreated,
    MemberKey,
    PrivacySpent,
    SignedEntry,
    UpdateSubmitted,
    body_class,
    sign_entry,
)
from fedswarm.ledger.merkle import leaf_hash
from fedswarm.ledger.simkeys import SimulationKeys, simulation_seed


def _load_vectors_module() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "vectors" / "ledger" / "ledger_vectors.py"
    spec = importlib.util.spec_from_file_location("ledger_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("ledger_vectors", module)
    spec.loader.exec_module(module)
    return module


V: Any = _load_vectors_module().load_vectors()
KEY = SigningKey.from_seed(V.signer_seed)
D = "ab" * 32


def _as_canonical_value(value: Any) -> Any:
    """JSON-ready form (bytes as {"$b": hex}) back to the values canonical.encode takes."""
    if isinstance(value, dict):
        if set(value) == {"$b"}:
            return bytes.fromhex(value["$b"])
        return {k: _as_canonical_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_canonical_value(v) for v in value]
    return value


@pytest.mark.parametrize("case", V.entries, ids=lambda c: c.kind)
def test_known_answer_entries(case: Any) -> None:
    entry = Entry.decode(case.entry)
    assert entry.kind == case.kind and entry.seq == case.seq
    assert entry.encode() == case.entry
    assert entry.key == V.signer_public == KEY.public_key().raw
    signed = sign_entry(entry, KEY)
    assert signed.signature == case.signature
    assert leaf_hash(signed.record) == case.leaf_hash
    KEY.public_key().verify(case.entry, case.signature)


@pytest.mark.parametrize("case", V.entries, ids=lambda c: c.kind)
def test_entry_bytes_are_the_codec_canonical_encoding(case: Any) -> None:
    entry = Entry.decode(case.entry)
    assert canonical.encode(_as_canonical_value(entry.to_json())) == case.entry
    assert canonical.decode(case.entry) is not None


def test_every_kind_is_in_the_vectors() -> None:
    kinds = {c.kind for c in V.entries}
    for kind in kinds:
        assert body_class(kind).kind == kind
    assert len(kinds) == 9


def test_metrics_nan_becomes_null_and_negative_zero_is_normalized() -> None:
    by_kind = {c.kind: Entry.decode(c.entry) for c in V.entries}
    assert by_kind["aggregate_committed"].body.metrics == {"nan": None, "train_loss": 0.25}  # type: ignore[union-attr]
    assert b'"loss":0.0' in by_kind["evaluation_reported"].encode()


def test_simulation_seeds_match_the_vectors() -> None:
    for case in V.simulation_seeds:
        assert simulation_seed(case.seed, case.name, role=case.role) == case.secret
    domain = b"fedswarm-sim-member\x00" + b"7\x00" + b"member-00001"
    assert simulation_seed(7, "member-00001") == hashlib.sha256(domain).digest()


def test_simulation_keys_are_lazy_and_deterministic() -> None:
    keys = SimulationKeys(7)
    assert len(keys) == 0
    a = keys.member("member-00001")
    assert len(keys) == 1 and keys.member("member-00001") is a
    assert SimulationKeys(7).member("member-00001").public_key() == a.public_key()
    assert SimulationKeys(8).member("member-00001").public_key() != a.public_key()
    assert keys.coordinator().public_key() != a.public_key()


def _entry(body: Any = None, **overrides: Any) -> Entry:
    fields: dict[str, Any] = {
        "federation": "f",
        "seq": 3,
        "author": "member-00001",
        "key": KEY.public_key().raw,
        "body": body or UpdateSubmitted(round=1, update=D, examples=5, norm=1.5, bytes=10),
    }
    fields.update(overrides)
    return Entry(**fields)


def test_round_trip_and_fast_pickle() -> None:
    entry = _entry()
    assert Entry.decode(entry.encode()) == entry
    assert pickle.loads(pickle.dumps(entry)) == entry
    signed = sign_entry(entry, KEY)
    assert SignedEntry.from_record(signed.record) == signed
    assert signed.message == entry.encode()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t.replace('"seq":3', '"seq": 3'), "canonical"),
        (lambda t: t.replace('"norm":1.5', '"norm":1.50'), "canonical"),
        (lambda t: t.replace('"norm":1.5', '"norm":NaN'), "finite"),
        (lambda t: t.replace('"examples":5', '"examples":5.0'), "int"),
        (lambda t: t.replace('"v":1', '"v":2'), "unsupported"),
        (lambda t: t.replace(',"v":1', ""), "missing"),
        (lambda t: t.replace('"v":1', '"v":1,"x":0'), "unexpected"),
        (lambda t: t.replace('"bytes":10', '"bytes":10,"extra":1'), "unexpected"),
        (lambda t: t.replace('"kind":"update_submitted"', '"kind":"nonsense"'), "kind"),
        (lambda t: t.replace('"update":"ab', '"update":"AB'), "hex"),
        (lambda t: t.replace('{"author"', '{"seq":4,"author"'), "canonical"),
        (lambda t: t.replace('"seq":3', '"seq":-1'), "below"),
        (lambda t: t[:-1], "JSON"),
    ],
)
def test_decode_refuses_non_canonical_or_malformed_bytes(mutate: Any, reason: str) -> None:
    text = _entry().encode().decode()
    mutated = mutate(text).encode()
    assert mutated != text.encode()
    with pytest.raises(EntryError, match=reason):
        Entry.decode(mutated)


def test_key_bytes_must_be_lowercase_hex_of_the_right_length() -> None:
    text = _entry().encode().decode()
    key_hex = KEY.public_key().raw.hex()
    with pytest.raises(EntryError, match="lowercase"):
        Entry.decode(text.replace(key_hex, key_hex.upper()).encode())
    with pytest.raises(EntryError, match="32 bytes"):
        Entry.decode(text.replace(key_hex, key_hex[:-2]).encode())


def test_constructors_validate_fields() -> None:
    with pytest.raises(EntryError, match="update"):
        UpdateSubmitted(round=1, update="xyz", examples=1, norm=1.0, bytes=1)
    with pytest.raises(EntryError, match="finite"):
        UpdateSubmitted(round=1, update=D, examples=1, norm=float("inf"), bytes=1)
    with pytest.raises(EntryError, match="round"):
        UpdateSubmitted(round=0, update=D, examples=1, norm=1.0, bytes=1)
    with pytest.raises(EntryError, match="same length"):
        AggregateCommitted(1, "fedavg", D, (D,), (), (1.0,), D, {}, {}, {})
    with pytest.raises(EntryError, match="twice"):
        FederationCreated(D, 2, (MemberKey("a", bytes(32)), MemberKey("a", bytes(32))), "fedavg", D)
    with pytest.raises(EntryError, match="quorum"):
        FederationCreated(D, 2, (), "fedavg", D, quorum=(3, 3))
    with pytest.raises(EntryError, match="delta"):
        PrivacySpent(round=1, epsilon=1.0, delta=1.5, accountant="rdp")
    with pytest.raises(EntryError, match="name"):
        _entry(author="")
    with pytest.raises(EntryError, match="list"):
        AggregateCommitted(1, "fedavg", D, "ab", ("a", "b"), (1.0, 1.0), D, {}, {}, {})  # type: ignore[arg-type]


def test_sign_entry_refuses_another_key() -> None:
    other = SigningKey.from_seed(bytes(32))
    with pytest.raises(EntryError, match="does not match"):
        sign_entry(_entry(), other)


def test_a_changed_byte_breaks_parsing_or_the_signature() -> None:
    signed = sign_entry(_entry(), KEY)
    record = signed.record
    for position in range(0, len(record), 7):
        changed = bytearray(record)
        changed[position] ^= 0x01
        try:
            parsed = SignedEntry.from_record(bytes(changed))
        except EntryError:
            continue
        with pytest.raises(VerificationError):
            KEY.public_key().verify(parsed.message, parsed.signature)


def test_record_too_short() -> None:
    with pytest.raises(EntryError, match="too short"):
        SignedEntry.from_record(b"x" * 64)


def test_entry_round_property() -> None:
    assert _entry().round == 1
    created = FederationCreated(D, 0, (), "fedavg", D)
    assert _entry(body=created).round is None
    assert json.loads(_entry(body=created).encode())["body"]["quorum"] == [2, 3]
