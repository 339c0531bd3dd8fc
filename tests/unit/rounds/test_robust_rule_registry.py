"""The rule registry: option validation naming the key, rule objects matching the pure functions, and the
cohort checks made when a run is built."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedswarm.aggregation import (
    bulyan,
    centered_clipping,
    clipped_mean,
    fltrust,
    geometric_median,
    krum,
    median,
    multi_krum,
    trimmed_mean,
    weighted_mean,
)
from fedswarm.core.errors import ConfigurationError, SpecError
from fedswarm.core.task import DataInfo
from fedswarm.rounds.robust.rules import CenteredClippingRule
from fedswarm.rounds.robust.server_update import publish_server_update, take_server_update
from fedswarm.spec.robust_extension import build_robustness_extension
from fedswarm.spec.rules import RULES, build_named_rule
from fedswarm.spec.schema import parse_spec

RNG = np.random.default_rng(7)
U = RNG.normal(size=(11, 6))
W = RNG.integers(1, 50, size=11).astype(np.float64)


def test_every_rule_of_the_issue_is_registered() -> None:
    assert set(RULES) == {
        "mean", "median", "trimmed_mean", "krum", "multi_krum", "bulyan", "geometric_median", "fltrust",
        "clipped_mean", "centered_clipping",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("mean", {}, weighted_mean(U, weights=W)),
        ("mean", {"weighted": False}, U.mean(axis=0)),
        ("median", {}, median(U)),
        ("median", {"weighted": True}, median(U, weights=W)),
        ("trimmed_mean", {"beta": 0.2}, trimmed_mean(U, beta=0.2)),
        ("krum", {"f": 2}, krum(U, f=2)),
        ("multi_krum", {"f": 2}, multi_krum(U, f=2, m=9)),
        ("multi_krum", {"f": 2, "m": 3}, multi_krum(U, f=2, m=3)),
        ("bulyan", {"f": 2}, bulyan(U, f=2)),
        ("geometric_median", {"max_iter": 7}, geometric_median(U, max_iter=7)),
        ("clipped_mean", {"max_norm": 0.5}, clipped_mean(U, max_norm=0.5, weights=W)),
        ("clipped_mean", {"max_norm": 0.5, "weighted": False}, clipped_mean(U, max_norm=0.5)),
    ],
)
def test_rule_objects_apply_the_pure_functions(name: str, options: dict[str, Any], expected: np.ndarray) -> None:
    rule = RULES[name](options)
    assert rule.name == name
    assert rule.needs_individual_updates == (name != "mean")
    np.testing.assert_array_equal(rule(U, weights=W), expected)


def test_centered_clipping_centers_on_the_previous_aggregate() -> None:
    rule = RULES["centered_clipping"]({"tau": 0.3, "iterations": 2})
    first = rule(U, weights=W)
    np.testing.assert_array_equal(first, centered_clipping(U, tau=0.3, center=np.zeros(6), iterations=2))
    second = rule(U[::-1], weights=W)
    np.testing.assert_array_equal(second, centered_clipping(U[::-1], tau=0.3, center=first, iterations=2))
    assert isinstance(rule, CenteredClippingRule)
    fresh = CenteredClippingRule(tau=0.3, iterations=2)
    fresh.load_state_dict(rule.state_dict())
    np.testing.assert_array_equal(fresh(U, weights=W), rule(U, weights=W))


def test_fltrust_rule_takes_the_published_server_update_once() -> None:
    rule = RULES["fltrust"]({"root_size": 10})
    g0 = U[0] + 0.1
    publish_server_update(g0)
    np.testing.assert_array_equal(rule(U, weights=W), fltrust(U, server_update=g0))
    with pytest.raises(ConfigurationError, match="no server update"):
        rule(U, weights=W)
    publish_server_update(np.ones(3))
    with pytest.raises(ConfigurationError, match="shape"):
        take_server_update(6)


@pytest.mark.parametrize(
    ("name", "options", "key", "words"),
    [
        ("mean", {"beta": 0.1}, "beta", "unknown option"),
        ("median", {"weighted": 1}, "weighted", "true or false"),
        ("trimmed_mean", {"beta": 0.5}, "beta", "[0, 0.5)"),
        ("trimmed_mean", {"beta": "x"}, "beta", "number"),
        ("krum", {}, "f", "required"),
        ("krum", {"f": -1}, "f", ">= 0"),
        ("krum", {"f": 1.5}, "f", "integer"),
        ("multi_krum", {"f": 1, "m": 0}, "m", ">= 1"),
        ("bulyan", {"f": True}, "f", "integer"),
        ("geometric_median", {"eps": 0.0}, "eps", "> 0"),
        ("fltrust", {"root_size": 0}, "root_size", ">= 1"),
        ("clipped_mean", {}, "max_norm", "required"),
        ("clipped_mean", {"max_norm": float("inf")}, "max_norm", "in [0"),
        ("centered_clipping", {"tau": -1.0}, "tau", "in [0"),
    ],
)
def test_bad_options_name_the_key(name: str, options: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        RULES[name](options)
    assert err.value.path == f"strategy.rule.options.{key}"
    assert words in str(err.value)


def test_unknown_rule_names_the_key() -> None:
    with pytest.raises(SpecError) as err:
        build_named_rule("average", {}, name_key="robustness.groupwise.rule")
    assert err.value.path == "robustness.groupwise.rule" and "median" in str(err.value)


def _spec(rule: dict[str, Any], members: int = 10, **extra: Any) -> Any:
    raw: dict[str, Any] = {
        "federation": {"name": "t", "members": members, "rounds": 2},
        "data": {"dataset": "breast_cancer"},
        "strategy": {"name": "fedavg", "fraction": 0.5, "min_members": 2, "rule": rule},
    }
    raw.update(extra)
    return parse_spec(raw)


INFO = DataInfo(num_features=30, num_classes=2)


def test_the_cohort_must_fit_the_rule_when_the_run_is_built() -> None:
    with pytest.raises(SpecError) as err:
        build_robustness_extension(_spec({"name": "krum", "options": {"f": 2}}), INFO, 10)
    assert err.value.path == "strategy.rule.options.f" and "at least 7" in str(err.value)
    assert build_robustness_extension(_spec({"name": "krum", "options": {"f": 1}}), INFO, 10) is not None
    with pytest.raises(SpecError, match="at least 11"):
        build_robustness_extension(_spec({"name": "bulyan", "options": {"f": 2}}, members=20), INFO, 20)


def test_groupwise_needs_the_mean_as_strategy_rule_and_enough_groups() -> None:
    groupwise = {"groupwise": {"groups": 4, "rule": "krum", "options": {"f": 1}}}
    with pytest.raises(SpecError) as err:
        build_robustness_extension(_spec({"name": "median"}, robustness=groupwise), INFO, 10)
    assert err.value.path == "strategy.rule.name"
    with pytest.raises(SpecError) as err:
        build_robustness_extension(_spec({"name": "mean"}, robustness=groupwise), INFO, 10)
    assert err.value.path == "robustness.groupwise.options.f" and "4 groups" in str(err.value)


def test_detection_can_be_switched_off() -> None:
    off = {"detection": {"enabled": False}}
    assert build_robustness_extension(_spec({"name": "mean"}, robustness=off), INFO, 10) is None
    assert build_robustness_extension(_spec({"name": "mean"}), INFO, 10) is not None


def test_groupwise_with_secure_aggregation_builds_a_wrapping_collector() -> None:
    spec = _spec(
        {"name": "mean"},
        robustness={"groupwise": {"groups": 2}},
        privacy={"secure_aggregation": "secagg+", "secagg": {"clip": 1.0}},
    )
    ext = build_robustness_extension(spec, INFO, 10)
    assert ext is not None
    collector = ext.collector()
    assert collector is not None and hasattr(collector, "wrap")
