"""L2 clipping: known values, shapes, extreme magnitudes and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedswarm.core.errors import ConfigurationError, ParameterError
from fedswarm.privacy.dp.clipping import clip_l2, clip_l2_batch, l2_norms


def test_known_values() -> None:
    clipped, norm = clip_l2(np.array([3.0, 4.0]), max_norm=1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-12)
    assert np.linalg.norm(clipped) <= 1.0


def test_under_the_bound_is_an_unchanged_copy() -> None:
    x = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    clipped, norm = clip_l2(x, max_norm=1.0)
    assert clipped.dtype == np.float64
    np.testing.assert_array_equal(clipped, x.astype(np.float64))
    assert norm == pytest.approx(math.sqrt(0.14), rel=1e-6)
    clipped[0] = 5.0
    assert x[0] == np.float32(0.1)  # a copy, never a view


def test_exactly_at_the_bound_is_kept() -> None:
    clipped, norm = clip_l2(np.array([0.0, 2.0]), max_norm=2.0)
    np.testing.assert_array_equal(clipped, [0.0, 2.0])
    assert norm == 2.0


def test_shape_is_kept_and_norm_is_over_all_entries() -> None:
    x = np.ones((2, 2))
    clipped, norm = clip_l2(x, max_norm=1.0)
    assert clipped.shape == (2, 2) and norm == 2.0
    np.testing.assert_allclose(clipped, np.full((2, 2), 0.5), rtol=1e-12)


def test_huge_and_tiny_magnitudes() -> None:
    clipped, norm = clip_l2(np.array([1e300, -1e300]), max_norm=1.0)
    assert norm == pytest.approx(math.sqrt(2) * 1e300)
    np.testing.assert_allclose(clipped, [2**-0.5, -(2**-0.5)], rtol=1e-12)
    clipped, norm = clip_l2(np.full(4, np.finfo(np.float64).max), max_norm=3.0)
    assert norm == math.inf
    np.testing.assert_allclose(clipped, np.full(4, 1.5), rtol=1e-12)
    tiny = np.array([5e-324, 5e-324])
    clipped, norm = clip_l2(tiny, max_norm=1.0)
    np.testing.assert_array_equal(clipped, tiny)
    assert norm > 0


def test_zero_and_empty_vectors() -> None:
    clipped, norm = clip_l2(np.zeros(3), max_norm=1.0)
    assert norm == 0.0 and not clipped.any()
    clipped, norm = clip_l2(np.array([]), max_norm=1.0)
    assert norm == 0.0 and clipped.size == 0


def test_batch_clips_rows_independently() -> None:
    rows = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    clipped, norms = clip_l2_batch(rows, max_norm=1.0)
    np.testing.assert_allclose(norms, [5.0, 0.5, 0.0])
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]], rtol=1e-12)
    np.testing.assert_allclose(l2_norms(rows), [5.0, 0.5, 0.0])
    assert np.all(np.linalg.norm(clipped, axis=1) <= 1.0)


@pytest.mark.parametrize("bound", [0.0, -1.0, math.inf, math.nan])
def test_bad_bound_is_refused(bound: float) -> None:
    with pytest.raises(ConfigurationError, match="max_norm"):
        clip_l2(np.ones(2), max_norm=bound)
    with pytest.raises(ConfigurationError, match="max_norm"):
        clip_l2_batch(np.ones((1, 2)), max_norm=bound)


@pytest.mark.parametrize("bad", [np.array([1.0, math.nan]), np.array([math.inf, 0.0]), np.array(["x", "y"])])
def test_bad_update_is_refused(bad: np.ndarray) -> None:
    with pytest.raises(ParameterError, match="update"):
        clip_l2(bad, max_norm=1.0)


def test_batch_needs_two_dimensions() -> None:
    with pytest.raises(ParameterError, match="shape"):
        clip_l2_batch(np.ones(3), max_norm=1.0)
    with pytest.raises(ParameterError, match="shape"):
        l2_norms(np.ones(3))
