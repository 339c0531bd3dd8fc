"""FederatedData: held-out split, local splits, caching, lazy federations."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from fedswarm.core.errors import ConfigurationError, DataError, SpecError
from fedswarm.data.datasets import ArrayDataset, load_dataset
from fedswarm.data.federated import build_federated_data

DIGITS = load_dataset("digits", seed=0, members=1)


def rows_of(x: np.ndarray, y: np.ndarray) -> list[tuple[float, ...]]:
    return sorted(tuple(r) for r in np.column_stack([x, y]).tolist())


def tiny(n: int) -> ArrayDataset:
    x = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
    return ArrayDataset("tiny", x, np.arange(n, dtype=np.int64) % 2, ("a", "b"), ("0", "1"), None, "t")


def test_holdout_is_stratified_and_disjoint_from_members() -> None:
    fed = build_federated_data(DIGITS, members=10, scheme="dirichlet", alpha=0.5, seed=3)
    assert len(fed.holdout) == 360  # ceil(0.2 * 1797); the pool keeps 1,437 rows
    per_class = np.bincount(fed.holdout.y, minlength=10)
    expected = 0.2 * np.bincount(DIGITS.y)
    assert np.all(np.abs(per_class - expected) <= 1)
    owned = np.concatenate([fed.dataset_rows(m) for m in range(10)])
    assert owned.size == np.unique(owned).size == 1437
    assert np.intersect1d(owned, fed.holdout_rows).size == 0


def test_local_split_sizes_and_rule_for_tiny_members() -> None:
    fed = build_federated_data(DIGITS, members=10, scheme="iid", seed=1, test_fraction=0.25)
    for m in range(10):
        n = fed.dataset_rows(m).size
        local = fed.local(m)
        assert len(local.test) == round(0.25 * n) and len(local.train) == n - len(local.test)
        assert local.num_classes == 10
    singles = build_federated_data(tiny(5), members=5, scheme="iid", seed=0, holdout=0.0, min_samples=1)
    assert all(len(singles.local(m).train) == 1 and len(singles.local(m).test) == 0 for m in range(5))
    assert singles.local(0).test.x.shape == (0, 2)
    pairs = build_federated_data(tiny(8), members=4, scheme="iid", seed=0, holdout=0.0, test_fraction=0.1)
    assert all(len(pairs.local(m).train) == 1 and len(pairs.local(m).test) == 1 for m in range(4))


def test_local_test_split_is_stratified() -> None:
    fed = build_federated_data(DIGITS, members=2, scheme="iid", seed=2)
    local = fed.local(0)
    train, test = np.bincount(local.train.y, minlength=10), np.bincount(local.test.y, minlength=10)
    assert np.all(np.abs(test - 0.2 * (train + test)) <= 1.0)


def test_member_sizes_histogram_and_pooled_train_agree_with_local() -> None:
    fed = build_federated_data(DIGITS, members=8, scheme="quantity", alpha=0.5, seed=4)
    sizes = fed.member_sizes(range(8))
    assert sizes.tolist() == [len(fed.local(m).train) for m in range(8)]
    for m in range(8):
        local = fed.local(m)
        expected = np.bincount(np.concatenate([local.train.y, local.test.y]), minlength=10)
        assert fed.label_histogram(m).tolist() == expected.tolist()
    pooled = fed.pooled_train()
    union_x = np.concatenate([fed.local(m).train.x for m in range(8)])
    union_y = np.concatenate([fed.local(m).train.y for m in range(8)])
    assert len(pooled) == int(sizes.sum())
    assert rows_of(pooled.x, pooled.y) == rows_of(union_x, union_y)
    with pytest.raises(DataError, match="member 8 out of range"):
        fed.member_sizes([0, 8])


def test_deterministic_by_seed_and_independent_of_access_order() -> None:
    a = build_federated_data(DIGITS, members=6, scheme="shards", seed=7)
    b = build_federated_data(DIGITS, members=6, scheme="shards", seed=7)
    c = build_federated_data(DIGITS, members=6, scheme="shards", seed=8)
    b.local(5)
    np.testing.assert_array_equal(a.local(3).train.x, b.local(3).train.x)
    np.testing.assert_array_equal(a.holdout.y, b.holdout.y)
    assert not np.array_equal(a.local(3).train.x, c.local(3).train.x)
    assert max(np.unique(a.label_histogram(m).nonzero()[0]).size for m in range(6)) <= 2


def test_cache_hits_are_fast_and_arrays_read_only() -> None:
    fed = build_federated_data(DIGITS, members=4, scheme="iid", seed=0, cache_size=2)
    first = fed.local(1)
    assert fed.local(1) is first
    start = time.perf_counter()
    for _ in range(2000):
        fed.local(1)
    assert (time.perf_counter() - start) / 2000 < 50e-6
    with pytest.raises(ValueError, match="read-only"):
        first.train.x[0, 0] = 1.0
    fed.local(2)
    fed.local(3)  # evicts member 1 (least recently used)
    assert fed.local(1) is not first
    np.testing.assert_array_equal(fed.local(1).train.x, first.train.x)


def test_natural_partition_gives_each_bank_its_rows() -> None:
    fraud = load_dataset("fraud_synthetic", seed=5, members=4, options={"transactions_per_bank": 1000})
    fed = build_federated_data(fraud, members=4, scheme="natural", seed=5)
    assert fraud.groups is not None
    for bank in range(4):
        rows = fed.dataset_rows(bank)
        assert np.all(fraud.groups[rows] == bank) and rows.size == 800  # 20% of each bank held out
    assert np.bincount(fraud.groups[fed.holdout_rows]).tolist() == [200] * 4


def test_describe_summarizes_sizes_and_entropy() -> None:
    fed = build_federated_data(DIGITS, members=30, scheme="shards", seed=0)
    summary = fed.describe(max_members=5)
    assert summary.members == 30 and len(summary.rows) == 5 and summary.holdout == 360
    assert summary.train_total == int(fed.member_sizes(range(30)).sum())
    assert all(0.0 <= r.label_entropy_bits <= 1.0 + 1e-9 for r in summary.rows)  # <= 2 classes
    text = summary.format_table()
    assert "30 members, scheme shards" in text and "... 25 more members" in text


def test_lazy_federation_of_100000_members_is_cheap_and_deterministic() -> None:
    tracemalloc.start()
    try:
        fed = build_federated_data(
            DIGITS, members=100_000, scheme="dirichlet", alpha=0.3, samples_per_member=32, seed=11
        )
        sizes = fed.member_sizes(range(100_000))
        last = fed.local(99_999)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20
    assert fed.members == 100_000 and fed.lazy
    assert len(fed.holdout) == 360
    assert np.all(sizes == 26) and len(last.train) == 26 and len(last.test) == 6  # round(6.4) = 6
    again = build_federated_data(DIGITS, members=100_000, scheme="dirichlet", alpha=0.3, samples_per_member=32, seed=11)
    np.testing.assert_array_equal(again.local(99_999).train.x, last.train.x)
    assert np.intersect1d(fed.dataset_rows(99_999), fed.holdout_rows).size == 0
    pooled = fed.pooled_train(max_rows=2_600)
    assert len(pooled) == 2_600  # 100 sampled members x 26 rows
    assert fed.describe(max_members=3).train_total == 2_600_000


def test_invalid_settings() -> None:
    with pytest.raises(SpecError) as info:
        build_federated_data(DIGITS, members=3, scheme="iid", seed=0, holdout=1.0)
    assert info.value.path == "data.holdout"
    with pytest.raises(SpecError) as info:
        build_federated_data(DIGITS, members=3, scheme="natural", seed=0)
    assert info.value.path == "data.scheme"
    with pytest.raises(ConfigurationError, match="not 'quantity'"):
        build_federated_data(DIGITS, members=3, scheme="quantity", seed=0, samples_per_member=10)
    with pytest.raises(DataError, match=r"dirichlet partition: member \d+"):
        build_federated_data(DIGITS, members=200, scheme="dirichlet", alpha=0.01, seed=0, min_samples=5)
