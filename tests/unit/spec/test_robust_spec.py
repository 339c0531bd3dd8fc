"""The [attack] and [robustness] sections, and the safe default of new federations: a server-side norm bound."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from fedswarm.cli.init import SPEC
from fedswarm.core.errors import SpecError
from fedswarm.rounds.robust.rules import ClippedMeanRule
from fedswarm.spec.build import build_rule
from fedswarm.spec.schema import load_spec, parse_spec

EXAMPLES = Path(__file__).parents[3] / "examples"


def _raw(**extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"federation": {"members": 10}, "data": {"dataset": "digits"}}
    raw.update(extra)
    return raw


def test_defaults_detect_and_do_not_group() -> None:
    spec = parse_spec(_raw())
    assert spec.attack is None
    assert spec.robustness.detection.enabled and spec.robustness.groupwise.groups == 0
    assert spec.to_dict()["robustness"]["detection"]["norm_ratio"] == 5.0


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ({"attack": {"kind": "poison", "members": 2}}, "attack.kind"),
        ({"attack": {"kind": "ipm"}}, "attack.members"),
        ({"attack": {"kind": "ipm", "members": 2, "from_round": 0}}, "attack.from_round"),
        ({"attack": {"kind": "ipm", "members": 2, "extra": 1}}, "attack.extra"),
        ({"robustness": {"detection": {"decay": 0.0}}}, "robustness.detection.decay"),
        ({"robustness": {"detection": {"norm_ratio": 1.0}}}, "robustness.detection.norm_ratio"),
        ({"robustness": {"groupwise": {"groups": -1}}}, "robustness.groupwise.groups"),
        ({"robustness": {"other": 1}}, "robustness.other"),
    ],
)
def test_bad_sections_name_the_key(section: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_raw(**section))
    assert err.value.path.startswith(path)


def test_a_spec_attack_round_trips() -> None:
    raw = _raw(attack={"kind": "backdoor", "members": [1, 2], "parameters": {"target": 3, "features": [0, 1]}})
    spec = parse_spec(raw)
    assert spec.attack is not None and spec.attack.parameters["features"] == [0, 1]
    assert parse_spec(spec.to_dict()) == spec


@pytest.mark.parametrize("name", ["digits.toml", "fraud.toml", "hospitals.toml"])
def test_examples_bound_update_norms_at_the_aggregator(name: str) -> None:
    spec, _ = load_spec(EXAMPLES / name)
    rule = build_rule(spec)
    assert isinstance(rule, ClippedMeanRule) and rule.max_norm == 10.0 and rule.weighted


def test_init_bounds_update_norms_at_the_aggregator() -> None:
    raw = tomllib.loads(SPEC.format(name="fed"))
    assert raw["strategy"]["rule"] == {"name": "clipped_mean", "options": {"max_norm": 5.0}}
    assert "stages" not in raw


def test_bucketing_draws_from_the_run_seed_and_user_rules_keep_their_factory() -> None:
    from fedswarm.spec.build import build_strategy
    from fedswarm.spec.rules import RULES

    raw = _raw(strategy={"name": "fedavg", "rule": {"name": "median", "options": {"bucket_size": 2}}})
    raw["federation"]["seed"] = 17
    rule = build_strategy(parse_spec(raw)).rule
    assert getattr(rule, "bucket_size", None) == 2 and getattr(rule, "bucket_seed", None) == 17
    raw["federation"]["seed"] = 18
    assert getattr(build_strategy(parse_spec(raw)).rule, "bucket_seed", None) == 18

    calls: list[dict[str, Any]] = []

    def custom(options: Any) -> Any:
        calls.append(dict(options))
        return RULES["median"](options)

    RULES["custom_median"] = custom
    try:
        raw = _raw(strategy={"name": "fedavg", "rule": {"name": "custom_median", "options": {}}})
        build_strategy(parse_spec(raw))
    finally:
        del RULES["custom_median"]
    assert calls == [{}]
