"""Partitioners: coverage, disjointness, skew and failure messages."""

from __future__ import annotations

import numpy as np
import pytest

from fedswarm.core.errors import DataError
from fedswarm.data.partition import (
    ExplicitPartition,
    SampledPartition,
    apportion,
    dirichlet,
    iid,
    natural,
    quantity,
    shards,
)

LABELS = np.repeat(np.arange(10), 500)  # 5,000 rows, 10 balanced classes


def entropy_bits(labels: np.ndarray) -> float:
    p = np.bincount(labels, minlength=10) / labels.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def assert_disjoint(parts: list[np.ndarray], n: int) -> None:
    flat = np.concatenate(parts)
    assert flat.size == np.unique(flat).size
    assert flat.min() >= 0 and flat.max() < n


def test_apportion_is_exact_largest_remainder() -> None:
    assert apportion(10, np.array([1.0, 1.0, 1.0])).tolist() == [4, 3, 3]
    assert apportion(7, np.array([0.5, 0.25, 0.25])).tolist() == [3, 2, 2]  # floors 3,1,1 + remainders
    assert apportion(0, np.array([2.0, 3.0])).tolist() == [0, 0]


def test_iid_is_balanced_complete_and_seeded() -> None:
    parts = iid(LABELS, members=7, seed=1)
    assert sorted(len(p) for p in parts) == [714] * 5 + [715] * 2  # 5000 = 7 * 714 + 2
    assert_disjoint(parts, LABELS.size)
    assert sum(map(len, parts)) == LABELS.size
    again = iid(LABELS, members=7, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not np.array_equal(parts[0], iid(LABELS, members=7, seed=2)[0])
    assert all(np.all(np.diff(p) > 0) for p in parts)  # each member's indices ascending


def test_iid_with_too_many_members_names_the_first_empty_member() -> None:
    with pytest.raises(DataError, match="iid partition: member 5 gets 0 examples"):
        iid(np.zeros(5, dtype=np.int64), members=8, seed=0)


def test_dirichlet_small_alpha_is_skewed_large_alpha_is_near_iid() -> None:
    skewed = dirichlet(LABELS, members=10, alpha=0.05, seed=3, min_samples=0)
    flat = dirichlet(LABELS, members=10, alpha=1000.0, seed=3)
    assert_disjoint(skewed, LABELS.size)
    assert sum(map(len, flat)) == LABELS.size
    assert np.mean([entropy_bits(LABELS[p]) for p in skewed if p.size]) < 1.2
    assert min(entropy_bits(LABELS[p]) for p in flat) > 3.28  # log2(10) = 3.32
    for p in flat:  # every member's label mix within 0.05 total variation of uniform
        share = np.bincount(LABELS[p], minlength=10) / p.size
        assert 0.5 * np.abs(share - 0.1).sum() < 0.05


def test_dirichlet_failure_names_a_member_and_suggests_a_fix() -> None:
    labels = np.repeat(np.arange(10), 20)
    with pytest.raises(DataError) as info:
        dirichlet(labels, members=20, alpha=0.01, seed=0, min_samples=5, max_attempts=20)
    message = str(info.value)
    assert "dirichlet partition: member" in message and "min_samples=5" in message
    assert "fewer members or a larger alpha" in message


def test_dirichlet_retries_until_every_member_has_enough() -> None:
    parts = dirichlet(LABELS, members=10, alpha=0.3, seed=1, min_samples=150)
    assert min(map(len, parts)) >= 150


def test_shards_give_at_most_two_classes_per_member() -> None:
    labels = np.random.default_rng(0).integers(0, 10, 3000)
    parts = shards(labels, members=25, seed=4)
    assert_disjoint(parts, labels.size)
    assert max(np.unique(labels[p]).size for p in parts) <= 2
    assert sum(map(len, parts)) == labels.size
    # 50 shards of about 60 rows: shard counts are rounded per class, so sizes vary by about 10%
    assert max(map(len, parts)) / min(map(len, parts)) < 1.3
    with pytest.raises(DataError, match="needs at least 600 rows"):
        shards(labels[:500], members=300, seed=0)


def test_quantity_skews_sizes_not_labels() -> None:
    skewed = quantity(LABELS, members=20, alpha=0.2, seed=5, min_samples=10)
    even = quantity(LABELS, members=20, alpha=1000.0, seed=5, min_samples=10)
    power = quantity(LABELS, members=20, alpha=1.0, seed=5, min_samples=10, distribution="power_law")
    for parts in (skewed, even, power):
        assert_disjoint(parts, LABELS.size)
        assert sum(map(len, parts)) == LABELS.size and min(map(len, parts)) >= 10

    def cv(parts: list[np.ndarray]) -> float:
        sizes = np.array([p.size for p in parts])
        return float(sizes.std() / sizes.mean())

    assert cv(skewed) > 1.0 > 0.1 > cv(even)
    assert cv(power) > 0.3
    with pytest.raises(DataError, match="member 5 gets 0 examples"):
        quantity(LABELS[:50], members=6, alpha=1.0, seed=0, min_samples=10)


def test_natural_follows_groups() -> None:
    groups = np.array([7, 3, 7, 3, 9, 9, 9])
    parts = natural(groups, members=3)
    assert [p.tolist() for p in parts] == [[1, 3], [0, 2], [4, 5, 6]]
    with pytest.raises(DataError, match="3 groups but members=4"):
        natural(groups, members=4)
    with pytest.raises(DataError, match="member 0 gets 2 examples"):
        natural(groups, members=3, min_samples=3)


def test_explicit_partition_stores_and_checks() -> None:
    part = ExplicitPartition([np.array([0, 2]), np.array([], dtype=np.int64), np.array([1])], num_rows=4)
    assert len(part) == 3
    assert part.indices(0).tolist() == [0, 2] and part.indices(1).size == 0
    assert part.sizes(np.array([0, 1, 2])).tolist() == [2, 0, 1]
    assert part.owners(4).tolist() == [0, 2, 0, -1]
    with pytest.raises(DataError, match="row 1 to more than one member"):
        ExplicitPartition([np.array([0, 1]), np.array([1])], num_rows=3)
    with pytest.raises(DataError, match="member 3 out of range"):
        part.indices(3)


def test_sampled_partition_is_a_function_of_seed_and_member() -> None:
    labels = np.repeat(np.arange(10), 140)
    a = SampledPartition(labels, members=100_000, samples_per_member=40, seed=9, alpha=0.1)
    b = SampledPartition(labels, members=100_000, samples_per_member=40, seed=9, alpha=0.1)
    assert len(a) == 100_000
    assert np.array_equal(a.indices(99_999), b.indices(99_999))
    assert np.array_equal(a.indices(12), a.indices(12))
    assert not np.array_equal(a.indices(12), a.indices(13))
    assert a.sizes(np.array([0, 5])).tolist() == [40, 40]
    picked = a.indices(77)
    assert picked.size == 40 and np.unique(picked).size == 40  # no repeats while the class suffices
    mean_entropy = np.mean([entropy_bits(labels[a.indices(m)]) for m in range(50)])
    assert mean_entropy < 1.5  # alpha = 0.1: a few classes per member
    with pytest.raises(DataError, match="member 100000 out of range"):
        a.indices(100_000)


def test_sampled_partition_mixes() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 30, 940])
    sharded = SampledPartition(labels, members=50, samples_per_member=30, seed=1, mix="shards")
    assert max(np.unique(labels[sharded.indices(m)]).size for m in range(50)) <= 2
    small = sharded.indices(0)
    assert small.size == 30  # a class of 10 rows still yields the requested count
    iid_mix = SampledPartition(labels, members=50, samples_per_member=200, seed=1, mix="iid")
    drawn = np.concatenate([labels[iid_mix.indices(m)] for m in range(50)])
    np.testing.assert_allclose(np.bincount(drawn) / drawn.size, [0.01, 0.02, 0.03, 0.94], atol=0.01)
