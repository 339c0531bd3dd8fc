"""Updates on the wire: one copy when encoding, read in place when decoding, the canonical bytes either way."""

from __future__ import annotations

import numpy as np
import pytest

from fedswarm.codec import tensors
from fedswarm.core.parameters import Parameters
from fedswarm.transport.envelope import MessageRefused
from fedswarm.transport.wire import decode_update, encode_update, encoded_update_size


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (1000,), (3, 4)])
def test_encode_update_is_the_canonical_encoding(shape: tuple[int, ...]) -> None:
    values = np.random.default_rng(3).standard_normal(shape)
    if values.size:
        values.flat[0] = -0.0
        values.flat[-1] = 1e308
    data = encode_update(values)
    assert bytes(data) == tensors.encode(Parameters({"update": np.ascontiguousarray(values)}))
    assert len(data) == encoded_update_size(values.size) or len(shape) > 1


def test_a_received_buffer_is_read_in_place() -> None:
    values = np.array([0.1, -2.5e-300, 1e308, -0.0])
    data = encode_update(values)
    back = decode_update(data, source="t")
    assert np.shares_memory(back, np.frombuffer(data, dtype=np.uint8))
    assert back.tobytes() == np.array([0.1, -2.5e-300, 1e308, 0.0]).tobytes()  # -0.0 travels as +0.0


def test_immutable_bytes_and_foreign_encodings_are_decoded_into_a_copy() -> None:
    values = np.arange(5, dtype=np.float64)
    frozen = bytes(encode_update(values))
    assert decode_update(frozen, source="t").tolist() == values.tolist()
    single = bytearray(tensors.encode(Parameters({"update": values.astype(np.float32)})))
    back = decode_update(single, source="t")
    assert back.dtype == np.float64 and back.tolist() == values.tolist()
    assert not np.shares_memory(back, np.frombuffer(single, dtype=np.uint8))


def test_a_wrong_tensor_or_truncated_buffer_is_refused() -> None:
    other = bytearray(tensors.encode(Parameters({"weights": np.zeros(3)})))
    with pytest.raises(MessageRefused, match="malformed: u: expected one tensor 'update'"):
        decode_update(other, source="u")
    truncated = encode_update(np.ones(4))[:-8]
    with pytest.raises(MessageRefused, match="malformed"):
        decode_update(truncated, source="u")
