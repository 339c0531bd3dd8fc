"""Property tests: the update matrix encoded from one header gives exactly the tensor encoder's bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedswarm.codec.tensors import decode, digest, encode
from fedswarm.core.parameters import Parameters, Schema, TensorSpec
from fedswarm.ledger.update_bytes import encode_rows

shapes = st.lists(st.integers(min_value=1, max_value=4), min_size=0, max_size=3).map(tuple)
tensor_names = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=6)
values = st.one_of(
    st.floats(width=64, allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324]),
)


@st.composite
def matrices(draw: st.DrawFn) -> tuple[np.ndarray, Schema]:
    names = draw(st.lists(tensor_names, min_size=1, max_size=3, unique=True))
    schema = Schema(tuple(TensorSpec(name, draw(shapes), "<f8") for name in sorted(names)))
    count = draw(st.integers(min_value=0, max_value=3))
    flat = draw(st.lists(values, min_size=count * schema.size, max_size=count * schema.size))
    return np.array(flat, dtype=np.float64).reshape(count, schema.size), schema


@settings(max_examples=150, deadline=None)
@given(matrices())
def test_encoded_rows_are_the_canonical_encoding_of_each_row(case: tuple[np.ndarray, Schema]) -> None:
    rows, schema = case
    encoded = encode_rows(rows, schema)
    assert len(encoded) == len(rows)
    for row, data in zip(rows, encoded, strict=True):
        parameters = Parameters.unflatten(row, schema)
        assert data == encode(parameters)
        assert hashlib.sha256(data).hexdigest() == digest(parameters)
        back = decode(data).flatten()
        assert np.array_equal(back, row + 0.0, equal_nan=True)  # -0.0 is stored as +0.0


def test_rows_of_another_width_or_dtype_are_refused() -> None:
    schema = Schema((TensorSpec("w", (2,), "<f8"),))
    with pytest.raises(ValueError, match="do not match a schema of 2 scalars"):
        encode_rows(np.zeros((1, 3)), schema)
    with pytest.raises(ValueError, match="update rows are float64"):
        encode_rows(np.zeros((1, 2)), Schema((TensorSpec("w", (2,), "<f4"),)))
