"""A simulated federation's data: a central held-out set plus each member's local train/test split.

:func:`build_federated_data` works in three steps, all deterministic by seed:

1. **Held-out split.** ``ceil(holdout * n)`` rows are set aside for central evaluation, stratified by
   label (and by group, for naturally partitioned data, so every bank gives its share).
2. **Partition** of the remaining rows (the *pool*) across members with one of the schemes of
   :mod:`fedswarm.data.partition`; with ``samples_per_member`` set, the lazy :class:`SampledPartition`
   is used instead, and nothing is computed per member until that member is asked for.
3. **Local split.** A member with n rows keeps ``t = round(test_fraction * n)`` of them, clipped to
   ``1..n-1``, as its local test split, so it always has at least one training example. A member with a
   single row (or ``test_fraction == 0``) gets an *empty* test split: it trains but contributes no
   examples to local evaluation, and evaluations weighted by example count ignore it. The test rows
   are chosen stratified by label: the member's rows are ordered by (label, a fixed random key per pool
   row) and every (n/t)-th one is taken.

The local split of a member depends only on the seed and its own rows, so ``local(m)`` gives the same
answer in any order, in any process, on any backend.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from fedswarm.core.data import Arrays, LocalData
from fedswarm.core.errors import ConfigurationError, DataError, SpecError
from fedswarm.core.task import DataInfo
from fedswarm.data import partition as part
from fedswarm.data.datasets import ArrayDataset
from fedswarm.data.partition import ExplicitPartition, IndexArray, Partition, SampledPartition

__all__ = ["DataSummary", "FederatedData", "MemberSummary", "Scheme", "build_federated_data"]

Scheme: TypeAlias = Literal["iid", "dirichlet", "shards", "quantity", "natural"]
_SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "shards", "quantity", "natural")
_LAZY_SCHEMES: tuple[str, ...] = ("iid", "dirichlet", "shards")
_HOLDOUT, _PARTITION, _SPLIT, _SAMPLE = 1, 2, 3, 4  # stream tags derived from the run seed


def _stream(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([seed, tag])


def _test_counts(sizes: IndexArray, fraction: float) -> IndexArray:
    """Local test-split sizes: round(fraction * n) clipped to 1..n-1, and 0 when n < 2 or fraction is 0."""
    if fraction <= 0.0:
        return np.zeros_like(sizes)
    t = np.clip(np.floor(fraction * sizes + 0.5).astype(np.int64), 1, np.maximum(sizes - 1, 1))
    return np.where(sizes >= 2, t, 0)


def _picked(position: IndexArray, count: IndexArray | int, t: IndexArray | int) -> npt.NDArray[np.bool_]:
    """Evenly spaced choice of t out of count positions (exactly t are True)."""
    return np.asarray(((position + 1) * t) // count > (position * t) // count)


def _holdout_split(strata: IndexArray, fraction: float, rng: np.random.Generator) -> tuple[IndexArray, IndexArray]:
    """Stratified split into (held-out rows, pool rows), both ascending."""
    n = strata.size
    total = math.ceil(fraction * n - 1e-9) if fraction > 0.0 else 0
    _, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    take = part.apportion(total, counts.astype(np.float64))
    perm = rng.permutation(n)
    order = perm[np.argsort(inverse[perm], kind="stable")]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    held = rank < take[inverse]
    return np.flatnonzero(held), np.flatnonzero(~held)


@dataclass(frozen=True, slots=True)
class MemberSummary:
    """One member's line in :meth:`FederatedData.describe`."""

    member: int
    train: int
    test: int
    label_entropy_bits: float
    majority_class: str
    majority_share: float


@dataclass(frozen=True, slots=True)
class DataSummary:
    """Sizes over all members, and label statistics of the first ``len(rows)`` members."""

    dataset: str
    scheme: str
    lazy: bool
    members: int
    num_features: int
    num_classes: int
    holdout: int
    train_total: int
    train_min: int
    train_median: float
    train_max: int
    rows: tuple[MemberSummary, ...]

    def format_table(self) -> str:
        """A plain-text table, one line per described member."""
        kind = f"{self.scheme} (sampled)" if self.lazy else self.scheme
        lines = [
            f"dataset {self.dataset}: {self.members} members, scheme {kind}, {self.num_features} features, "
            f"{self.num_classes} classes, {self.holdout} held-out rows",
            f"train rows per member: min {self.train_min}, median {self.train_median:g}, "
            f"max {self.train_max}, total {self.train_total}",
            f"label entropy in bits (max {math.log2(max(self.num_classes, 1)):.2f})",
            f"{'member':>8} {'train':>7} {'test':>6} {'entropy':>8}  majority class",
        ]
        lines += [
            f"{r.member:>8} {r.train:>7} {r.test:>6} {r.label_entropy_bits:>8.3f}  "
            f"{r.majority_class} ({r.majority_share:.0%})"
            for r in self.rows
        ]
        if len(self.rows) < self.members:
            lines.append(f"... {self.members - len(self.rows)} more members")
        return "\n".join(lines)


