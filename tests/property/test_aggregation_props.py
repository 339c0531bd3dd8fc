"""Property tests of the Byzantine-robust aggregation rules.

* Every rule is invariant under a permutation of the updates (Krum-based rules up to exact score ties,
  where the lowest index wins by design).
* Median and trimmed mean stay inside the honest updates' coordinate range while the attackers stay
  under the rule's bound; the clipped mean's norm never exceeds ``max_norm``; Krum picks only honest
  updates when they are clustered and the ``f`` attackers are far away.
* Bucketing partitions the updates and keeps their (weighted) mean: the bucket means weighted by the
  bucket weights average to the mean of the updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedswarm.aggregation.bucketing import bucket_means, bucket_split
from fedswarm.aggregation.bulyan import bulyan
from fedswarm.aggregation.clipping import centered_clipping, clipped_mean
from fedswarm.aggregation.fltrust import fltrust
from fedswarm.aggregation.geometric_median import geometric_median
from fedswarm.aggregation.krum import krum, krum_select, multi_krum
from fedswarm.aggregation.median import median
from fedswarm.aggregation.trimmed_mean import trim_count, trimmed_mean

SETTINGS = settings(max_examples=60, deadline=None, database=None)

Rule = Callable[[np.ndarray], np.ndarray]


@st.composite
def spread_updates(draw: st.DrawFn, min_n: int = 1, max_n: int = 12) -> np.ndarray:
    """Continuous random updates (no accidental score ties) with some exact duplicate rows."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e4]))
    updates = rng.standard_normal((n, d)) * scale + draw(st.sampled_from([0.0, 5.0, -1e3]))
    for _ in range(draw(st.integers(0, n // 3))):
        updates[draw(st.integers(0, n - 1))] = updates[draw(st.integers(0, n - 1))]
    return updates


@st.composite
def raw_updates(draw: st.DrawFn, min_n: int = 1, max_n: int = 12) -> np.ndarray:
    """Hypothesis-chosen values: many zeros, repeats and ties."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, 5))
    values = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)
    return draw(hnp.arrays(np.float64, (n, d), elements=values))


def _permuted(data: st.DataObject, updates: np.ndarray) -> np.ndarray:
    return np.asarray(data.draw(st.permutations(range(len(updates)))), dtype=np.intp)


def _close(a: np.ndarray, b: np.ndarray, updates: np.ndarray, rel: float = 1e-9) -> None:
    np.testing.assert_allclose(a, b, rtol=rel, atol=rel * (1.0 + float(np.abs(updates).max())))


# ---- permutation invariance ---------------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_coordinate_rules_are_exactly_permutation_invariant(data: st.DataObject) -> None:
    updates = data.draw(raw_updates())
    order = _permuted(data, updates)
    weights = np.asarray(data.draw(st.lists(st.integers(0, 5), min_size=len(updates), max_size=len(updates))))
    weights[0] += 1
    beta = data.draw(st.floats(0.0, 0.49))
    np.testing.assert_array_equal(median(updates[order]), median(updates))
    np.testing.assert_array_equal(median(updates[order], weights=weights[order]), median(updates, weights=weights))
    np.testing.assert_array_equal(trimmed_mean(updates[order], beta=beta), trimmed_mean(updates, beta=beta))


def _sq_dist(updates: np.ndarray) -> np.ndarray:
    return np.array([[math.fsum((a - b) ** 2) for b in updates] for a in updates])


def _scores(sq: np.ndarray, neighbours: int) -> np.ndarray:
    return np.array([math.fsum(np.sort(np.delete(sq[i], i))[:neighbours]) for i in range(len(sq))])


def _slack(updates: np.ndarray) -> float:
    """Round-off allowance of a score: the distances come from a shifted Gram matrix in float64."""
    return 1e-10 * len(updates) * float(_sq_dist(updates).max()) + 1e-300


def _tied_across(updates: np.ndarray, scores: np.ndarray, inside: list[int], slack: float) -> bool:
    """Whether an update inside the chosen set ties (within slack) with a different update outside it."""
    outside = [j for j in range(len(updates)) if j not in inside]
    return any(
        abs(scores[i] - scores[j]) <= slack and not np.array_equal(updates[i], updates[j])
        for i in inside
        for j in outside
    )


@SETTINGS
@given(st.data())
def test_krum_rules_are_permutation_invariant_without_score_ties(data: st.DataObject) -> None:
    updates = data.draw(spread_updates(min_n=3, max_n=14))
    n = len(updates)
    f = data.draw(st.integers(0, (n - 3) // 2))
    m = data.draw(st.integers(1, n - f))
    order = _permuted(data, updates)
    scores = _scores(_sq_dist(updates), n - f - 2)
    ranked = sorted(range(n), key=lambda i: (scores[i], i))
    tied = _tied_across(updates, scores, ranked[:1], _slack(updates))
    event(f"krum best score tied: {tied}")
    if not tied:
        np.testing.assert_array_equal(krum(updates[order], f=f), krum(updates, f=f))
    if not _tied_across(updates, scores, ranked[:m], _slack(updates)):
        _close(multi_krum(updates[order], f=f, m=m), multi_krum(updates, f=f, m=m), updates)
        chosen = updates[krum_select(updates, f=f, m=m)]
        chosen_permuted = updates[order][krum_select(updates[order], f=f, m=m)]
        np.testing.assert_array_equal(np.sort(chosen, axis=0), np.sort(chosen_permuted, axis=0))


@SETTINGS
@given(st.data())
def test_krum_with_ties_returns_one_of_the_best_scored(data: st.DataObject) -> None:
    updates = data.draw(raw_updates(min_n=3, max_n=10))
    n = len(updates)
    f = data.draw(st.integers(0, (n - 3) // 2))
    order = _permuted(data, updates)
    scores = _scores(_sq_dist(updates), n - f - 2)
    best = updates[scores <= scores.min() + _slack(updates)]
    for result in (krum(updates, f=f), krum(updates[order], f=f)):
        assert any(np.array_equal(result, row) for row in best)


def _selection_has_ties(updates: np.ndarray, f: int) -> bool:
    """Iterated Krum as documented in bulyan.py; True if any step's best score ties with another update."""
    if f == 0:
        return False  # every update is selected: the order of selection does not matter
    sq = _sq_dist(updates)
    remaining = list(range(len(updates)))
    slack = _slack(updates)
    for _ in range(len(updates) - 2 * f):
        neighbours = min(max(len(remaining) - f - 2, 1), len(remaining) - 1)
        scores = _scores(sq[np.ix_(remaining, remaining)], neighbours)
        best = int(np.argmin(scores))
        if _tied_across(updates[remaining], scores, [best], slack):
            return True
        remaining.pop(best)
    return False


@SETTINGS
@given(st.data())
def test_bulyan_is_permutation_invariant_without_selection_ties(data: st.DataObject) -> None:
    # With a single Krum neighbour (|R| - f - 2 <= 1 late in the selection, f in {1, 2}) the two
    # mutually nearest updates always tie and the lowest index wins: those draws only check that the
    # result stays within the updates' range.
    f = data.draw(st.integers(0, 4))
    n = data.draw(st.integers(4 * f + 3, 4 * f + 6))
    updates = data.draw(spread_updates(min_n=n, max_n=n))
    order = _permuted(data, updates)
    result = bulyan(updates[order], f=f)
    _assert_in_range(result, updates, slack=1e-12)
    tied = _selection_has_ties(updates, f)
    event(f"f={f}, selection ties: {tied}")
    if not tied:
        _close(result, bulyan(updates, f=f), updates, rel=1e-12)


@SETTINGS
@given(st.data())
def test_vector_rules_are_permutation_invariant(data: st.DataObject) -> None:
    updates = data.draw(spread_updates())
    n, d = updates.shape
    order = _permuted(data, updates)
    weights = np.asarray(data.draw(st.lists(st.floats(0.0, 10.0), min_size=n, max_size=n)))
    weights[0] += 1.0
    server = updates.mean(axis=0) + np.asarray(data.draw(st.lists(st.floats(-1, 1), min_size=d, max_size=d)))
    bound = float(data.draw(st.floats(1e-3, 1e3)))
    rules: dict[str, tuple[Rule, Rule]] = {
        "geometric_median": (
            lambda u: geometric_median(u, tol=1e-12, max_iter=1000),
            lambda u: geometric_median(u, tol=1e-12, max_iter=1000),
        ),
        "weighted_geometric_median": (
            lambda u: geometric_median(u, weights=weights[order], tol=1e-12, max_iter=1000),
            lambda u: geometric_median(u, weights=weights, tol=1e-12, max_iter=1000),
        ),
        "fltrust": (lambda u: fltrust(u, server_update=server), lambda u: fltrust(u, server_update=server)),
        "clipped_mean": (
            lambda u: clipped_mean(u, max_norm=bound, weights=weights[order]),
            lambda u: clipped_mean(u, max_norm=bound, weights=weights),
        ),
        "centered_clipping": (
            lambda u: centered_clipping(u, tau=bound, center=server, iterations=3),
            lambda u: centered_clipping(u, tau=bound, center=server, iterations=3),
        ),
    }
    for name, (on_permuted, on_original) in rules.items():
        rel = 1e-6 if "geometric" in name else 1e-10
        try:
            _close(on_permuted(updates[order]), on_original(updates), updates, rel=rel)
        except AssertionError as exc:
            raise AssertionError(name) from exc


# ---- robustness bounds --------------------------------------------------------------------------------


def _huge_or_any(data: st.DataObject, count: int, d: int) -> np.ndarray:
    values = st.one_of(st.floats(-1e300, 1e300, allow_nan=False), st.sampled_from([1e300, -1e300, 0.0, 1e-300]))
    return data.draw(hnp.arrays(np.float64, (count, d), elements=values))


def _assert_in_range(result: np.ndarray, honest: np.ndarray, slack: float = 0.0) -> None:
    lo, hi = honest.min(axis=0), honest.max(axis=0)
    tolerance = slack * np.maximum(np.abs(lo), np.abs(hi))
    assert (result >= lo - tolerance).all() and (result <= hi + tolerance).all()


@SETTINGS
@given(st.data())
def test_median_stays_in_honest_range_with_a_minority_of_attackers(data: st.DataObject) -> None:
    honest = data.draw(raw_updates(min_n=1, max_n=9))
    attackers = _huge_or_any(data, data.draw(st.integers(0, len(honest) - 1)), honest.shape[1])
    updates = np.vstack([honest, attackers])
    order = _permuted(data, updates)
    _assert_in_range(median(updates[order]), honest)


@SETTINGS
@given(st.data())
def test_trimmed_mean_stays_in_honest_range_when_attackers_are_trimmed(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 14))
    beta = data.draw(st.floats(0.0, 0.49))
    budget = trim_count(n, beta=beta)
    count = data.draw(st.integers(0, budget))
    honest = data.draw(raw_updates(min_n=n - count, max_n=n - count))
    attackers = _huge_or_any(data, count, honest.shape[1])
    updates = np.vstack([honest, attackers])
    order = _permuted(data, updates)
    _assert_in_range(trimmed_mean(updates[order], beta=beta), honest, slack=1e-12)


@SETTINGS
@given(st.data())
def test_clipped_mean_norm_is_at_most_max_norm(data: st.DataObject) -> None:
    updates = data.draw(st.one_of(raw_updates(), spread_updates()))
    attackers = _huge_or_any(data, data.draw(st.integers(0, 3)), updates.shape[1])
    bound = data.draw(st.floats(1e-6, 1e6))
    result = clipped_mean(np.vstack([updates, attackers]), max_norm=bound)
    assert math.sqrt(math.fsum(float(x) ** 2 for x in result)) <= bound * (1 + 1e-12)


@SETTINGS
@given(st.data())
def test_krum_selects_only_honest_updates_when_attackers_are_far(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 14))
    f = data.draw(st.integers(0, (n - 3) // 2))
    honest_count = n - f
    d = data.draw(st.integers(1, 6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    center = rng.standard_normal(d) * data.draw(st.sampled_from([0.0, 1.0, 1e3]))
    radius = data.draw(st.sampled_from([1e-3, 1.0, 10.0]))
    honest = center + radius * rng.uniform(-1, 1, size=(honest_count, d)) / math.sqrt(d)
    # Attacker scores sum >= n - 2f - 1 >= 2 distances of at least (D - r)^2; honest scores at most
    # (n - f - 2) (2r)^2. D = r (2 + 2 sqrt(n)) separates them.
    far = radius * (2 + 2 * math.sqrt(n))
    directions = rng.standard_normal((f, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    distance = far * np.asarray(data.draw(st.lists(st.floats(1.0, 1e6), min_size=f, max_size=f)))[:, None]
    attackers = center + directions * distance
    if f and data.draw(st.booleans()):
        attackers[:] = attackers[0]  # colluding: one point
    updates = np.vstack([honest, attackers])
    order = _permuted(data, updates)
    shuffled = updates[order]
    honest_positions = set(np.flatnonzero(order < honest_count).tolist())
    assert set(krum_select(shuffled, f=f, m=n - f).tolist()) == honest_positions
    assert any(np.array_equal(krum(shuffled, f=f), row) for row in honest)


@SETTINGS
@given(st.data())
def test_bucketing_partitions_the_updates_and_keeps_their_mean(data: st.DataObject) -> None:
    updates = data.draw(spread_updates(max_n=30))
    n = len(updates)
    size = data.draw(st.integers(1, n + 2))
    seed = (data.draw(st.integers(0, 2**63 - 1)), data.draw(st.integers(0, 1000)))
    weights = None
    if data.draw(st.booleans()):
        weights = np.asarray(data.draw(st.lists(st.integers(1, 1000), min_size=n, max_size=n)), dtype=np.float64)
    buckets = bucket_split(n, bucket_size=size, seed=seed)
    assert len(buckets) == -(-n // size) and max(len(b) for b in buckets) - min(len(b) for b in buckets) <= 1
    assert sorted(i for b in buckets for i in b.tolist()) == list(range(n))
    means, bucket_weights = bucket_means(updates, bucket_size=size, seed=seed, weights=weights)
    w = np.ones(n) if weights is None else weights
    assert math.isclose(float(bucket_weights.sum()), float(w.sum()), rel_tol=1e-12)
    _close((bucket_weights @ means) / bucket_weights.sum(), (w @ updates) / w.sum(), updates)
