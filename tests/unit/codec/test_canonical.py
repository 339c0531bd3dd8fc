from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedswarm.codec.canonical import decode, digest, encode


def test_known_answer() -> None:
    value = {"b": [1, 2.5, b"\x01\xff"], "a": None, "é": -0.0, "t": True}
    assert encode(value) == b'{"a":null,"b":[1,2.5,{"$b":"01ff"}],"t":true,"\xc3\xa9":0.0}'
    assert digest({}) == bytes.fromhex("44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")


def test_refuses_non_finite_and_bad_keys() -> None:
    with pytest.raises(ValueError, match=r"x\[1\]: non-finite"):
        encode({"x": [1.0, math.nan]})
    with pytest.raises(TypeError, match="key 1 is not a string"):
        encode({1: 2})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="set cannot be encoded"):
        encode({"s": {1, 2}})  # type: ignore[dict-item]


def test_decode_refuses_non_canonical_bytes() -> None:
    with pytest.raises(ValueError, match="not in canonical form"):
        decode(b'{"b":1, "a":2}')
    with pytest.raises(ValueError, match="not canonical JSON"):
        decode(b"{")


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text().filter(lambda k: k != "$b"), children, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
def test_round_trip_is_stable(value: object) -> None:
    data = encode(value)  # type: ignore[arg-type]
    assert encode(decode(data)) == data
