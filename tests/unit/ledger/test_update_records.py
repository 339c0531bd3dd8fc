"""The fast ``update_submitted`` parser agrees with ``Entry.decode`` wherever it answers, and declines the rest."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedswarm.ledger.entries import Entry, EntryError, MemberRemoved, UpdateSubmitted
from fedswarm.ledger.update_records import UpdateParser

KEY = bytes(range(32))
DIGEST = "ab" * 32

names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
counts = st.integers(min_value=0, max_value=2**70)
reals = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _message(author: str = "member-00001", *, norm: float = 0.5, seq: int = 7, federation: str = "fed") -> bytes:
    return Entry(federation, seq, author, KEY, UpdateSubmitted(3, DIGEST, 12, norm, 64)).encode()


def _decoded(message: bytes) -> tuple[str, bytes, int, str, int, str] | None:
    """What ``Entry.decode`` says: the fields the parser returns plus seq and federation, or None."""
    try:
        entry = Entry.decode(message)
    except (EntryError, ValueError):
        return None
    body = entry.body
    if not isinstance(body, UpdateSubmitted):
        return None
    return entry.author, entry.key, body.round, body.update, entry.seq, entry.federation


def test_a_canonical_update_parses_to_its_fields() -> None:
    assert UpdateParser("fed").parse(_message(), 7) == ("member-00001", KEY, 3, DIGEST)


def test_other_positions_federations_and_kinds_are_declined() -> None:
    parser = UpdateParser("fed")
    assert parser.parse(_message(), 8) is None
    assert parser.parse(_message(federation="other"), 7) is None
    removal = Entry("fed", 7, "coordinator", KEY, MemberRemoved("member-00001", "left")).encode()
    assert parser.parse(removal, 7) is None
    long_name = "x" * 300  # not a valid federation name: Entry.decode refuses it, so must the parser
    crafted = _message().replace(b'"federation":"fed"', f'"federation":"{long_name}"'.encode())
    assert _decoded(crafted) is None and UpdateParser(long_name).parse(crafted, 7) is None


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (b'"norm":0.5', b'"norm":0.50'),
        (b'"norm":0.5', b'"norm":5e-1'),
        (b'"norm":0.5', b'"norm":1'),
        (b'"norm":0.5', b'"norm":-0.0'),
        (b'"norm":0.5', b'"norm":NaN'),
        (b'"norm":0.5', b'"norm":Infinity'),
        (b'"examples":12', b'"examples":012'),
        (b'"examples":12', b'"examples":-1'),
        (b'"round":3', b'"round":0'),
        (b'"round":3', b'"round":true'),
        (b'"seq":7', b'"seq":7.0'),
        (b'"v":1', b'"v":2'),
        (b'"author":"member-00001"', b'"author":"member-0000\\u0031"'),
        (b'"author":"member-00001"', b'"author":"member\\n"'),
        (b'"author":"member-00001"', b'"author":""'),
        (b'"author":"member-00001"', b'"author":"\x7f"'),
        (b'"author":"member-00001"', b'"author":"\xff\xfe"'),
        (DIGEST.encode(), DIGEST.upper().encode()),
        (b',"v":1}', b',"v":1} '),
        (b'{"author"', b' {"author"'),
        (b'"bytes":64', b'"bytes":' + b"1" * 40),
    ],
)
def test_non_canonical_or_invalid_fields_are_declined(before: bytes, after: bytes) -> None:
    message = _message()
    assert before in message
    assert UpdateParser("fed").parse(message.replace(before, after, 1), 7) is None


@settings(max_examples=150, deadline=None)
@given(author=names, norm=reals, examples=counts, size=counts, number=st.integers(1, 2**62), seq=counts)
def test_it_agrees_with_entry_decode_on_valid_updates(
    author: str, norm: float, examples: int, size: int, number: int, seq: int
) -> None:
    try:
        entry = Entry("fed", seq, author, KEY, UpdateSubmitted(number, DIGEST, examples, norm, size))
    except EntryError:
        return  # not a valid entry at all
    message = entry.encode()
    fields = UpdateParser("fed").parse(message, seq)
    expected = _decoded(message)
    assert expected is not None
    if fields is not None:
        assert (*fields, seq, "fed") == expected
    elif author.isprintable() and not any(c in author for c in '"\\') and len(str(size)) <= 31:
        assert len(str(examples)) > 31 or len(str(number)) > 31 or len(str(seq)) > 31


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_whatever_it_accepts_entry_decode_accepts_with_the_same_values(data: st.DataObject) -> None:
    message = bytearray(_message(norm=data.draw(reals)))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for _ in range(data.draw(st.integers(1, 3))):
        position = rng.randrange(len(message))
        action = rng.randrange(3)
        if action == 0:
            message[position] = rng.randrange(256)
        elif action == 1:
            del message[position]
        else:
            message.insert(position, rng.choice(b'0123456789.e-+"\\:,{}abf \x00\xc3\xa9'))
    fields = UpdateParser("fed").parse(bytes(message), 7)
    if fields is not None:
        assert _decoded(bytes(message)) == (*fields, 7, "fed")


def test_names_outside_ascii_take_the_fast_path() -> None:
    message = _message("mëmber ☃", federation="fédération 7")
    assert UpdateParser("fédération 7").parse(message, 7) == ("mëmber ☃", KEY, 3, DIGEST)
    assert _decoded(message) == ("mëmber ☃", KEY, 3, DIGEST, 7, "fédération 7")
