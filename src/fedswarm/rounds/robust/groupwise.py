"""Group-wise robust aggregation: robust rules over the sums of secure-aggregation groups.

Secure aggregation hides individual updates, so rules that compare updates (median, Krum, ...) cannot
run on its output. Group-wise aggregation splits each round's members at random into ``g`` groups, runs
one collection per group with an inner collector (a secure-aggregation collector, which reveals only the
group's sum, or the plain collector), and applies a robust rule to the ``g`` group means. This is the
bucketing idea of Karimireddy, He and Jaggi (2022, "Byzantine-Robust Learning on Heterogeneous Datasets
via Bucketing", ICLR), here with a secure sum per bucket.

What it tolerates: ``f`` attackers corrupt at most ``f`` group means (at worst one each), so the rule
over the groups must tolerate ``f`` corrupted inputs out of ``g``: the median needs ``f < g / 2``, the
trimmed mean ``f <= floor(beta * g)``, Krum ``g >= 2f + 3``, Bulyan ``g >= 4f + 3``. Smaller groups mean
more groups, hence more tolerated attackers and less honest variance lost to the rule, but each secure
sum then hides a member among fewer others and needs its secret-sharing threshold to be met within the
group (a group of ``s`` members with threshold ``t`` survives at most ``s - t`` dropouts). See
docs/robustness.md.

The grouping is a fresh random permutation of the round's members, seeded by the run seed and the round.
The result is handed to the coordinator as a sum (``total = rule(group means) * count``), so the
strategy's server step (FedAvg or FedOpt) applies to the robust aggregate of the groups.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError
from fedswarm.rounds.collect import Collection, Collector, CollectorGenerator, PlainCollector
from fedswarm.rounds.messages import FitRequest
from fedswarm.rounds.stages import ServerContext
from fedswarm.strategy.base import AggregationRule

__all__ = ["GroupwiseCollector", "split_groups"]

_GROUP_STREAM = 0x6A09E667


def split_groups(members: npt.ArrayLike, *, groups: int, seed: int, rnd: int) -> list[list[int]]:
    """Split ``members`` at random into ``min(groups, len(members))`` groups whose sizes differ by at most 1.

    Each group is sorted; the split depends only on (seed, round, members).
    """
    ids = np.sort(np.asarray(members, dtype=np.int64))
    if groups < 1:
        raise ConfigurationError(f"robustness.groupwise.groups must be >= 1, got {groups}")
    if len(ids) == 0:
        return []
    rng = np.random.Generator(np.random.PCG64([seed & ((1 << 63) - 1), rnd, _GROUP_STREAM]))
    perm = ids[rng.permutation(len(ids))]
    return [sorted(int(m) for m in part) for part in np.array_split(perm, min(groups, len(ids)))]


class GroupwiseCollector:
    """Runs ``inner`` once per random group and aggregates the group means with ``rule``.

    Parameters
    ----------
    rule
        The robust rule applied to the ``(groups, d)`` matrix of group means, weighted by group size.
    groups
        Number of groups per round (fewer when fewer members are selected).
    seed
        The run seed (the grouping of round ``r`` is seeded by ``(seed, r)``).
    inner
        Builds the per-group collector (default: the plain collector).
    """

    reveals_individual_updates = False

    def __init__(
        self,
        rule: AggregationRule,
        *,
        groups: int,
        seed: int,
        inner: Callable[[], Collector] = PlainCollector,
    ) -> None:
        if groups < 1:
            raise ConfigurationError(f"robustness.groupwise.groups must be >= 1, got {groups}")
        self.rule = rule
        self.groups = groups
        self.seed = seed
        self._inner = inner()
        self.last_groups: list[list[int]] = []

    def wrap(self, inner: Collector) -> None:
        """Collect each group through ``inner`` (e.g. one SecAgg+ session per group) instead of in the clear."""
        self._inner = inner

    def collect(
        self,
        rnd: int,
        requests: Mapping[int, FitRequest],
        *,
        dimension: int,
        ctx: ServerContext,
        screen: Callable[[int, npt.NDArray[np.float64]], str | None],
        member_name: Callable[[int], str],
    ) -> CollectorGenerator:
        parts = split_groups(list(requests), groups=self.groups, seed=self.seed, rnd=rnd)
        self.last_groups = parts
        means: list[npt.NDArray[np.float64]] = []
        sizes: list[float] = []
        members: list[int] = []
        dropouts: dict[int, str] = {}
        rejected: dict[int, str] = {}
        bytes_up = extra_down = 0
        loss_sum = 0.0
        loss_weight = 0.0
        for part in parts:
            group_requests = {m: requests[m] for m in part}
            got: Collection = yield from self._inner.collect(
                rnd, group_requests, dimension=dimension, ctx=ctx, screen=screen, member_name=member_name
            )
            dropouts.update(got.dropouts)
            rejected.update(got.rejected)
            bytes_up += got.bytes_up
            extra_down += got.extra_bytes_down
            if got.count == 0:
                continue
            members.extend(got.members)
            if got.updates is not None:
                means.append(got.updates.sum(axis=0) / got.count)
            else:
                assert got.total is not None
                means.append(np.asarray(got.total, dtype=np.float64) / got.count)
            sizes.append(float(got.count))
            if "train_loss" in got.train_metrics:
                loss_sum += got.train_metrics["train_loss"] * got.count
                loss_weight += got.count
        count = int(sum(sizes))
        total = None
        if means:
            total = self.rule(np.stack(means), weights=np.asarray(sizes)) * count
        return Collection(
            members=sorted(members),
            updates=None,
            weights=np.zeros(0),
            total=total if total is not None else np.zeros(dimension),
            count=count,
            dropouts=dropouts,
            rejected=rejected,
            bytes_up=bytes_up,
            train_metrics={"train_loss": loss_sum / loss_weight} if loss_weight else {},
            extra_bytes_down=extra_down,
        )
