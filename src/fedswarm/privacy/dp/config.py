"""The ``[privacy]`` section of a federation spec, and the checks that refuse unsafe combinations.

``dp`` selects the protection:

``"none"``
    No differential privacy; no DP knob may be set (a forgotten ``dp`` must not silently drop the noise).
``"central"``
    Client-level DP-FedAvg, the aggregator adds the noise (:mod:`.mechanisms`).
``"distributed"``
    Client-level DP, every participant adds a share of the noise inside secure aggregation.
``"local"``
    Sample-level DP: every member runs DP-SGD on its own records (``clip`` is the per-example clip).

Exactly one of ``noise_multiplier`` and ``target_epsilon`` (calibrated with :mod:`.calibration`) is given
when ``dp`` is not ``"none"``; the model enforces that. :func:`validate_dp` adds the checks that need
the size of the federation or of the data.

Example::

    [privacy]
    dp = "central"
    target_epsilon = 4.0
    delta = 1e-5
    clip = 1.0
    accountant = "pld"
    budget_epsilon = 8.0

    [privacy.adaptive_clip]
    target_quantile = 0.5
    clip_lr = 0.2
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from fedswarm.core.errors import ConfigurationError

__all__ = ["AdaptiveClipConfig", "DPConfig", "DPMode", "validate_dp"]

DPMode = Literal["none", "central", "distributed", "local"]

_SECTION = "privacy"


class AdaptiveClipConfig(BaseModel):
    """``[privacy.adaptive_clip]``: adaptive clipping (Andrew et al. 2021), see :mod:`.adaptive`.

    ``count_noise_multiplier`` is the standard deviation of the noise on the clipped count; ``None``
    means the paper's suggestion, the expected number of participants per round divided by 20.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_quantile: float = 0.5
    clip_lr: float = 0.2
    count_noise_multiplier: float | None = None


class DPConfig(BaseModel):
    """``[privacy]``: which differential privacy, how much noise, and the budget that stops a run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dp: DPMode = "none"
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float | None = None
    clip: float | None = None
    adaptive_clip: AdaptiveClipConfig | None = None
    accountant: Literal["rdp", "pld"] = "pld"
    budget_epsilon: float | None = None

    @model_validator(mode="after")
    def _exactly_one_noise_setting(self) -> DPConfig:
        given = [k for k in ("noise_multiplier", "target_epsilon") if getattr(self, k) is not None]
        if self.dp == "none":
            knobs = given + [
                k for k in ("delta", "clip", "adaptive_clip", "budget_epsilon") if getattr(self, k) is not None
            ]
            if knobs:
                raise ValueError(
                    f"dp is 'none' but {', '.join(knobs)} is set: choose dp = 'central', 'distributed' or "
                    f"'local', or remove the DP settings"
                )
        elif len(given) != 1:
            raise ValueError(
                f"dp = {self.dp!r} needs exactly one of noise_multiplier and target_epsilon, got "
                f"{'both' if given else 'neither'}"
            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether any differential privacy is applied."""
        return self.dp != "none"


def _key(name: str) -> str:
    return f"{_SECTION}.{name}"


def _require_positive(name: str, value: float | None, *, what: str) -> float:
    if value is None:
        raise ConfigurationError(f"{_key(name)}: missing; {what}")
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ConfigurationError(f"{_key(name)}: must be finite and > 0, got {value!r}; {what}")
    return v


def validate_dp(config: DPConfig, *, members: int, records: int | None) -> None:
    """Refuse DP settings that would not deliver the guarantee they claim.

    Parameters
    ----------
    config
        The parsed ``[privacy]`` section.
    members
        Number of members of the federation (the population of client-level DP).
    records
        For ``dp = "local"``: the number of records of the *smallest* member (sample-level DP protects
        one record of one member's data). Ignored otherwise.

    Raises
    ------
    ConfigurationError
        Naming the offending key: DP with zero, negative or missing noise; missing delta, or
        ``delta >= 1 / members`` for client-level DP, or ``delta >= 1 / records`` for sample-level DP;
        a non-positive or missing clip; an invalid target or budget epsilon; invalid adaptive-clipping
        settings.
    """
    if not config.enabled:
        return
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ConfigurationError(f"{_key('dp')}: needs at least one member, got members={members!r}")

    if config.noise_multiplier is not None and config.target_epsilon is not None:
        raise ConfigurationError(
            f"{_key('noise_multiplier')}: give either noise_multiplier or target_epsilon, not both"
        )
    if config.target_epsilon is not None:
        _require_positive("target_epsilon", config.target_epsilon, what="the run's epsilon must be positive")
    else:
        _require_positive(
            "noise_multiplier",
            config.noise_multiplier,
            what=f"dp = {config.dp!r} without noise gives no privacy (or set target_epsilon)",
        )

    delta = _require_positive("delta", config.delta, what="DP needs a delta in (0, 1 / population)")
    if config.dp == "local":
        if records is None or records < 1:
            raise ConfigurationError(
                f"{_key('delta')}: sample-level DP (dp = 'local') needs the number of records of the "
                f"smallest member to check delta, got records={records!r}"
            )
        if delta >= 1.0 / records:
            raise ConfigurationError(
                f"{_key('delta')}: {delta} must be < 1 / records = {1.0 / records:.3g} for sample-level DP "
                f"(a delta that large allows releasing a record outright)"
            )
    elif delta >= 1.0 / members:
        raise ConfigurationError(
            f"{_key('delta')}: {delta} must be < 1 / members = {1.0 / members:.3g} for client-level DP "
            f"(a delta that large allows releasing a member's update outright)"
        )

    _require_positive("clip", config.clip, what="updates must be clipped to bound their sensitivity")

    if config.budget_epsilon is not None:
        _require_positive("budget_epsilon", config.budget_epsilon, what="the budget that stops the run")

    ad = config.adaptive_clip
    if ad is not None:
        if not 0.0 < ad.target_quantile < 1.0:
            raise ConfigurationError(
                f"{_key('adaptive_clip.target_quantile')}: must be in (0, 1), got {ad.target_quantile!r}"
            )
        _require_positive("adaptive_clip.clip_lr", ad.clip_lr, what="the clip's learning rate")
        if ad.count_noise_multiplier is not None:
            sb = _require_positive(
                "adaptive_clip.count_noise_multiplier",
                ad.count_noise_multiplier,
                what="the clipped count is released and needs noise",
            )
            if config.noise_multiplier is not None and 2.0 * sb <= config.noise_multiplier:
                raise ConfigurationError(
                    f"{_key('adaptive_clip.count_noise_multiplier')}: {sb} is too small for noise_multiplier "
                    f"{config.noise_multiplier}: needs 2 * count_noise_multiplier > noise_multiplier"
                )
