"""Input normalization and shared kernels of the robust rules (fedswarm.aggregation._input, _gram, _threads)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fedswarm.aggregation import _gram, _input, _threads
from fedswarm.aggregation.bulyan import bulyan
from fedswarm.aggregation.clipping import centered_clipping, clipped_mean
from fedswarm.aggregation.fltrust import fltrust
from fedswarm.aggregation.geometric_median import geometric_median
from fedswarm.aggregation.krum import krum, krum_select, multi_krum
from fedswarm.aggregation.median import median
from fedswarm.aggregation.trimmed_mean import trimmed_mean
from fedswarm.core.errors import ConfigurationError, UpdateRejected

RULES: dict[str, Callable[[Any], Any]] = {
    "median": lambda u: median(u),
    "weighted_median": lambda u: median(u, weights=np.arange(1, len(u) + 1)),
    "trimmed_mean": lambda u: trimmed_mean(u, beta=0.1),
    "krum": lambda u: krum(u, f=1),
    "multi_krum": lambda u: multi_krum(u, f=1, m=3),
    "krum_select": lambda u: krum_select(u, f=1, m=2),
    "bulyan": lambda u: bulyan(u, f=1),
    "geometric_median": lambda u: geometric_median(u),
    "fltrust": lambda u: fltrust(u, server_update=np.ones(len(u[0]))),
    "clipped_mean": lambda u: clipped_mean(u, max_norm=1.0),
    "centered_clipping": lambda u: centered_clipping(u, tau=1.0, center=np.zeros(len(u[0]))),
}


def _updates(n: int = 7, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


@pytest.mark.parametrize("name", sorted(RULES))
def test_list_and_matrix_inputs_agree_and_are_not_modified(name: str) -> None:
    matrix = _updates()
    before = matrix.copy()
    from_matrix = RULES[name](matrix)
    from_list = RULES[name]([row.copy() for row in matrix])
    from_float32 = RULES[name](matrix.astype(np.float32))
    np.testing.assert_array_equal(matrix, before)
    np.testing.assert_array_equal(from_matrix, from_list)
    assert from_float32.shape == from_matrix.shape
    if name != "krum_select":
        assert from_matrix.dtype == np.float64
        assert from_matrix.shape == (4,)
        assert not np.shares_memory(from_matrix, matrix)


@pytest.mark.parametrize("name", sorted(RULES))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_name_the_update_and_coordinate(name: str, bad: float) -> None:
    matrix = _updates()
    matrix[5, 2] = bad
    for updates in (matrix, list(matrix)):
        with pytest.raises(UpdateRejected, match=r"index 5 rejected: 1 non-finite value\(s\).* coordinate 2") as info:
            RULES[name](updates)
        assert info.value.member == "index 5"


def test_huge_finite_rows_are_not_mistaken_for_non_finite() -> None:
    # The row sum overflows, yet every value is finite: accepted.
    matrix = np.full((3, 4), 1e308)
    assert _input.as_matrix(matrix) is matrix


def test_unequal_lengths_name_the_update() -> None:
    updates = [np.zeros(3), np.zeros(3), np.zeros(4)]
    with pytest.raises(UpdateRejected, match="index 2 rejected: has 4 coordinates, update 0 has 3"):
        median(updates)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((2, 2)), r"index 1 rejected: has shape \[2, 2\], expected a 1-D array"),
        (np.array([1 + 2j, 3]), "index 1 rejected: has dtype complex128, expected real numbers"),
        (np.array(["a", "b"]), "index 1 rejected: has dtype <U1, expected real numbers"),
        (np.float64(3.0), r"index 1 rejected: has shape \[\], expected a 1-D array"),
    ],
)
def test_malformed_update_is_named(bad: Any, message: str) -> None:
    with pytest.raises(UpdateRejected, match=message):
        median([np.zeros(2), bad])


def test_integer_updates_are_converted() -> None:
    np.testing.assert_array_equal(median([[1, 2], [3, 4], [5, 9]]), [3.0, 4.0])
    np.testing.assert_array_equal(median(np.array([[1, 2], [3, 4]], dtype=np.uint8)), [2.0, 3.0])


@pytest.mark.parametrize(
    ("updates", "message"),
    [
        ([], "no updates to aggregate"),
        (np.zeros((0, 3)), "no updates to aggregate"),
        ([np.zeros(0), np.zeros(0)], "no coordinates"),
        (np.zeros((2, 2, 2)), r"got shape \[2, 2, 2\]"),
        (np.zeros(4), r"got shape \[4\]"),
        (np.zeros((2, 2), dtype=complex), "dtype complex128"),
        (3, "got int"),
    ],
)
def test_structural_problems_are_configuration_errors(updates: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        median(updates)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, 2.0], r"weights have shape \[2\], expected \[3\]"),
        ([1.0, math.nan, 1.0], r"weights\[1\] = nan"),
        ([1.0, 1.0, -0.5], r"weights\[2\] = -0.5"),
        ([0.0, 0.0, 0.0], "weights sum to zero"),
        (["x", 1, 1], "weights must be real numbers"),
    ],
)
@pytest.mark.parametrize("rule", ["median", "geometric_median", "clipped_mean"])
def test_bad_weights_are_refused_naming_the_rule(weights: Any, message: str, rule: str) -> None:
    updates = _updates(3, 2)
    call: dict[str, Callable[[], Any]] = {
        "median": lambda: median(updates, weights=weights),
        "geometric_median": lambda: geometric_median(updates, weights=weights),
        "clipped_mean": lambda: clipped_mean(updates, max_norm=1.0, weights=weights),
    }
    with pytest.raises(ConfigurationError, match=f"{rule}: {message}"):
        call[rule]()


@pytest.mark.parametrize("f", [True, 1.0, "1", -1, None])
def test_integer_settings_refuse_non_integers_and_negatives(f: Any) -> None:
    with pytest.raises(ConfigurationError, match="krum"):
        krum(_updates(), f=f)


def test_integer_settings_accept_numpy_integers() -> None:
    f: Any = np.int64(1)
    np.testing.assert_array_equal(krum(_updates(), f=f), krum(_updates(), f=1))


@pytest.mark.parametrize("value", [0, -1.0, math.inf, math.nan, True, "1"])
def test_positive_settings_refuse_non_positive_values(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_norm"):
        clipped_mean(_updates(), max_norm=value)


def test_row_norms_survive_overflow() -> None:
    matrix = np.array([[3.0, 4.0], [1e300, 1e300], [0.0, 0.0]])
    np.testing.assert_allclose(_input.row_norms(matrix), [5.0, math.sqrt(2) * 1e300, 0.0], rtol=1e-15)


def test_distances_to_a_point_match_a_direct_computation_and_survive_overflow() -> None:
    matrix = _updates(6, 9)
    point = np.linspace(-1, 1, 9)
    expected = [math.dist(row, point) for row in matrix]
    np.testing.assert_allclose(_input.distances_to(matrix, point), expected, rtol=1e-14)
    far = np.array([[1e300, -1e300], [0.0, 1.0]])
    np.testing.assert_allclose(_input.distances_to(far, np.zeros(2)), [math.sqrt(2) * 1e300, 1.0], rtol=1e-15)


def test_pairwise_squared_distances_match_direct_computation() -> None:
    matrix = _updates(9, 13, seed=3)
    expected = np.array([[np.sum((a - b) ** 2) for b in matrix] for a in matrix])
    got = _gram.pairwise_sq_distances(matrix)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got, got.T)
    np.testing.assert_array_equal(np.diag(got), 0.0)
    assert (got >= 0).all()


def test_pairwise_distances_keep_precision_under_a_large_common_offset() -> None:
    # |x|^2 + |y|^2 - 2 x.y without the shift would lose every digit here (|x|^2 ~ 1e16 * d).
    rng = np.random.default_rng(4)
    noise = rng.standard_normal((6, 50)) * 1e-3
    matrix = 1e8 + noise
    expected = np.array([[np.sum((a - b) ** 2) for b in matrix] for a in matrix])
    np.testing.assert_allclose(_gram.pairwise_sq_distances(matrix), expected, rtol=1e-4)


def test_equal_updates_are_exactly_zero_apart() -> None:
    row = np.random.default_rng(5).standard_normal(1000) * 1e6
    got = _gram.pairwise_sq_distances(np.tile(row, (5, 1)))
    np.testing.assert_array_equal(got, np.zeros((5, 5)))


def test_overflowing_distances_are_infinite_not_nan() -> None:
    matrix = np.array([[0.0, 0.0], [1.0, 0.0], [1e200, -1e200]])
    got = _gram.pairwise_sq_distances(matrix)
    assert got[0, 1] == 1.0
    assert got[0, 2] == math.inf and got[2, 1] == math.inf
    assert not np.isnan(got).any()


def test_shifted_gram_uses_the_smallest_norm_candidate_as_reference() -> None:
    matrix = np.array([[10.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    np.testing.assert_array_equal(np.diag(_gram.shifted_gram(matrix)), [82.0, 0.0, 2.0])
    only_first_two = np.array([True, False, True])
    np.testing.assert_array_equal(np.diag(_gram.shifted_gram(matrix, candidates=only_first_two)), [104.0, 2.0, 0.0])


def test_column_chunks_cover_every_column_once() -> None:
    d = 1_000_003
    seen = np.zeros(d, dtype=np.int64)
    _threads.for_column_chunks(2, d, lambda start, stop: np.add.at(seen, np.arange(start, stop), 1))
    np.testing.assert_array_equal(seen, 1)


def test_column_chunk_errors_propagate() -> None:
    def boom(start: int, stop: int) -> None:
        raise RuntimeError(f"chunk {start}")

    with pytest.raises(RuntimeError, match="chunk"):
        _threads.for_column_chunks(100, 10_000_000, boom)
