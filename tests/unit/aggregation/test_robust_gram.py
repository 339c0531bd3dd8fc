"""The Gram-form distances' accuracy check, and kernels that give the same result on any number of threads."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_info  # type: ignore[import-untyped]

from fedswarm.aggregation import _gram, _threads
from fedswarm.aggregation.bulyan import bulyan
from fedswarm.aggregation.clipping import centered_clipping
from fedswarm.aggregation.geometric_median import geometric_median
from fedswarm.aggregation.krum import krum_select
from fedswarm.aggregation.median import median
from fedswarm.aggregation.trimmed_mean import trimmed_mean


def exact_sq_distances(matrix: np.ndarray) -> np.ndarray:
    n = len(matrix)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = math.fsum((float(a) - float(b)) ** 2 for a, b in zip(matrix[i], matrix[j], strict=True))
    return out


def test_a_tight_cluster_far_from_the_reference_keeps_its_digits() -> None:
    # The zero update (a free rider) is the reference; the other updates are 1e4 away from it but within
    # 1e-6 of each other: G_ii + G_jj - 2 G_ij alone would leave only rounding noise (about 1e-8 * d).
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(64) * 1e4
    cluster = centre + rng.standard_normal((5, 64)) * 1e-6
    matrix = np.vstack([np.zeros(64), cluster, cluster[1]])  # row 6 duplicates row 2
    gram = _gram.shifted_gram(matrix)
    naive = np.diag(gram)[:, None] + np.diag(gram)[None, :] - 2 * gram
    exact = exact_sq_distances(matrix)
    assert np.abs(naive[1:, 1:] - exact[1:, 1:]).max() > 1e3 * exact[1, 2]  # the unchecked form is useless here
    got = _gram.pairwise_sq_distances(matrix)
    np.testing.assert_allclose(got, exact, rtol=1e-9, atol=0)
    assert got[2, 6] == 0.0 and got[6, 2] == 0.0


def test_two_far_clusters_fall_back_to_direct_differences(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    first = rng.standard_normal(40) * 1e5 + rng.standard_normal((3, 40)) * 1e-5
    second = -(rng.standard_normal(40) * 1e5) + rng.standard_normal((3, 40)) * 1e-5
    matrix = np.vstack([np.zeros(40), first, second])
    calls: list[int] = []
    direct = _gram._direct

    def spy(m: np.ndarray, pairs: np.ndarray) -> Any:
        calls.append(len(pairs))
        return direct(m, pairs)

    monkeypatch.setattr(_gram, "_direct", spy)
    got = _gram.pairwise_sq_distances(matrix)
    np.testing.assert_allclose(got, exact_sq_distances(matrix), rtol=1e-9, atol=0)
    assert calls == [3]  # the second cluster's pairs: the second-level Gram is shifted into the first
    np.testing.assert_array_equal(got, got.T)


def test_well_spread_updates_need_no_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_gram, "_refine", lambda *args: pytest.fail("no pair should be suspect"))
    matrix = np.random.default_rng(3).standard_normal((12, 500))
    np.testing.assert_allclose(_gram.pairwise_sq_distances(matrix), exact_sq_distances(matrix), rtol=1e-12)


def test_identical_attackers_far_away_are_exactly_zero_apart() -> None:
    rng = np.random.default_rng(4)
    honest = rng.standard_normal((8, 30)) * 0.1
    attackers = np.tile(-5 * honest.mean(axis=0) + 3.0, (4, 1))
    got = _gram.pairwise_sq_distances(np.vstack([honest, attackers]))
    np.testing.assert_array_equal(got[8:, 8:], 0.0)
    assert (got[:8, 8:] > 0).all()


RULES: dict[str, Callable[[np.ndarray], Any]] = {
    "pairwise": lambda m: _gram.pairwise_sq_distances(m),
    "gram": lambda m: _gram.shifted_gram(m),
    "krum_select": lambda m: krum_select(m, f=1, m=3),
    "bulyan": lambda m: bulyan(m, f=1),
    "geometric_median": lambda m: geometric_median(m),
    "median": lambda m: median(m),
    "weighted_median": lambda m: median(m, weights=np.arange(1.0, len(m) + 1)),
    "trimmed_mean": lambda m: trimmed_mean(m, beta=0.2),
    "centered_clipping": lambda m: centered_clipping(m, tau=100.0, center=np.ones(m.shape[1]), iterations=3),
}


@pytest.mark.parametrize("name", list(RULES))
def test_results_do_not_depend_on_the_number_of_threads(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # Small chunks (the 256-column minimum): 30 column chunks and 8 partial Gram matrices.
    monkeypatch.setattr(_threads, "CHUNK_BYTES", 1024)
    monkeypatch.setattr(_gram, "_GRAM_CHUNK_BYTES", 1024)
    matrix = np.random.default_rng(5).standard_normal((7, 7_680))
    results = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(_threads, "thread_count", lambda threads=threads: threads)
        results.append(RULES[name](matrix))
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def _blas_threads() -> list[int]:
    return [int(info["num_threads"]) for info in threadpool_info() if info["user_api"] == "blas"]


def test_blas_is_single_threaded_only_while_a_pool_runs() -> None:
    before = _blas_threads()
    seen: list[list[int]] = []
    _threads.parallel_map(2, lambda k: seen.append(_blas_threads()))
    if _threads.thread_count() > 1:
        assert seen and all(s == [1] * len(before) for s in seen)
    assert _blas_threads() == before


def test_overlapping_limits_restore_the_original_setting() -> None:
    before = _blas_threads()
    entered = threading.Barrier(2)
    leave_first = threading.Event()

    def first() -> None:
        with _threads.single_threaded_blas():
            entered.wait()
            leave_first.wait()

    def second() -> None:
        with _threads.single_threaded_blas():
            entered.wait()
        leave_first.set()

    workers = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert _blas_threads() == before
