"""The strategy's state includes its rule's state, so a run resumed from a saved state aggregates exactly
as one that never stopped (bucketing's round counter, centered clipping's center, FedOpt's moments)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedswarm.codec import tensors as tensor_codec
from fedswarm.core.errors import ConfigurationError
from fedswarm.core.parameters import Parameters
from fedswarm.rounds.robust.extension import RobustnessExtension, array_from_json, array_to_json
from fedswarm.rounds.robust.groupwise import GroupwiseCollector
from fedswarm.rounds.robust.rules import CenteredClippingRule, MedianRule
from fedswarm.spec.build import build_strategy
from fedswarm.spec.schema import parse_spec
from fedswarm.strategy.base import LocalTraining, Sampling
from fedswarm.strategy.fedavg import FedAvg

N, D, ROUNDS = 9, 6, 6


def _spec(strategy: str, rule: str, options: dict[str, Any]) -> Any:
    return parse_spec(
        {
            "federation": {"name": "s", "members": N, "rounds": ROUNDS, "seed": 11},
            "data": {"dataset": "digits", "partition": "iid"},
            "strategy": {"name": strategy, "min_members": 2, "rule": {"name": rule, "options": options}},
        }
    )


def _updates(rnd: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The round's updates: depend on the round and the model (so a different step shows in later rounds)."""
    rng = np.random.default_rng([rnd, 7])
    updates = rng.normal(0.0, 1.0, size=(N, D)) - 0.3 * x
    updates[0] *= 40.0  # one outsized update, so that clipping binds
    return updates, rng.integers(1, 50, size=N).astype(np.float64)


CASES = [
    ("fedavg", "centered_clipping", {"tau": 0.5, "bucket_size": 2}),
    ("fedavg", "centered_clipping", {"tau": 0.5, "iterations": 2}),
    ("fedadam", "centered_clipping", {"tau": 0.5, "bucket_size": 3}),
    ("fedavg", "median", {"bucket_size": 2}),
    ("fedprox", "multi_krum", {"f": 1, "bucket_size": 2}),
]


@pytest.mark.parametrize(("strategy", "rule", "options"), CASES)
@pytest.mark.parametrize("stop_after", [1, 3])
def test_a_resumed_run_gives_the_models_of_an_uninterrupted_one(
    strategy: str, rule: str, options: dict[str, Any], stop_after: int
) -> None:
    spec = _spec(strategy, rule, options)
    x0 = np.linspace(-1.0, 1.0, D)
    whole = build_strategy(spec)
    x = x0.copy()
    straight = []
    for rnd in range(1, ROUNDS + 1):
        x = whole.aggregate(rnd, x, *_updates(rnd, x))
        straight.append(x.copy())

    first = build_strategy(spec)
    y = x0.copy()
    resumed = []
    for rnd in range(1, stop_after + 1):
        y = first.aggregate(rnd, y, *_updates(rnd, y))
        resumed.append(y.copy())
    saved = tensor_codec.decode(tensor_codec.encode(Parameters(first.state_dict())))
    second = build_strategy(spec)  # a fresh process: counter 0, no center, no moments
    second.load_state_dict(dict(saved))
    for rnd in range(stop_after + 1, ROUNDS + 1):
        y = second.aggregate(rnd, y, *_updates(rnd, y))
        resumed.append(y.copy())

    for a, b in zip(straight, resumed, strict=True):
        np.testing.assert_array_equal(a, b)
    assert set(second.state_dict()) == set(whole.state_dict())
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(second.state_dict()[key], value)


