from __future__ import annotations

import numpy as np
import pytest

from fedswarm.core.errors import ParameterError
from fedswarm.core.parameters import Parameters


def test_names_are_sorted_and_flatten_follows_them() -> None:
    p = Parameters({"z": np.array([3.0]), "a": np.array([[1.0, 2.0]])})
    assert list(p) == ["a", "z"]
    np.testing.assert_array_equal(p.flatten(), [1.0, 2.0, 3.0])


def test_unflatten_inverts_flatten_and_keeps_dtypes() -> None:
    p = Parameters({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array([7], dtype=np.int64)})
    q = Parameters.unflatten(p.flatten(), p.schema)
    assert q.schema == p.schema
    assert q["w"].dtype == np.float32 and q["n"].dtype == np.int64
    assert q.allclose(p)


def test_unflatten_refuses_wrong_length() -> None:
    p = Parameters({"w": np.zeros(3)})
    with pytest.raises(ParameterError, match="does not match schema of 3"):
        Parameters.unflatten(np.zeros(4), p.schema)


def test_check_schema_names_the_tensor() -> None:
    expected = Parameters({"weight": np.zeros((4, 2)), "bias": np.zeros(2)}).schema
    with pytest.raises(ParameterError, match=r"tensor 'weight' has shape \[4, 3\], expected \[4, 2\]"):
        Parameters({"weight": np.zeros((4, 3)), "bias": np.zeros(2)}).check_schema(expected, who="m1")
    with pytest.raises(ParameterError, match=r"missing tensor\(s\) \['bias'\].*unexpected tensor\(s\) \['b'\]"):
        Parameters({"weight": np.zeros((4, 2)), "b": np.zeros(2)}).check_schema(expected, who="m1")


def test_rejects_non_numeric_and_bad_names() -> None:
    with pytest.raises(ParameterError, match="unsupported dtype"):
        Parameters({"s": np.array(["x"])})
    with pytest.raises(ParameterError, match="non-empty strings"):
        Parameters({"": np.zeros(1)})


def test_all_finite() -> None:
    assert Parameters({"a": np.ones(2)}).all_finite()
    assert not Parameters({"a": np.array([1.0, np.nan])}).all_finite()