class FederatedData:
    """The data of a simulated federation; build it with :func:`build_federated_data`.

    Member data is computed on first use and kept in a small LRU cache of ``cache_size`` members; arrays
    handed out are read-only, since the cache shares them between calls.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        *,
        pool: IndexArray,
        held_out: IndexArray,
        partition: Partition,
        scheme: Scheme,
        test_fraction: float,
        seed: int,
        cache_size: int,
    ) -> None:
        self._dataset = dataset
        self._pool = pool
        self._pool_y = dataset.y[pool]
        self._keys = _stream(seed, _SPLIT).random(pool.size)
        self._partition = partition
        self._scheme: Scheme = scheme
        self._test_fraction = test_fraction
        self._seed = seed
        self._cache: OrderedDict[int, LocalData] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._held_out = held_out
        held_out.setflags(write=False)
        pool.setflags(write=False)
        self._holdout = self._arrays(held_out, pooled=False)

    # -- shape of the federation --------------------------------------------------------------------------

    @property
    def members(self) -> int:
        return len(self._partition)

    @property
    def num_features(self) -> int:
        return self._dataset.num_features

    @property
    def num_classes(self) -> int:
        return self._dataset.num_classes

    @property
    def dataset(self) -> ArrayDataset:
        return self._dataset

    @property
    def scheme(self) -> Scheme:
        return self._scheme

    @property
    def lazy(self) -> bool:
        """Whether members are sampled on demand (:class:`SampledPartition`)."""
        return not isinstance(self._partition, ExplicitPartition)

    @property
    def partition(self) -> Partition:
        return self._partition

    @property
    def info(self) -> DataInfo:
        """What a task may know before seeing data."""
        return DataInfo(self.num_features, self.num_classes, self._dataset.feature_names)

    # -- member data --------------------------------------------------------------------------------------

    def local(self, member: int) -> LocalData:
        """Member ``member``'s local train and test splits (cached).

        Raises
        ------
        DataError
            If ``member`` is not in ``0..members-1``.
        """
        with self._lock:
            hit = self._cache.get(member)
            if hit is not None:
                self._cache.move_to_end(member)
                return hit
        train, test = self._split(self._partition.indices(member))
        data = LocalData(self._arrays(train), self._arrays(test), self.num_classes)
        with self._lock:
            self._cache[member] = data
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return data

    def dataset_rows(self, member: int) -> IndexArray:
        """Rows of the pooled dataset that ``member`` owns (train and test), for audits and tests."""
        return self._pool[self._partition.indices(member)]

    @property
    def holdout(self) -> Arrays:
        """The pooled held-out split for central evaluation (read-only arrays)."""
        return self._holdout

    @property
    def holdout_rows(self) -> IndexArray:
        """Rows of the pooled dataset held out for central evaluation, ascending."""
        return self._held_out

    def member_sizes(self, members: Sequence[int]) -> IndexArray:
        """Local training-split sizes of ``members`` (the weights of FedAvg), without building them."""
        ids = np.asarray(members, dtype=np.int64)
        bad = ids[(ids < 0) | (ids >= self.members)]
        if bad.size:
            raise DataError(f"member {int(bad[0])} out of range 0..{self.members - 1}")
        sizes = self._partition.sizes(ids)
        return sizes - _test_counts(sizes, self._test_fraction)

    def label_histogram(self, member: int) -> IndexArray:
        """Count of each class over all of ``member``'s rows (train and test), length ``num_classes``."""
        labels = self._pool_y[self._partition.indices(member)]
        return np.bincount(labels, minlength=self.num_classes).astype(np.int64)

    def pooled_train(self, *, max_rows: int = 100_000) -> Arrays:
        """The union of the members' training splits, for a centralized baseline, in random order.

        For an eager partition this is exact (every pool row owned by a member and not in its local test
        split, once). For the lazy partition, where members overlap, it is the concatenation of the
        training splits of all members if they hold at most ``max_rows`` rows together, otherwise of a
        seeded random subset of members holding at most ``max_rows`` rows: an unbiased sample of the
        examples the federation trains on, with their repetitions.
        """
        if isinstance(self._partition, ExplicitPartition):
            rows = self._pooled_explicit(self._partition)
        else:
            sizes = self.member_sizes(range(self.members))
            chosen = np.arange(self.members)
            if int(sizes.sum()) > max_rows:
                perm = _stream(self._seed, _SAMPLE).permutation(self.members)
                keep = int(np.searchsorted(np.cumsum(sizes[perm]), max_rows, side="right"))
                chosen = np.sort(perm[: max(keep, 1)])
            parts = [self._split(self._partition.indices(int(m)))[0] for m in chosen]
            rows = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        return self._arrays(rows)

    def describe(self, *, max_members: int = 20) -> DataSummary:
        """Summary: sizes over all members, label entropy of the first ``max_members`` members."""
        sizes = self.member_sizes(range(self.members))
        rows = []
        for m in range(min(self.members, max_members)):
            hist = self.label_histogram(m)
            share = hist / max(int(hist.sum()), 1)
            nonzero = share[share > 0]
            top = int(np.argmax(hist))
            n = int(hist.sum())
            rows.append(
                MemberSummary(
                    member=m,
                    train=int(sizes[m]),
                    test=n - int(sizes[m]),
                    label_entropy_bits=float(-(nonzero * np.log2(nonzero)).sum()) + 0.0,
                    majority_class=self._dataset.class_names[top],
                    majority_share=float(share[top]),
                )
            )
        return DataSummary(
            dataset=self._dataset.name,
            scheme=self._scheme,
            lazy=self.lazy,
            members=self.members,
            num_features=self.num_features,
            num_classes=self.num_classes,
            holdout=len(self.holdout),
            train_total=int(sizes.sum()),
            train_min=int(sizes.min()),
            train_median=float(np.median(sizes)),
            train_max=int(sizes.max()),
            rows=tuple(rows),
        )

    # -- internals ----------------------------------------------------------------------------------------

    def _arrays(self, rows: IndexArray, *, pooled: bool = True) -> Arrays:
        """Read-only feature/label arrays of pool rows (or of dataset rows when ``pooled`` is false)."""
        where = self._pool[rows] if pooled else rows
        x, y = self._dataset.x[where], self._dataset.y[where]
        x.setflags(write=False)
        y.setflags(write=False)
        return Arrays(x, y)

    def _split(self, rows: IndexArray) -> tuple[IndexArray, IndexArray]:
        """(train, test) pool rows of one member, train in random order."""
        n = rows.size
        if n == 0:
            return rows, rows
        t = 0 if n < 2 or self._test_fraction <= 0.0 else min(max(math.floor(self._test_fraction * n + 0.5), 1), n - 1)
        order = rows[np.lexsort((self._keys[rows], self._pool_y[rows]))]
        test = _picked(np.arange(n, dtype=np.int64), n, t)
        train = order[~test]
        return train[np.argsort(self._keys[train], kind="stable")], order[test]

    def _pooled_explicit(self, partition: ExplicitPartition) -> IndexArray:
        """All members' training rows at once, identical to the union of :meth:`_split` results."""
        owner = partition.owners(self._pool.size)
        owned = np.flatnonzero(owner >= 0)
        order = owned[np.lexsort((self._keys[owned], self._pool_y[owned], owner[owned]))]
        own = owner[order]
        sizes = np.bincount(own, minlength=self.members).astype(np.int64)
        position = np.arange(order.size, dtype=np.int64) - (np.cumsum(sizes) - sizes)[own]
        test = _picked(position, sizes[own], _test_counts(sizes, self._test_fraction)[own])
        train = order[~test]
        return train[np.argsort(self._keys[train], kind="stable")]


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise SpecError(f"data.{field}", message)


