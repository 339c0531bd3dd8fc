"""Noise calibration: round trip through the accountant, minimality, and refusals."""

from __future__ import annotations

from typing import Any

import pytest

from fedswarm.core.errors import ConfigurationError
from fedswarm.privacy.dp.accounting import compute_epsilon
from fedswarm.privacy.dp.calibration import MIN_NOISE_MULTIPLIER, calibrate_noise_multiplier

RTOL = 1e-3


@pytest.mark.parametrize(
    ("accountant", "sampling", "target"),
    [("rdp", "poisson", 2.0), ("pld", "poisson", 1.0), ("pld", "fixed_size", 4.0)],
)
def test_round_trip_is_within_target_and_close(accountant: Any, sampling: Any, target: float) -> None:
    kw: Any = dict(accountant=accountant, sampling=sampling, population=200, sample_size=20, delta=1e-5)
    z = calibrate_noise_multiplier(target_epsilon=target, rounds=50, rtol=RTOL, **kw)
    reached = compute_epsilon(noise_multiplier=z, rounds=50, **kw)
    assert reached <= target
    # epsilon scales roughly like 1 / z, so a bracket of relative width rtol costs about rtol in epsilon.
    assert reached >= target * (1 - 20 * RTOL)
    # Minimality: noticeably less noise would overspend.
    assert compute_epsilon(noise_multiplier=z * (1 - 2 * RTOL), rounds=50, **kw) > target


def test_more_rounds_need_more_noise() -> None:
    kw: Any = dict(
        target_epsilon=3.0,
        delta=1e-5,
        sampling="poisson",
        sample_size=10,
        population=100,
        accountant="pld",
        rtol=0.02,
    )
    assert calibrate_noise_multiplier(rounds=20, **kw) < calibrate_noise_multiplier(rounds=200, **kw)


def test_huge_target_returns_the_smallest_multiplier() -> None:
    z = calibrate_noise_multiplier(
        target_epsilon=1e9, delta=1e-5, rounds=1, sampling="poisson", sample_size=10, population=10, accountant="rdp"
    )
    assert z == MIN_NOISE_MULTIPLIER


def test_unreachable_target_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unreachable"):
        calibrate_noise_multiplier(
            target_epsilon=1e-6,
            delta=1e-5,
            rounds=10,
            sampling="poisson",
            sample_size=10,
            population=10,
            accountant="rdp",
        )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"target_epsilon": -1.0}, "target_epsilon"),
        ({"target_epsilon": float("inf")}, "target_epsilon"),
        ({"rounds": 0}, "rounds"),
        ({"rtol": 0.0}, "rtol"),
        ({"delta": 2.0}, "delta"),
        ({"sample_size": 0}, "sample_size"),
        ({"accountant": "gdp"}, "accountant"),
    ],
)
def test_invalid_parameters_are_refused(overrides: dict[str, Any], field: str) -> None:
    kw: dict[str, Any] = dict(
        target_epsilon=1.0,
        delta=1e-5,
        rounds=10,
        sampling="poisson",
        sample_size=10,
        population=100,
        accountant="rdp",
    )
    kw.update(overrides)
    with pytest.raises(ConfigurationError, match=field):
        calibrate_noise_multiplier(**kw)
