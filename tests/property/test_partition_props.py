"""Invariants of every partitioner, over random label vectors."""

from __future__ import annotations

from typing import Literal

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fedswarm.data.partition import SampledPartition, dirichlet, iid, quantity, shards

labels_st = st.lists(st.integers(0, 5), min_size=20, max_size=300).map(lambda v: np.array(v, dtype=np.int64))
members_st = st.integers(1, 8)
seed_st = st.integers(0, 2**32 - 1)
Mix = Literal["dirichlet", "iid", "shards"]
MIXES: tuple[Mix, ...] = ("dirichlet", "iid", "shards")


def check(parts: list[np.ndarray], n: int, members: int, *, complete: bool) -> None:
    assert len(parts) == members
    flat = np.concatenate(parts)
    assert flat.dtype == np.int64
    assert flat.size == np.unique(flat).size  # no index in two members
    assert flat.size == 0 or (flat.min() >= 0 and flat.max() < n)
    if complete:
        assert flat.size == n


@settings(max_examples=60, deadline=None)
@given(labels_st, members_st, seed_st)
def test_iid(labels: np.ndarray, members: int, seed: int) -> None:
    parts = iid(labels, members=members, seed=seed, min_samples=0)
    check(parts, labels.size, members, complete=True)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(
        np.array_equal(a, b) for a, b in zip(parts, iid(labels, members=members, seed=seed, min_samples=0), strict=True)
    )


@settings(max_examples=60, deadline=None)
@given(labels_st, members_st, seed_st, st.floats(0.01, 100.0))
def test_dirichlet(labels: np.ndarray, members: int, seed: int, alpha: float) -> None:
    parts = dirichlet(labels, members=members, alpha=alpha, seed=seed, min_samples=0)
    check(parts, labels.size, members, complete=True)
    again = dirichlet(labels, members=members, alpha=alpha, seed=seed, min_samples=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@settings(max_examples=60, deadline=None)
@given(labels_st, members_st, seed_st, st.integers(1, 3))
def test_shards(labels: np.ndarray, members: int, seed: int, per_member: int) -> None:
    assume(members * per_member <= labels.size)
    parts = shards(labels, members=members, seed=seed, shards_per_member=per_member, min_samples=0)
    check(parts, labels.size, members, complete=members * per_member >= np.unique(labels).size)
    assert all(np.unique(labels[p]).size <= per_member for p in parts)


@settings(max_examples=60, deadline=None)
@given(labels_st, members_st, seed_st, st.floats(0.05, 50.0), st.sampled_from(["dirichlet", "power_law"]))
def test_quantity(labels: np.ndarray, members: int, seed: int, alpha: float, distribution: str) -> None:
    min_samples = labels.size // (2 * members)
    parts = quantity(
        labels,
        members=members,
        alpha=alpha,
        seed=seed,
        min_samples=min_samples,
        distribution="dirichlet" if distribution == "dirichlet" else "power_law",
    )
    check(parts, labels.size, members, complete=True)
    assert min(p.size for p in parts) >= min_samples


@settings(max_examples=40, deadline=None)
@given(labels_st, st.integers(1, 10**6), seed_st, st.integers(1, 50), st.sampled_from(MIXES))
def test_sampled(labels: np.ndarray, members: int, seed: int, samples: int, kind: Mix) -> None:
    part = SampledPartition(labels, members=members, samples_per_member=samples, seed=seed, mix=kind, alpha=0.5)
    member = members - 1
    rows = part.indices(member)
    assert rows.size == samples and rows.min() >= 0 and rows.max() < labels.size
    assert np.array_equal(
        rows,
        SampledPartition(labels, members=members, samples_per_member=samples, seed=seed, mix=kind, alpha=0.5).indices(
            member
        ),
    )
    for value in np.unique(labels[rows]):  # repeats only when a class has fewer rows than drawn
        drawn = rows[labels[rows] == value]
        assert np.unique(drawn).size == min(drawn.size, int((labels == value).sum()))
    if kind == "shards":
        assert np.unique(labels[rows]).size <= 2
