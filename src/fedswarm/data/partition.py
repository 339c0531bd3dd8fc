"""Partitioners: split a pooled dataset across simulated members.

The eager partitioners are pure functions of the labels (or groups) and a seed. They return one sorted
int64 index array per member; no index appears in two members. Each checks that every member received
at least ``min_samples`` rows and otherwise raises :class:`DataError` naming the member.

* :func:`iid` — a uniform random split into near-equal parts.
* :func:`dirichlet` — label skew: for every class, the shares of the members are drawn from
  Dirichlet(α·1); small α gives members few classes, large α approaches IID (Yurochkin et al., 2019,
  "Bayesian Nonparametric Federated Learning of Neural Networks"; Hsu, Qi & Brown, 2019, "Measuring the
  Effects of Non-Identical Data Distribution for Federated Visual Classification").
* :func:`shards` — the pathological split of McMahan et al. (2017), "Communication-Efficient Learning of
  Deep Networks from Decentralized Data": each class is cut into single-class shards (at least one per
  class when possible, otherwise in proportion to its size) and every member receives ``shards_per_member`` random shards, hence
  at most that many classes.
* :func:`quantity` — size skew with IID labels (Li, Diao, Chen & He, 2022, "Federated Learning on
  Non-IID Data Silos: An Experimental Study"): member shares ~ Dirichlet(α·1), or power law, where member
  m's weight is a Pareto(α) draw (tail index α, minimum 1; smaller α is more skewed). Every member first
  gets ``min_samples`` rows; the rest is apportioned by the shares.
* :func:`natural` — one member per distinct group (bank, hospital, ...).

:class:`SampledPartition` is lazy, for federations far larger than the pool: member m's rows are a
function of (seed, m) alone (see its docstring), so 100,000 members cost no more memory than one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import DataError

__all__ = [
    "ExplicitPartition",
    "IndexArray",
    "Partition",
    "SampledPartition",
    "apportion",
    "dirichlet",
    "iid",
    "natural",
    "quantity",
    "shards",
]

IndexArray: TypeAlias = npt.NDArray[np.int64]
_Labels: TypeAlias = npt.NDArray[np.integer[Any]]


class Partition(Protocol):
    """Which pool rows each member owns."""

    def __len__(self) -> int:
        """Number of members."""
        ...

    def indices(self, member: int) -> IndexArray:
        """Pool row indices of ``member`` (0-based)."""
        ...

    def sizes(self, members: IndexArray) -> IndexArray:
        """Number of rows of each of ``members``, without materializing them."""
        ...


# -- helpers ------------------------------------------------------------------------------------------------


def apportion(total: int, weights: npt.NDArray[np.floating[Any]]) -> IndexArray:
    """Split the integer ``total`` in proportion to ``weights`` (largest remainder, ties to lower index)."""
    if total == 0:
        return np.zeros(weights.shape, dtype=np.int64)
    quota = np.asarray(total * weights / weights.sum(), dtype=np.float64)
    counts: IndexArray = np.floor(quota).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        counts[np.argsort(-(quota - counts), kind="stable")[:short]] += 1
    return counts


def _dirichlet(rng: np.random.Generator, alpha: float, size: int) -> npt.NDArray[np.float64]:
    """One Dirichlet(α·1) draw that stays finite for tiny α (the α→0 limit is a random one-hot)."""
    gammas = rng.standard_gamma(alpha, size)
    total = gammas.sum()
    if not total > 0.0:
        gammas = np.zeros(size)
        gammas[rng.integers(size)] = 1.0
        total = 1.0
    return np.asarray(gammas / total, dtype=np.float64)


def _split_by_owner(owner: IndexArray, members: int) -> list[IndexArray]:
    """Rows grouped by owner (-1 = nobody), each group ascending."""
    assigned = np.flatnonzero(owner >= 0)
    order = assigned[np.argsort(owner[assigned], kind="stable")]
    cuts = np.cumsum(np.bincount(owner[assigned], minlength=members))[:-1]
    return [part.astype(np.int64, copy=False) for part in np.split(order, cuts)]


def _check_sizes(scheme: str, sizes: IndexArray, min_samples: int, advice: str) -> None:
    short = np.flatnonzero(sizes < min_samples)
    if short.size:
        m = int(short[0])
        raise DataError(
            f"{scheme} partition: member {m} gets {int(sizes[m])} examples, fewer than "
            f"min_samples={min_samples} ({short.size} member(s) short); {advice}"
        )


def _check_members(members: int, min_samples: int) -> None:
    if members < 1:
        raise DataError(f"members must be at least 1, got {members}")
    if min_samples < 0:
        raise DataError(f"min_samples must be non-negative, got {min_samples}")


# -- eager partitioners -------------------------------------------------------------------------------------


def iid(labels: _Labels, *, members: int, seed: int, min_samples: int = 1) -> list[IndexArray]:
    """Shuffle and cut into ``members`` parts whose sizes differ by at most one.

    Raises
    ------
    DataError
        If a member would get fewer than ``min_samples`` rows (too many members for the pool).
    """
    _check_members(members, min_samples)
    n = len(labels)
    sizes = np.full(members, n // members, dtype=np.int64)
    sizes[: n % members] += 1
    _check_sizes("iid", sizes, min_samples, f"use at most {n // max(min_samples, 1)} members for {n} rows")
    owner = np.empty(n, dtype=np.int64)
    owner[np.random.default_rng(seed).permutation(n)] = np.repeat(np.arange(members), sizes)
    return _split_by_owner(owner, members)


def dirichlet(
    labels: _Labels,
    *,
    members: int,
    alpha: float,
    seed: int,
    min_samples: int = 1,
    max_attempts: int = 100,
) -> list[IndexArray]:
    """Label skew: each class is split across members with shares ~ Dirichlet(α·1).

    A draw that leaves some member with fewer than ``min_samples`` rows is repeated, at most
    ``max_attempts`` times in total.

    Raises
    ------
    DataError
        Naming the member left short in the last draw, if no draw succeeds.
    """
    _check_members(members, min_samples)
    if not alpha > 0.0:
        raise DataError(f"dirichlet partition: alpha must be positive, got {alpha}")
    labels = np.asarray(labels)
    n = len(labels)
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == k) for k in np.unique(labels)]
    member_ids = np.arange(members)
    sizes = np.zeros(members, dtype=np.int64)
    for _ in range(max(max_attempts, 1)):
        owner = np.empty(n, dtype=np.int64)
        for rows in classes:
            shares = _dirichlet(rng, alpha, members)
            cuts = np.minimum((np.cumsum(shares) * rows.size).astype(np.int64), rows.size)
            cuts[-1] = rows.size
            owner[rng.permutation(rows)] = np.repeat(member_ids, np.diff(cuts, prepend=0))
        sizes = np.bincount(owner, minlength=members)
        if sizes.min() >= min_samples:
            return _split_by_owner(owner, members)
    _check_sizes(
        "dirichlet",
        sizes,
        min_samples,
        f"no draw out of {max_attempts} succeeded; use fewer members or a larger alpha (now {alpha})",
    )
    raise AssertionError("unreachable")  # pragma: no cover


def shards(
    labels: _Labels, *, members: int, seed: int, shards_per_member: int = 2, min_samples: int = 1
) -> list[IndexArray]:
    """Pathological label skew: every member gets ``shards_per_member`` single-class shards.

    The pool is cut into ``members * shards_per_member`` shards. With at least as many shards as
    classes, every class gets one shard and the remaining shards go to the classes in proportion to
    their remaining rows (largest remainder); with fewer shards than classes, shards go in proportion to
    class size and the classes left without a shard are left out.

    Raises
    ------
    DataError
        If there are more shards than rows, or a member gets fewer than ``min_samples`` rows.
    """
    _check_members(members, min_samples)
    labels = np.asarray(labels)
    n = len(labels)
    total = members * shards_per_member
    if shards_per_member < 1 or total > n:
        raise DataError(
            f"shards partition: {members} members x {shards_per_member} shards needs at least {total} rows, "
            f"the pool has {n}; use fewer members or shards_per_member"
        )
    rng = np.random.default_rng(seed)
    values, counts = np.unique(labels, return_counts=True)
    if total >= values.size:  # one shard per class first, the rest in proportion to the remaining rows
        per_class = 1 + apportion(total - values.size, (counts - 1).astype(np.float64))
    else:
        per_class = apportion(total, counts.astype(np.float64))
    shard_of_member = rng.permutation(total)  # shard s goes to member shard_of_member[s] // spm
    owner = np.full(n, -1, dtype=np.int64)
    next_shard = 0
    for value, k_shards in zip(values, per_class, strict=True):
        if k_shards == 0:  # fewer shards than classes: this class is left out
            continue
        rows = rng.permutation(np.flatnonzero(labels == value))
        for piece in np.array_split(rows, int(k_shards)):
            owner[piece] = shard_of_member[next_shard] // shards_per_member
            next_shard += 1
    sizes = np.bincount(owner[owner >= 0], minlength=members)
    _check_sizes("shards", sizes, min_samples, "use fewer members or more shards_per_member")
    return _split_by_owner(owner, members)


def quantity(
    labels: _Labels,
    *,
    members: int,
    alpha: float,
    seed: int,
    min_samples: int = 1,
    distribution: Literal["dirichlet", "power_law"] = "dirichlet",
) -> list[IndexArray]:
    """Size skew with IID labels: member sizes follow Dirichlet(α·1) or power-law shares.

    Raises
    ------
    DataError
        If ``members * min_samples`` exceeds the pool (naming the first member that cannot be served).
    """
    _check_members(members, min_samples)
    if not alpha > 0.0:
        raise DataError(f"quantity partition: alpha must be positive, got {alpha}")
    n = len(labels)
    rng = np.random.default_rng(seed)
    if members * min_samples > n:
        sizes = np.full(members, min_samples, dtype=np.int64)
        sizes[n // max(min_samples, 1) :] = 0
        _check_sizes("quantity", sizes, min_samples, f"{n} rows cannot give {members} members {min_samples} each")
    shares = _dirichlet(rng, alpha, members) if distribution == "dirichlet" else rng.pareto(alpha, members) + 1.0
    sizes = min_samples + apportion(n - members * min_samples, shares)
    owner = np.empty(n, dtype=np.int64)
    owner[rng.permutation(n)] = np.repeat(np.arange(members), sizes)
    return _split_by_owner(owner, members)


def natural(groups: npt.NDArray[np.integer[Any]], *, members: int, min_samples: int = 1) -> list[IndexArray]:
    """One member per distinct group value, in sorted group order.

    Raises
    ------
    DataError
        If the number of groups differs from ``members``, or a group has fewer than ``min_samples`` rows.
    """
    _check_members(members, min_samples)
    values, owner = np.unique(np.asarray(groups), return_inverse=True)
    if values.size != members:
        raise DataError(
            f"natural partition: the data has {values.size} groups but members={members}; set members to {values.size}"
        )
    owner = owner.astype(np.int64).reshape(-1)
    sizes = np.bincount(owner, minlength=members)
    _check_sizes("natural", sizes, min_samples, "that group has too little data")
    return _split_by_owner(owner, members)


# -- partitions as objects ----------------------------------------------------------------------------------


class ExplicitPartition:
    """A materialized partition: one index array per member, stored as one flat array plus offsets."""

    __slots__ = ("_flat", "_offsets")

    def __init__(self, parts: Sequence[IndexArray], *, num_rows: int) -> None:
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._flat = np.concatenate(list(parts)).astype(np.int64) if parts else np.empty(0, dtype=np.int64)
        if self._flat.size and (self._flat.min() < 0 or self._flat.max() >= num_rows):
            raise DataError(f"partition refers to rows outside 0..{num_rows - 1}")
        seen = np.bincount(self._flat, minlength=num_rows)
        if seen.size and seen.max() > 1:
            row = int(np.argmax(seen > 1))
            raise DataError(f"partition assigns row {row} to more than one member")
        self._flat.setflags(write=False)

    def __len__(self) -> int:
        return int(self._offsets.size - 1)

    def indices(self, member: int) -> IndexArray:
        if not 0 <= member < len(self):
            raise DataError(f"member {member} out of range 0..{len(self) - 1}")
        return self._flat[self._offsets[member] : self._offsets[member + 1]]

    def sizes(self, members: IndexArray) -> IndexArray:
        return np.diff(self._offsets)[members]

    def owners(self, num_rows: int) -> IndexArray:
        """The owning member of every pool row, -1 where no member owns it."""
        owner = np.full(num_rows, -1, dtype=np.int64)
        owner[self._flat] = np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self._offsets))
        return owner


class SampledPartition:
    """A lazy partition whose member m is a pure function of (seed, m).

    Member m seeds a generator with ``(seed, m)``, draws its label mix, then ``samples_per_member``
    class labels from that mix, and for each class that many rows from the pool's rows of that class:
    without replacement within the member when the class has enough rows, otherwise every row of the
    class once and the excess with replacement.
    Different members may share rows (100,000 members cannot have disjoint rows from 1,437). Mixes:

    * ``"dirichlet"`` — mix ~ Dirichlet(α·1) over the classes present in the pool (Hsu et al., 2019);
    * ``"iid"`` — the pool's own class frequencies;
    * ``"shards"`` — uniform over ``shards_per_member`` distinct random classes.

    Memory is O(pool) for the per-class row lists and O(1) per member; nothing is stored per member.
    """

    __slots__ = ("_alpha", "_class_rows", "_members", "_mix", "_prior", "_samples", "_seed", "_shards")

    def __init__(
        self,
        labels: _Labels,
        *,
        members: int,
        samples_per_member: int,
        seed: int,
        mix: Literal["dirichlet", "iid", "shards"] = "dirichlet",
        alpha: float = 0.5,
        shards_per_member: int = 2,
    ) -> None:
        if members < 1 or samples_per_member < 1:
            raise DataError(
                f"sampled partition needs members >= 1 and samples_per_member >= 1, "
                f"got {members} and {samples_per_member}"
            )
        if mix == "dirichlet" and not alpha > 0.0:
            raise DataError(f"sampled partition: alpha must be positive, got {alpha}")
        labels = np.asarray(labels)
        if labels.size == 0:
            raise DataError("sampled partition: the pool is empty")
        values = np.unique(labels)
        self._class_rows = tuple(np.flatnonzero(labels == v).astype(np.int64) for v in values)
        counts = np.array([r.size for r in self._class_rows], dtype=np.float64)
        self._prior = counts / counts.sum()
        self._members = members
        self._samples = samples_per_member
        self._seed = seed
        self._mix = mix
        self._alpha = alpha
        self._shards = max(1, min(shards_per_member, len(self._class_rows)))

    def __len__(self) -> int:
        return self._members

    def sizes(self, members: IndexArray) -> IndexArray:
        return np.full(np.shape(members), self._samples, dtype=np.int64)

    def indices(self, member: int) -> IndexArray:
        if not 0 <= member < self._members:
            raise DataError(f"member {member} out of range 0..{self._members - 1}")
        rng = np.random.default_rng([self._seed, member])
        k = len(self._class_rows)
        if self._mix == "dirichlet":
            mix = _dirichlet(rng, self._alpha, k)
        elif self._mix == "shards":
            mix = np.zeros(k)
            mix[rng.choice(k, self._shards, replace=False)] = 1.0 / self._shards
        else:
            mix = self._prior
        counts = rng.multinomial(self._samples, mix)
        parts = []
        for rows, count in zip(self._class_rows, counts, strict=True):
            if count == 0:
                continue
            if count <= rows.size:  # a full shuffle is cheaper than choice() for small classes
                pick = (
                    rng.permutation(rows.size)[:count]
                    if rows.size <= 2048
                    else rng.choice(rows.size, int(count), replace=False)
                )
                parts.append(rows[pick])
            else:  # every row of the class once, the excess with replacement
                extra = rng.integers(0, rows.size, int(count) - rows.size)
                parts.append(np.concatenate([rng.permutation(rows), rows[extra]]))
        return np.concatenate(parts)
