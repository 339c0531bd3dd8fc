"""The [privacy] section: parsing rules of DPConfig and every refusal of validate_dp."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from fedswarm.core.errors import ConfigurationError
from fedswarm.privacy.dp.config import AdaptiveClipConfig, DPConfig, validate_dp

MEMBERS = 50


def _central(**overrides: Any) -> DPConfig:
    raw: dict[str, Any] = {"dp": "central", "noise_multiplier": 1.0, "delta": 1e-3, "clip": 1.0}
    raw.update(overrides)
    return DPConfig.model_validate(raw)


def test_defaults_mean_no_dp() -> None:
    cfg = DPConfig()
    assert cfg.dp == "none" and not cfg.enabled
    validate_dp(cfg, members=1, records=None)


def test_valid_configs_pass() -> None:
    validate_dp(_central(), members=MEMBERS, records=None)
    validate_dp(_central(dp="distributed", accountant="rdp", budget_epsilon=8.0), members=MEMBERS, records=None)
    cfg = DPConfig.model_validate(
        {
            "dp": "central",
            "target_epsilon": 4.0,
            "delta": 1e-5,
            "clip": 0.1,
            "adaptive_clip": {"target_quantile": 0.5, "clip_lr": 0.2, "count_noise_multiplier": 2.5},
        }
    )
    assert cfg.adaptive_clip == AdaptiveClipConfig(count_noise_multiplier=2.5)
    validate_dp(cfg, members=MEMBERS, records=None)
    validate_dp(_central(dp="local", delta=1e-4), members=2, records=1000)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="noise_mult"):
        DPConfig.model_validate({"dp": "central", "noise_mult": 1.0})
    with pytest.raises(ValidationError, match="quantile"):
        AdaptiveClipConfig.model_validate({"quantile": 0.5})


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValidationError, match="dp"):
        DPConfig.model_validate({"dp": "shuffle", "noise_multiplier": 1.0})


def test_both_noise_settings_are_refused() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        _central(target_epsilon=3.0)


def test_neither_noise_setting_is_refused() -> None:
    with pytest.raises(ValidationError, match="neither"):
        DPConfig.model_validate({"dp": "central", "delta": 1e-5, "clip": 1.0})


@pytest.mark.parametrize("knob", [("noise_multiplier", 1.0), ("clip", 1.0), ("delta", 1e-5), ("budget_epsilon", 3.0)])
def test_dp_none_with_dp_settings_is_refused(knob: tuple[str, float]) -> None:
    with pytest.raises(ValidationError, match=knob[0]):
        DPConfig.model_validate({"dp": "none", knob[0]: knob[1]})


def _refused(cfg: DPConfig, key: str, *, members: int = MEMBERS, records: int | None = None) -> None:
    with pytest.raises(ConfigurationError, match=f"privacy.{key}"):
        validate_dp(cfg, members=members, records=records)


def test_zero_noise_is_refused() -> None:
    _refused(_central(noise_multiplier=0.0), "noise_multiplier")


def test_negative_noise_is_refused() -> None:
    _refused(_central(noise_multiplier=-0.5), "noise_multiplier")


def test_missing_noise_is_refused() -> None:
    # A config that bypassed the model's checks (e.g. built in code) is still refused.
    cfg = DPConfig.model_construct(dp="central", noise_multiplier=None, target_epsilon=None, delta=1e-3, clip=1.0)
    _refused(cfg, "noise_multiplier")


def test_non_positive_target_epsilon_is_refused() -> None:
    _refused(
        DPConfig.model_validate({"dp": "central", "target_epsilon": 0.0, "delta": 1e-3, "clip": 1.0}), "target_epsilon"
    )


def test_missing_delta_is_refused() -> None:
    _refused(_central(delta=None), "delta")


def test_delta_at_one_over_members_is_refused_for_client_level_dp() -> None:
    _refused(_central(delta=1.0 / MEMBERS), "delta")
    _refused(_central(dp="distributed", delta=0.5), "delta")


def test_delta_at_one_over_records_is_refused_for_sample_level_dp() -> None:
    _refused(_central(dp="local", delta=1e-3), "delta", members=2, records=1000)


def test_local_dp_without_records_is_refused() -> None:
    _refused(_central(dp="local", delta=1e-6), "delta", members=2, records=None)


def test_zero_clip_is_refused() -> None:
    _refused(_central(clip=0.0), "clip")


def test_negative_clip_is_refused() -> None:
    _refused(_central(clip=-1.0), "clip")


def test_missing_clip_is_refused() -> None:
    _refused(_central(clip=None), "clip")


def test_non_positive_budget_is_refused() -> None:
    _refused(_central(budget_epsilon=0.0), "budget_epsilon")


def test_adaptive_quantile_out_of_range_is_refused() -> None:
    _refused(_central(adaptive_clip={"target_quantile": 1.5}), "adaptive_clip.target_quantile")


def test_adaptive_lr_non_positive_is_refused() -> None:
    _refused(_central(adaptive_clip={"clip_lr": 0.0}), "adaptive_clip.clip_lr")


def test_adaptive_count_noise_non_positive_is_refused() -> None:
    _refused(_central(adaptive_clip={"count_noise_multiplier": 0.0}), "adaptive_clip.count_noise_multiplier")


def test_adaptive_count_noise_too_small_is_refused() -> None:
    _refused(
        _central(noise_multiplier=2.0, adaptive_clip={"count_noise_multiplier": 1.0}),
        "adaptive_clip.count_noise_multiplier",
    )


def test_no_members_is_refused() -> None:
    _refused(_central(), "dp", members=0)