def build_federated_data(
    dataset: ArrayDataset,
    *,
    members: int,
    scheme: Scheme,
    seed: int,
    alpha: float = 0.5,
    shards_per_member: int = 2,
    min_samples: int = 2,
    samples_per_member: int | None = None,
    holdout: float = 0.2,
    test_fraction: float = 0.2,
    size_distribution: Literal["dirichlet", "power_law"] = "dirichlet",
    cache_size: int = 128,
) -> FederatedData:
    """Split ``dataset`` into a held-out set and ``members`` members' local data.

    Parameters
    ----------
    dataset:
        The pooled data.
    members:
        Number of members.
    scheme:
        ``iid``, ``dirichlet`` (label skew, ``alpha``), ``shards`` (``shards_per_member`` single-class
        shards each), ``quantity`` (size skew, ``alpha`` and ``size_distribution``) or ``natural`` (one
        member per group of the dataset; ``members`` must equal the number of groups).
    seed:
        Non-negative run seed.
    alpha:
        Dirichlet concentration (``dirichlet``, ``quantity``); power-law tail index for
        ``size_distribution="power_law"``.
    min_samples:
        Minimum rows per member for the eager schemes (the default 2 leaves room for one test example).
    samples_per_member:
        If set, use the lazy :class:`~fedswarm.data.partition.SampledPartition` with this many rows per
        member (schemes ``iid``, ``dirichlet`` and ``shards`` only); members may then share rows.
    holdout:
        Fraction of the dataset held out, stratified, for central evaluation, in [0, 1).
    test_fraction:
        Fraction of each member's rows kept for local evaluation, in [0, 1); see the module docstring.
    cache_size:
        Number of members whose :class:`LocalData` is kept.

    Raises
    ------
    SpecError
        A knob out of range (path ``data.<name>``).
    ConfigurationError
        ``samples_per_member`` with a scheme the lazy partition does not support.
    DataError
        The partition cannot give every member enough data (the message names the member).
    """
    _require(scheme in _SCHEMES, "scheme", f"unknown scheme '{scheme}'; choose one of {', '.join(_SCHEMES)}")
    _require(members >= 1, "members", f"must be at least 1, got {members}")
    _require(seed >= 0, "seed", f"must be non-negative, got {seed}")
    _require(0.0 <= holdout < 1.0, "holdout", f"must lie in [0, 1), got {holdout}")
    _require(0.0 <= test_fraction < 1.0, "test_fraction", f"must lie in [0, 1), got {test_fraction}")
    _require(alpha > 0.0, "alpha", f"must be positive, got {alpha}")
    _require(shards_per_member >= 1, "shards_per_member", f"must be at least 1, got {shards_per_member}")
    _require(min_samples >= 0, "min_samples", f"must be non-negative, got {min_samples}")
    _require(cache_size >= 1, "cache_size", f"must be at least 1, got {cache_size}")
    if samples_per_member is not None:
        _require(samples_per_member >= 1, "samples_per_member", f"must be at least 1, got {samples_per_member}")
        if scheme not in _LAZY_SCHEMES:
            raise ConfigurationError(
                f"data.samples_per_member (lazy sampling) works with scheme {', '.join(_LAZY_SCHEMES)}, not '{scheme}'"
            )
    if scheme == "natural" and dataset.groups is None:
        raise SpecError("data.scheme", f"dataset '{dataset.name}' has no natural groups; choose another scheme")

    strata = dataset.y if dataset.groups is None else dataset.groups * dataset.num_classes + dataset.y
    held_out, pool = _holdout_split(strata, holdout, _stream(seed, _HOLDOUT))
    _require(pool.size > 0, "holdout", f"leaves no rows to partition out of {len(dataset)}")
    labels = dataset.y[pool]
    pseed = int(np.random.SeedSequence([seed, _PARTITION]).generate_state(1)[0])
    partition: Partition
    if samples_per_member is not None:
        mix: Literal["dirichlet", "iid", "shards"] = (
            "iid" if scheme == "iid" else "shards" if scheme == "shards" else "dirichlet"
        )
        partition = SampledPartition(
            labels,
            members=members,
            samples_per_member=samples_per_member,
            seed=pseed,
            mix=mix,
            alpha=alpha,
            shards_per_member=shards_per_member,
        )
    else:
        if scheme == "iid":
            parts = part.iid(labels, members=members, seed=pseed, min_samples=min_samples)
        elif scheme == "dirichlet":
            parts = part.dirichlet(labels, members=members, alpha=alpha, seed=pseed, min_samples=min_samples)
        elif scheme == "shards":
            parts = part.shards(
                labels, members=members, seed=pseed, shards_per_member=shards_per_member, min_samples=min_samples
            )
        elif scheme == "quantity":
            parts = part.quantity(
                labels,
                members=members,
                alpha=alpha,
                seed=pseed,
                min_samples=min_samples,
                distribution=size_distribution,
            )
        else:
            assert dataset.groups is not None
            parts = part.natural(dataset.groups[pool], members=members, min_samples=min_samples)
        partition = ExplicitPartition(parts, num_rows=pool.size)
    return FederatedData(
        dataset,
        pool=pool,
        held_out=held_out,
        partition=partition,
        scheme=scheme,
        test_fraction=test_fraction,
        seed=seed,
        cache_size=cache_size,
    )