def test_the_state_names_the_rule_entries_and_an_empty_state_resets() -> None:
    s = FedAvg(sampling=Sampling(), training=LocalTraining(), rule=CenteredClippingRule(tau=1.0, bucket_size=2))
    assert s.state_dict() == {"rule.aggregations": np.array([0])}
    updates = np.array([[3.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
    s.aggregate(1, np.zeros(2), updates, np.ones(3))
    state = s.state_dict()
    assert set(state) == {"rule.aggregations", "rule.center"}
    assert state["rule.aggregations"].tolist() == [1] and state["rule.aggregations"].dtype == np.int64
    rule = s.rule
    assert isinstance(rule, CenteredClippingRule) and rule.center is not None
    np.testing.assert_array_equal(state["rule.center"], rule.center)
    s.load_state_dict({})
    assert rule.aggregations == 0 and rule.center is None


def test_centered_clipping_center_by_hand_survives_the_state() -> None:
    # center 0, tau 1: offsets [3, 0] (norm 3, scaled by 1/3), [0, 0], [0, 0.5] (kept): mean [1/3, 1/6]
    s = FedAvg(sampling=Sampling(), training=LocalTraining(), rule=CenteredClippingRule(tau=1.0))
    s.aggregate(1, np.zeros(2), np.array([[3.0, 0.0], [0.0, 0.0], [0.0, 0.5]]), np.ones(3))
    np.testing.assert_allclose(s.state_dict()["rule.center"], [1.0 / 3.0, 1.0 / 6.0], rtol=1e-15)
    t = FedAvg(sampling=Sampling(), training=LocalTraining(), rule=CenteredClippingRule(tau=1.0))
    t.load_state_dict(s.state_dict())
    # round 2 from center c = [1/3, 1/6]: the single update c + [0, 2] moves it by [0, 1] (clipped to tau 1)
    c = np.array([1.0 / 3.0, 1.0 / 6.0])
    out = t.aggregate(2, np.zeros(2), (c + np.array([0.0, 2.0]))[None, :], np.ones(1))
    np.testing.assert_allclose(out, c + np.array([0.0, 1.0]), rtol=1e-15)


def test_states_that_do_not_fit_are_refused() -> None:
    plain = FedAvg(sampling=Sampling(), training=LocalTraining())
    assert plain.state_dict() == {}
    with pytest.raises(ConfigurationError, match="rule 'mean' has no state"):
        plain.load_state_dict({"rule.center": np.zeros(2)})
    with pytest.raises(ConfigurationError, match="no server state"):
        plain.load_state_dict({"m": np.zeros(2)})
    bucketed = FedAvg(sampling=Sampling(), training=LocalTraining(), rule=MedianRule(bucket_size=2))
    with pytest.raises(ConfigurationError, match="unknown keys"):
        bucketed.load_state_dict({"rule.center": np.zeros(2)})
    for bad in (np.array([1, 2]), np.array([-1]), np.array([1.5])):
        with pytest.raises(ConfigurationError, match="aggregations"):
            bucketed.load_state_dict({"rule.aggregations": bad})
    clipped = FedAvg(sampling=Sampling(), training=LocalTraining(), rule=CenteredClippingRule(tau=1.0))
    with pytest.raises(ConfigurationError, match="center"):
        clipped.load_state_dict({"rule.center": np.array([np.nan, 0.0])})


def test_the_group_wise_rule_state_travels_with_the_robustness_extension() -> None:
    def extension() -> tuple[RobustnessExtension, CenteredClippingRule]:
        rule = CenteredClippingRule(tau=0.5, bucket_size=2)
        return RobustnessExtension(detector=None, collector=GroupwiseCollector(rule, groups=4, seed=3)), rule

    one, rule = extension()
    rng = np.random.default_rng(0)
    for _ in range(3):
        rule(rng.normal(size=(4, 5)), weights=np.ones(4))
    two, fresh = extension()
    assert two.state_dict() == {"group_rule": {"aggregations": array_to_json(np.array([0], dtype=np.int64))}}
    two.load_state_dict(one.state_dict())
    assert fresh.aggregations == 3 and fresh.center is not None and rule.center is not None
    np.testing.assert_array_equal(fresh.center, rule.center)
    updates = rng.normal(size=(4, 5))
    np.testing.assert_array_equal(fresh(updates, weights=np.ones(4)), rule(updates, weights=np.ones(4)))
    two.load_state_dict({})
    assert fresh.aggregations == 0 and fresh.center is None


def test_arrays_as_json_round_trip_exactly() -> None:
    for arr in (np.array([0.1, -2.5e300, 5e-324]), np.array([[1, 2], [3, 4]], dtype=np.int64), np.zeros(0)):
        back = array_from_json(array_to_json(arr))
        assert back.dtype == arr.dtype and back.shape == arr.shape
        np.testing.assert_array_equal(back, arr)
    with pytest.raises(ConfigurationError, match="not an encoded array"):
        array_from_json({"dtype": "f8", "shape": [2], "data": "AAAA"})
    with pytest.raises(ConfigurationError, match="not an encoded array"):
        array_from_json({"dtype": "O", "shape": [1], "data": ""})
