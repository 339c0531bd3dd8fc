from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from fedswarm.codec import tensors
from fedswarm.core.errors import ParameterError
from fedswarm.core.parameters import Parameters

VECTORS = Path(__file__).parents[2] / "vectors" / "codec" / "parameters_digest.json"


def _cases() -> list[dict]:
    return json.loads(VECTORS.read_text())["cases"]


def _params(case: dict) -> Parameters:
    return Parameters(
        {k: np.array(v["values"], dtype=v["dtype"]).reshape(v["shape"]) for k, v in case["tensors"].items()}
    )


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"])
def test_known_answer_bytes(case: dict) -> None:
    p = _params(case)
    header = case["header"].encode()
    header += b" " * ((-len(header)) % 8)
    body = b"".join(
        np.array(case["tensors"][k]["values"], dtype=case["tensors"][k]["dtype"])
        .astype(np.dtype(case["tensors"][k]["dtype"]).newbyteorder("<"))
        .tobytes()
        for k in sorted(case["tensors"])
    ).replace(struct.pack("<f", -0.0), struct.pack("<f", 0.0))
    expected = struct.pack("<Q", len(header)) + header + body
    assert tensors.encode(p) == expected
    assert tensors.digest(p) == hashlib.sha256(expected).hexdigest()
    assert tensors.encoded_size(p.schema) == len(expected)


def test_negative_zero_is_canonicalised() -> None:
    a = Parameters({"w": np.array([0.0, 1.0], dtype=np.float32)})
    b = Parameters({"w": np.array([-0.0, 1.0], dtype=np.float32)})
    assert tensors.digest(a) == tensors.digest(b)


def test_interoperates_with_safetensors_library() -> None:
    p = Parameters({"w": np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32), "b": np.arange(4)})
    loaded = st_load(tensors.encode(p))
    assert set(loaded) == {"w", "b"}
    np.testing.assert_array_equal(loaded["w"], p["w"])
    back = tensors.decode(st_save({"w": p["w"], "b": p["b"]}, metadata={"x": "y"}))
    assert back.allclose(p)
    assert tensors.digest(back) == tensors.digest(p)


@given(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64, np.int32]),
        shape=hnp.array_shapes(max_dims=3, max_side=5),
        elements={"allow_nan": False, "allow_infinity": False},
    )
)
def test_round_trip_property(arr: np.ndarray) -> None:
    p = Parameters({"t": arr})
    q = tensors.decode(tensors.encode(p))
    assert q.schema == p.schema
    np.testing.assert_array_equal(q["t"], arr)
    assert tensors.encode(q) == tensors.encode(p)


def test_truncated_and_corrupt_input_is_named(tmp_path: Path) -> None:
    data = tensors.encode(Parameters({"w": np.ones(10)}))
    with pytest.raises(ParameterError, match="model.safetensors: tensor 'w' data .* truncated"):
        tensors.decode(data[:-3], source="model.safetensors")
    with pytest.raises(ParameterError, match="truncated safetensors data"):
        tensors.decode(data[:4])
    with pytest.raises(ParameterError, match="header"):
        tensors.decode(struct.pack("<Q", 10**12) + b"{}")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[:20])
    with pytest.raises(ParameterError, match=str(bad)):
        tensors.load(bad)


def test_save_is_atomic_and_returns_digest(tmp_path: Path) -> None:
    p = Parameters({"w": np.ones(3)})
    digest = tensors.save(p, tmp_path / "m.safetensors")
    assert digest == tensors.digest(p)
    assert not (tmp_path / "m.safetensors.tmp").exists()
    assert tensors.load(tmp_path / "m.safetensors").allclose(p)
