"""Bucketing (Karimireddy, He, Jaggi 2022) against a naive re-implementation, and in front of the rules."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from fedswarm.aggregation import bucket_means, bucket_split, fltrust, krum, median
from fedswarm.core.errors import ConfigurationError, SpecError
from fedswarm.core.task import DataInfo
from fedswarm.rounds.robust import rules as rule_module
from fedswarm.rounds.robust.rules import CenteredClippingRule, KrumRule, MedianRule
from fedswarm.rounds.robust.server_update import publish_server_update
from fedswarm.spec.robust_extension import build_robustness_extension
from fedswarm.spec.rules import RULES, build_named_rule, min_updates
from fedswarm.spec.schema import parse_spec

RNG = np.random.default_rng(11)
U = RNG.normal(size=(25, 7))
W = RNG.integers(1, 90, size=25).astype(np.float64)


@pytest.mark.parametrize(("n", "size", "sizes"), [(25, 2, [2] * 12 + [1]), (10, 3, [3, 3, 2, 2]), (4, 1, [1] * 4)])
def test_buckets_partition_the_updates(n: int, size: int, sizes: list[int]) -> None:
    buckets = bucket_split(n, bucket_size=size, seed=(3, 1))
    assert len(buckets) == math.ceil(n / size)
    assert sorted(len(b) for b in buckets) == sorted(sizes)
    assert sorted(int(i) for b in buckets for i in b) == list(range(n))
    assert all(b.tolist() == sorted(b.tolist()) and b.dtype == np.intp for b in buckets)


def test_one_bucket_when_the_size_exceeds_n() -> None:
    assert [b.tolist() for b in bucket_split(5, bucket_size=9, seed=(0,))] == [[0, 1, 2, 3, 4]]


def test_buckets_depend_only_on_the_seed() -> None:
    first = [b.tolist() for b in bucket_split(25, bucket_size=2, seed=(7, 3))]
    assert first == [b.tolist() for b in bucket_split(25, bucket_size=2, seed=(7, 3))]
    others = {str([b.tolist() for b in bucket_split(25, bucket_size=2, seed=(7, r))]) for r in range(4, 9)}
    assert str(first) not in others and len(others) == 5


def naive_bucket_means(updates: np.ndarray, buckets: list[Any], weights: np.ndarray | None) -> np.ndarray:
    rows = []
    for bucket in buckets:
        w = np.ones(len(bucket)) if weights is None or weights[bucket].sum() == 0 else weights[bucket]
        rows.append([math.fsum(w[k] * updates[i, j] for k, i in enumerate(bucket)) / w.sum() for j in range(7)])
    return np.array(rows)


@pytest.mark.parametrize("weighted", [False, True])
def test_bucket_means_match_naive_definition(weighted: bool) -> None:
    weights = W.copy() if weighted else None
    if weights is not None:
        weights[:6] = 0.0  # some buckets may have no weight at all
    means, bucket_weights = bucket_means(U, bucket_size=2, seed=(5, 0), weights=weights)
    buckets = bucket_split(25, bucket_size=2, seed=(5, 0))
    np.testing.assert_allclose(means, naive_bucket_means(U, buckets, weights), rtol=1e-14, atol=1e-15)
    expected = [float(weights[b].sum()) if weights is not None else float(len(b)) for b in buckets]
    np.testing.assert_array_equal(bucket_weights, expected)


def test_equal_updates_give_that_update() -> None:
    row = np.array([0.1, -3.7, 1e-9])
    means, _ = bucket_means(np.tile(row, (9, 1)), bucket_size=4, seed=(1,), weights=np.arange(1.0, 10.0))
    np.testing.assert_allclose(means, np.tile(row, (3, 1)), rtol=1e-15, atol=0)
    halves, _ = bucket_means(np.tile([0.5, -2.0], (6, 1)), bucket_size=2, seed=(2,))
    np.testing.assert_array_equal(halves, np.tile([0.5, -2.0], (3, 1)))


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_bad_bucket_size(size: Any) -> None:
    with pytest.raises(ConfigurationError, match="bucket_size"):
        bucket_means(U, bucket_size=size, seed=(0,))


def test_bad_updates_are_named() -> None:
    bad = U.copy()
    bad[3, 2] = np.nan
    with pytest.raises(Exception, match="index 3"):
        bucket_means(bad, bucket_size=2, seed=(0,))


def _expected_inputs(rule_seed: int, call: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    seed = (rule_seed, call, rule_module._BUCKET_STREAM)
    return bucket_means(U, bucket_size=2, seed=seed, weights=weights)


def test_a_rule_aggregates_the_bucket_means_drawn_per_round() -> None:
    rule = build_named_rule("median", {"bucket_size": 2}, seed=42)
    assert isinstance(rule, MedianRule) and rule.bucket_size == 2 and rule.bucket_seed == 42
    for call in range(3):  # round k of a run draws its buckets from (seed, k)
        np.testing.assert_array_equal(rule(U, weights=W), median(_expected_inputs(42, call)[0]))
    replay = build_named_rule("median", {"bucket_size": 2}, seed=42)
    first = replay(U, weights=W)
    np.testing.assert_array_equal(first, median(_expected_inputs(42, 0)[0]))
    assert not np.array_equal(first, build_named_rule("median", {"bucket_size": 2}, seed=43)(U, weights=W))


def test_weighted_rules_weight_buckets_and_their_members() -> None:
    rule = build_named_rule("median", {"bucket_size": 2, "weighted": True}, seed=1)
    means, weights = _expected_inputs(1, 0, W)
    np.testing.assert_array_equal(rule(U, weights=W), median(means, weights=weights))


def test_bucket_size_one_is_the_plain_rule() -> None:
    np.testing.assert_array_equal(KrumRule(f=5)(U, weights=W), krum(U, f=5))
    np.testing.assert_array_equal(RULES["krum"]({"f": 5, "bucket_size": 1})(U, weights=W), krum(U, f=5))


def test_fltrust_takes_its_server_update_and_aggregates_bucket_means() -> None:
    rule = build_named_rule("fltrust", {"bucket_size": 2}, seed=9)
    g0 = U.mean(axis=0) + 0.05
    publish_server_update(g0)
    np.testing.assert_array_equal(rule(U, weights=W), fltrust(_expected_inputs(9, 0)[0], server_update=g0))
    with pytest.raises(ConfigurationError, match="no server update"):
        rule(U, weights=W)


def test_centered_clipping_centers_on_the_previous_bucketed_aggregate() -> None:
    rule = build_named_rule("centered_clipping", {"tau": 0.4, "bucket_size": 3})
    assert isinstance(rule, CenteredClippingRule)
    first = rule(U, weights=W)
    second = rule(U, weights=W)
    assert rule.center is not None and np.array_equal(rule.center, second)
    assert not np.array_equal(first, second)


def test_krum_bound_applies_to_the_buckets() -> None:
    rule = build_named_rule("krum", {"f": 2, "bucket_size": 2})
    assert min_updates(rule) == (13, "f")  # ceil(n / 2) >= 2 f + 3 = 7
    assert min_updates(build_named_rule("bulyan", {"f": 1, "bucket_size": 3})) == (19, "f")
    assert min_updates(build_named_rule("median", {"bucket_size": 2})) is None
    with pytest.raises(ConfigurationError, match="krum needs n >= 2f \\+ 3: n=6, f=2"):
        rule(U[:12], weights=W[:12])
    assert rule(U[:13], weights=W[:13]).shape == (7,)


@pytest.mark.parametrize(
    ("name", "options", "words"),
    [("median", {"bucket_size": 0}, ">= 1"), ("krum", {"f": 1, "bucket_size": 1.5}, "integer")],
)
def test_bad_bucket_options_name_the_key(name: str, options: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError) as err:
        RULES[name](options)
    assert err.value.path == "strategy.rule.options.bucket_size" and words in str(err.value)


def test_the_mean_takes_no_bucket_size() -> None:
    with pytest.raises(SpecError, match="unknown option"):
        RULES["mean"]({"bucket_size": 2})


def test_the_cohort_must_fit_the_buckets_when_the_run_is_built() -> None:
    raw = {
        "federation": {"name": "t", "members": 10, "rounds": 2},
        "data": {"dataset": "breast_cancer"},
        "strategy": {"name": "fedavg", "min_members": 2, "rule": {"name": "krum", "options": {"f": 2}}},
    }
    info = DataInfo(num_features=30, num_classes=2)
    assert build_robustness_extension(parse_spec(raw), info, 10) is not None
    raw["strategy"]["rule"]["options"] = {"f": 2, "bucket_size": 2}  # type: ignore[index]
    with pytest.raises(SpecError) as err:
        build_robustness_extension(parse_spec(raw), info, 10)
    assert err.value.path == "strategy.rule.options.f" and "at least 13" in str(err.value)


def test_a_resumed_rule_draws_the_buckets_of_the_next_round() -> None:
    rule = build_named_rule("centered_clipping", {"tau": 0.4, "bucket_size": 2}, seed=5)
    rule(U, weights=W)
    rule(U, weights=W)
    assert isinstance(rule, CenteredClippingRule)
    fresh = build_named_rule("centered_clipping", {"tau": 0.4, "bucket_size": 2}, seed=5)
    assert isinstance(fresh, CenteredClippingRule)
    fresh.load_state_dict(rule.state_dict())
    assert fresh.aggregations == 2
    np.testing.assert_array_equal(fresh(U, weights=W), rule(U, weights=W))
    restarted = build_named_rule("centered_clipping", {"tau": 0.4, "bucket_size": 2}, seed=5)
    assert isinstance(restarted, CenteredClippingRule)
    restarted.load_state_dict({"center": rule.state_dict()["center"]})  # a center without a count: round 0
    assert restarted.aggregations == 0
