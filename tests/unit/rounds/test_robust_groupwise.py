"""Group-wise robust aggregation: the random split, the rule over group means, and composition with a
collector that reveals only sums (SecAgg+ per group)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from fedswarm.aggregation import median
from fedswarm.core.parameters import Parameters, Schema, TensorSpec
from fedswarm.core.task import FitConfig
from fedswarm.rounds.collect import Collection, CollectorGenerator, PlainCollector
from fedswarm.rounds.coordinator import Coordinator
from fedswarm.rounds.messages import Dropout, Exchange, FitReply, FitRequest
from fedswarm.rounds.robust.groupwise import GroupwiseCollector, split_groups
from fedswarm.rounds.robust.rules import MedianRule
from fedswarm.rounds.stages import ServerContext
from fedswarm.sim.backends import InProcessBackend
from fedswarm.sim.engine import drive, run_simulation
from fedswarm.sim.world import build_world, member_name
from fedswarm.spec.build import build_strategy
from fedswarm.spec.schema import parse_spec


def test_split_is_balanced_deterministic_and_fresh_each_round() -> None:
    members = list(range(3, 26))
    a = split_groups(members, groups=5, seed=1, rnd=1)
    assert sorted(m for g in a for m in g) == members
    assert sorted(len(g) for g in a) == [4, 4, 5, 5, 5]
    assert a == split_groups(members[::-1], groups=5, seed=1, rnd=1)
    assert a != split_groups(members, groups=5, seed=1, rnd=2)
    assert len(split_groups([1, 2], groups=5, seed=1, rnd=1)) == 2


def _drive(collector: Any, requests: Mapping[int, FitRequest], reply: Callable[[int], Any]) -> tuple[Collection, int]:
    gen = collector.collect(
        1, requests, dimension=3, ctx=ServerContext(1, np.arange(0), 0), screen=lambda m, u: None, member_name=str
    )
    exchanges = 0
    try:
        ex = next(gen)
        while True:
            exchanges += 1
            ex = gen.send({m: reply(m) for m in ex.requests})
    except StopIteration as stop:
        return stop.value, exchanges


SCHEMA = Schema((TensorSpec("w", (3,), "<f8"),))
PARAMS = Parameters({"w": np.zeros(3)})


def _requests(n: int) -> dict[int, FitRequest]:
    return {m: FitRequest(PARAMS, FitConfig(1, 1, 1, 0.1, m)) for m in range(n)}


def _update(m: int) -> np.ndarray:
    return np.array([m, -2.0 * m, 1.0]) if m != 4 else np.array([1e6, 1e6, 1e6])


def test_rule_runs_over_group_means_and_the_sum_reaches_the_coordinator() -> None:
    requests = _requests(12)
    col = GroupwiseCollector(MedianRule(), groups=4, seed=9)

    def reply(m: int) -> Any:
        return Dropout("gone") if m == 7 else FitReply(_update(m), 10 + m, 24, 0.0, {"train_loss": 1.0})

    got, exchanges = _drive(col, requests, reply)
    assert exchanges == 4 and got.updates is None and got.count == 11
    assert 7 in got.dropouts and 7 not in got.members
    groups = [[m for m in g if m != 7] for g in col.last_groups]
    means = np.stack([np.mean([_update(m) for m in g], axis=0) for g in groups])
    assert got.total is not None
    np.testing.assert_allclose(got.total / got.count, median(means))
    # the attacker corrupts one group mean; the median of four group means stays within the honest ones
    assert np.all(np.abs(got.total / got.count) < 1e3)
    assert got.train_metrics == {"train_loss": pytest.approx(1.0)}


class SumOnly:
    """A stand-in for a secure-aggregation collector: one exchange, only the sum comes back."""

    reveals_individual_updates = False

    def collect(self, rnd: int, requests: Mapping[int, FitRequest], **_: Any) -> CollectorGenerator:
        replies = yield Exchange("fit", rnd, requests)
        rows = [r.update for r in replies.values() if isinstance(r, FitReply)]
        return Collection(members=sorted(requests), updates=None, weights=np.zeros(0),
                          total=np.sum(rows, axis=0), count=len(rows))  # fmt: skip


def test_over_a_sum_only_collector_it_gives_the_same_result_as_over_plain_collection() -> None:
    requests = _requests(10)
    plain, _ = _drive(GroupwiseCollector(MedianRule(), groups=3, seed=2), requests,
                      lambda m: FitReply(_update(m), 1, 24, 0.0))  # fmt: skip
    hidden, _ = _drive(GroupwiseCollector(MedianRule(), groups=3, seed=2, inner=SumOnly), requests,
                       lambda m: FitReply(_update(m), 1, 24, 0.0))  # fmt: skip
    assert plain.total is not None and hidden.total is not None
    np.testing.assert_allclose(hidden.total, plain.total, rtol=1e-12)


def _spec(**extra: Any) -> Any:
    raw: dict[str, Any] = {
        "federation": {"name": "g", "members": 12, "rounds": 3, "seed": 4},
        "data": {"dataset": "digits", "partition": "iid"},
        "strategy": {"name": "fedavg", "min_members": 3},
        "baselines": {"local_only": False, "centralized": False},
        "evaluation": {"members": "none"},
    }
    raw.update(extra)
    return parse_spec(raw)


def test_a_groupwise_run_trains() -> None:
    spec = _spec(robustness={"groupwise": {"groups": 4, "rule": "median"}}, ledger={"enabled": False})
    res = run_simulation(spec, write_outputs=False)
    assert res.summary["final"]["accuracy"] > 0.5
    assert all(h["accepted"] == 12 for h in res.history)
    assert "anomalies" not in res.history[0]  # updates are hidden in groups: nothing to score per member


def test_groupwise_over_secagg_groups_matches_groupwise_over_plain_groups() -> None:
    """Each group is one SecAgg+ session; the median of the group means equals the plain computation up to
    quantization."""
    pytest.importorskip("fedswarm.rounds.privacy.secagg")
    spec = _spec(privacy={"secure_aggregation": "secagg+", "secagg": {"clip": 1.0, "bits": 24}})
    world = build_world(spec)
    privacy = next(e for e in world.extensions if e.collector() is not None)
    secure_inner = privacy.collector()
    assert secure_inner is not None and not secure_inner.reveals_individual_updates
    params = world.task.init_parameters(seed=spec.federation.seed)
    results = []
    for inner in (lambda: secure_inner, PlainCollector):
        strategy = build_strategy(spec)
        coordinator = Coordinator(
            strategy, schema=world.schema, population=12, member_name=member_name,
            collector=GroupwiseCollector(MedianRule(), groups=3, seed=4, inner=inner),
        )  # fmt: skip
        backend = InProcessBackend(world.runtime)
        outcome = drive(coordinator.run_round(1, params, evaluate=False), backend, params.flatten())
        results.append(outcome.parameters.flatten())
        assert outcome.accepted == list(range(12))
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
    assert np.abs(results[1] - params.flatten()).max() > 1e-3


def test_spec_with_groupwise_and_secagg_runs_each_group_securely() -> None:
    pytest.importorskip("fedswarm.rounds.privacy.secagg")
    spec = _spec(
        robustness={"groupwise": {"groups": 3, "rule": "median"}},
        privacy={"secure_aggregation": "secagg+", "secagg": {"clip": 1.0, "bits": 24}},
        ledger={"enabled": False},
    )
    res = run_simulation(spec, write_outputs=False)
    plain = run_simulation(
        _spec(robustness={"groupwise": {"groups": 3, "rule": "median"}}, ledger={"enabled": False}),
        write_outputs=False,
    )
    np.testing.assert_allclose(res.final.flatten(), plain.final.flatten(), atol=1e-4)


def test_groupwise_with_dp_is_refused() -> None:
    from fedswarm.core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="robustness.groupwise with privacy.dp"):
        build_world(
            _spec(
                robustness={"groupwise": {"groups": 3, "rule": "median"}},
                privacy={"dp": "central", "noise_multiplier": 1.0, "delta": 1e-5, "clip": 1.0},
            )
        )
