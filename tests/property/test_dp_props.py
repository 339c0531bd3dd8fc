"""Property tests of the differential-privacy primitives: clipping invariants and noise bookkeeping."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedswarm.privacy.dp.adaptive import accounted_noise_multiplier, update_noise_multiplier
from fedswarm.privacy.dp.clipping import clip_l2, clip_l2_batch

SETTINGS = settings(max_examples=300, deadline=None, database=None)

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
vectors = hnp.arrays(np.float64, st.integers(0, 40), elements=finite)
bounds = st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False)


def _norm(x: np.ndarray) -> float:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return 0.0 if peak == 0.0 else peak * float(np.linalg.norm(x / peak))


def _unit(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return np.zeros_like(x)
    y = x / peak
    return y / float(np.linalg.norm(y))


@SETTINGS
@given(vectors, bounds)
def test_clipped_norm_never_exceeds_the_bound(x: np.ndarray, c: float) -> None:
    clipped, norm = clip_l2(x, max_norm=c)
    assert np.isfinite(clipped).all()
    if norm > c:
        assert _norm(clipped) <= c
    else:  # untouched; within the bound by the module's own measure
        np.testing.assert_array_equal(clipped, x)
    # The plain formula agrees to rounding whenever its squares neither overflow nor underflow.
    with np.errstate(over="ignore", under="ignore"):
        squares = float(np.sum(clipped * clipped))
    if 1e-290 < squares < 1e300:
        assert math.sqrt(squares) <= c * (1 + 1e-12)


@SETTINGS
@given(vectors, bounds)
def test_direction_is_preserved(x: np.ndarray, c: float) -> None:
    clipped, _ = clip_l2(x, max_norm=c)
    assert np.all(np.sign(clipped) * np.sign(x) >= 0)
    if np.any(clipped != 0):
        np.testing.assert_allclose(_unit(clipped), _unit(x), rtol=0, atol=1e-12)


@SETTINGS
@given(vectors, bounds)
def test_no_op_under_the_bound_and_norm_reported(x: np.ndarray, c: float) -> None:
    clipped, norm = clip_l2(x, max_norm=c)
    true = _norm(x)
    if math.isfinite(true):
        assert norm == np.float64(true) or math.isclose(norm, true, rel_tol=1e-12)
    if norm <= c:
        np.testing.assert_array_equal(clipped, x)
    else:
        assert math.isclose(_norm(clipped), c, rel_tol=1e-12)
        assert _norm(clipped) < c


@settings(max_examples=100, deadline=None, database=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(0, 8), st.integers(0, 12)), elements=finite), bounds)
def test_batch_matches_rows(rows: np.ndarray, c: float) -> None:
    clipped, norms = clip_l2_batch(rows, max_norm=c)
    assert clipped.shape == rows.shape and norms.shape == (rows.shape[0],)
    for i in range(rows.shape[0]):
        one, n = clip_l2(rows[i], max_norm=c)
        np.testing.assert_array_equal(clipped[i], one)
        assert norms[i] == n


@SETTINGS
@given(st.floats(0.05, 50.0), st.floats(0.05, 1e4))
def test_adaptive_noise_split_round_trips(z: float, sigma_b: float) -> None:
    if 2 * sigma_b <= z * (1 + 1e-9):
        return
    zd = update_noise_multiplier(noise_multiplier=z, count_noise_multiplier=sigma_b)
    assert zd >= z
    assert math.isclose(
        accounted_noise_multiplier(update_noise_multiplier=zd, count_noise_multiplier=sigma_b), z, rel_tol=1e-9
    )
