"""Every unsafe or unsupported privacy configuration is refused up front, naming the offending key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from fedswarm.core.errors import ConfigurationError, SpecError
from fedswarm.sim.world import build_world
from fedswarm.spec.privacy_extension import SUPPORTED_COMBINATIONS

sys.path.insert(0, str(Path(__file__).parents[2] / "fixtures"))
from privtasks import spec

CENTRAL = {"dp": "central", "noise_multiplier": 1.0, "delta": 1e-3, "clip": 1.0}


def refused(privacy: dict[str, Any], match: str, **over: Any) -> str:
    with pytest.raises(ConfigurationError, match=match) as info:
        build_world(spec(privacy, **over))
    return str(info.value)


@pytest.mark.parametrize("threshold", [2, 3])
def test_shamir_threshold_at_or_below_half_the_members(threshold: int) -> None:
    # 6 members per round, complete graph: a neighbourhood of 6 (the member and its 5 neighbours)
    text = refused({"secure_aggregation": "secagg+", "secagg": {"threshold": threshold}}, r"privacy\.secagg\.threshold")
    assert "at or below half the members" in text and "must exceed 3.0" in text


def test_threshold_above_half_is_accepted() -> None:
    world = build_world(spec({"secure_aggregation": "secagg+", "secagg": {"threshold": 4}}))
    assert world.extensions[0].description["secagg_threshold"] == 4  # type: ignore[attr-defined]


def test_threshold_above_the_degree_and_tiny_cohorts() -> None:
    refused({"secure_aggregation": "secagg+", "secagg": {"threshold": 6}}, r"privacy\.secagg\.threshold: 6")
    refused(
        {"secure_aggregation": "secagg+"},
        r"privacy\.secagg\.roster: secure aggregation needs at least 3",
        strategy__fraction=0.3,
        strategy__min_members=2,
    )
    refused({"secure_aggregation": "secagg+", "secagg": {"degree": 6}}, r"privacy\.secagg\.degree: 6 exceeds")


@pytest.mark.parametrize("transport", ["secagg+", "ckks"])
def test_secure_aggregation_with_a_rule_that_needs_individual_updates(transport: str) -> None:
    text = refused(
        {"secure_aggregation": transport},
        r"strategy\.rule\.name: rule 'krum' needs individual updates",
        strategy__rule={"name": "krum", "options": {"f": 1}},
    )
    assert f"privacy.secure_aggregation = '{transport}'" in text and SUPPORTED_COMBINATIONS in text


@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_client_level_dp_with_a_rule_that_needs_individual_updates(mode: str) -> None:
    privacy = {**CENTRAL, "dp": mode}
    if mode == "distributed":
        privacy["secure_aggregation"] = "secagg+"
    refused(privacy, r"strategy\.rule\.name: rule 'median'", strategy__rule={"name": "median"})


def test_local_dp_allows_robust_rules_in_the_clear() -> None:
    world = build_world(
        spec(
            {"dp": "local", "noise_multiplier": 1.0, "delta": 1e-5, "clip": 1.0},
            task__name="torch_mlp",
            strategy__rule={"name": "median"},
        )
    )
    privacy = [e for e in world.extensions if e.name == "privacy"]
    assert len(privacy) == 1 and privacy[0].collector().reveals_individual_updates  # type: ignore[union-attr]


def test_explicit_example_weighting_is_refused() -> None:
    refused(CENTRAL, r"strategy\.rule\.options\.weighted", strategy__rule={"options": {"weighted": True}})


@pytest.mark.parametrize("noise", [0.0, -1.0])
def test_dp_without_noise(noise: float) -> None:
    refused({**CENTRAL, "noise_multiplier": noise}, r"privacy\.noise_multiplier: must be finite and > 0")


def test_dp_without_any_noise_setting_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="privacy: .*needs exactly one of noise_multiplier and target_epsilon"):
        spec({"dp": "central", "delta": 1e-3, "clip": 1.0})


def test_dp_knobs_without_dp_are_a_spec_error() -> None:
    with pytest.raises(SpecError, match="dp is 'none' but noise_multiplier"):
        spec({"noise_multiplier": 1.0})


def test_distributed_dp_needs_secure_aggregation() -> None:
    with pytest.raises(SpecError, match="needs secure_aggregation"):
        spec({**CENTRAL, "dp": "distributed"})


@pytest.mark.parametrize("delta", [1 / 6, 0.5])
def test_client_level_delta_not_below_one_over_members(delta: float) -> None:
    refused({**CENTRAL, "delta": delta}, r"privacy\.delta: .* must be < 1 / members = 0\.167")


def test_missing_clip_and_delta() -> None:
    refused({k: v for k, v in CENTRAL.items() if k != "clip"}, r"privacy\.clip: missing")
    refused({k: v for k, v in CENTRAL.items() if k != "delta"}, r"privacy\.delta: missing")


def test_sample_level_delta_not_below_one_over_records() -> None:
    # breast cancer, 6 iid members: the smallest holds 45 training records
    refused(
        {"dp": "local", "noise_multiplier": 1.0, "delta": 0.03, "clip": 1.0},
        r"privacy\.delta: 0\.03 must be < 1 / records",
        task__name="torch_mlp",
    )


def test_local_dp_needs_a_torch_task() -> None:
    refused({"dp": "local", "noise_multiplier": 1.0, "delta": 1e-5, "clip": 1.0}, "needs a PyTorch task")


def test_local_dp_refuses_fedprox() -> None:
    refused(
        {"dp": "local", "noise_multiplier": 1.0, "delta": 1e-5, "clip": 1.0},
        r"strategy\.name: 'fedprox'",
        task__name="torch_mlp",
        strategy__name="fedprox",
    )


def test_min_survivors_above_the_cohort() -> None:
    refused(
        {**CENTRAL, "dp": "distributed", "secure_aggregation": "secagg+", "min_survivors": 7},
        r"privacy\.min_survivors: 7 exceeds the 6 members",
    )


def test_a_budget_below_one_round() -> None:
    refused({**CENTRAL, "budget_epsilon": 0.5}, r"privacy\.budget_epsilon: 0\.5 is below the epsilon of a single round")


def test_adaptive_clipping_with_too_little_count_noise() -> None:
    refused(
        {**CENTRAL, "adaptive_clip": {"count_noise_multiplier": 0.4}},
        r"privacy\.adaptive_clip\.count_noise_multiplier",
    )


def test_secure_aggregation_needs_a_range() -> None:
    refused({"secure_aggregation": "secagg+"}, r"privacy\.secagg\.clip: secure aggregation quantizes", stages__clip=0.0)


def test_insecure_ckks_parameters() -> None:
    refused(
        {"secure_aggregation": "ckks", "ckks": {"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": [60, 40, 60]}},
        r"privacy\.ckks\.coeff_mod_bit_sizes: 160 bits in total exceed 109",
    )
    refused({"secure_aggregation": "ckks", "ckks": {"min_inputs": 7}}, r"privacy\.ckks\.min_inputs: 7 exceeds")


def test_unknown_keys_are_spec_errors() -> None:
    with pytest.raises(SpecError, match=r"privacy\.secagg\.bitz: unknown key"):
        spec({"secure_aggregation": "secagg+", "secagg": {"bitz": 3}})
    with pytest.raises(SpecError, match="privacy.secure_aggregation"):
        spec({"secure_aggregation": "paillier"})
