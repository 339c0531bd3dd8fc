"""The Gaussian mechanism: noise scale (statistical tests with fixed unsafe seeds), secure seeding, refusals."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]

from fedswarm.core.errors import ConfigurationError, ParameterError, RoundAborted
from fedswarm.privacy.dp import mechanisms
from fedswarm.privacy.dp.mechanisms import (
    UnsafeNoiseWarning,
    add_central_noise,
    add_distributed_noise,
    central_noise_std,
    check_survivors,
    distributed_noise_std,
    mean_from_noised_sum,
    unsafe_add_central_noise,
    unsafe_add_distributed_noise,
)

# Fixed seeds make these statistical tests deterministic; the thresholds (two-sided p > 1e-3) would
# flag a wrong scale (10% off is rejected with p < 1e-50 at these sample sizes).
D = 200_000
P_MIN = 1e-3


def _variance_p_value(samples: np.ndarray, std: float) -> float:
    """Two-sided chi-square test that zero-mean normal ``samples`` have standard deviation ``std``."""
    n = samples.size
    stat = float(np.sum(samples**2) / std**2)
    cdf = stats.chi2.cdf(stat, df=n)
    return float(2 * min(cdf, 1 - cdf))


def test_std_values() -> None:
    assert central_noise_std(noise_multiplier=1.5, clip=2.0) == 3.0
    assert distributed_noise_std(noise_multiplier=1.5, clip=2.0, min_survivors=9) == pytest.approx(1.0)


def test_central_noise_has_std_z_times_c() -> None:
    base = np.linspace(-1.0, 1.0, D)
    with pytest.warns(UnsafeNoiseWarning):
        out = unsafe_add_central_noise(base, noise_multiplier=1.5, clip=2.0, seed=7)
    noise = out - base
    assert _variance_p_value(noise, 3.0) > P_MIN
    assert _variance_p_value(noise, 3.3) < 1e-50  # the test has the power to see a 10% error
    assert stats.kstest(noise / 3.0, "norm").pvalue > P_MIN
    assert abs(noise.mean()) < 5 * 3.0 / math.sqrt(D)


def test_distributed_shares_sum_to_at_least_the_central_noise() -> None:
    z, c, n_min = 1.2, 0.5, 8
    with pytest.warns(UnsafeNoiseWarning):
        shares = [
            unsafe_add_distributed_noise(np.zeros(D), noise_multiplier=z, clip=c, min_survivors=n_min, seed=s)
            for s in range(10)
        ]
    each = z * c / math.sqrt(n_min)
    assert _variance_p_value(shares[0], each) > P_MIN
    # Exactly n_min survivors: the sum carries the central noise z*C.
    assert _variance_p_value(np.sum(shares[:n_min], axis=0), z * c) > P_MIN
    # More survivors only add noise: variance k/n_min (zC)^2.
    assert _variance_p_value(np.sum(shares, axis=0), z * c * math.sqrt(10 / n_min)) > P_MIN


def test_unsafe_seed_is_reproducible_and_secure_noise_is_not() -> None:
    x = np.ones(16)
    with pytest.warns(UnsafeNoiseWarning):
        a = unsafe_add_central_noise(x, noise_multiplier=1.0, clip=1.0, seed=3)
        b = unsafe_add_central_noise(x, noise_multiplier=1.0, clip=1.0, seed=3)
    np.testing.assert_array_equal(a, b)
    c = add_central_noise(x, noise_multiplier=1.0, clip=1.0)
    d = add_central_noise(x, noise_multiplier=1.0, clip=1.0)
    assert not np.array_equal(c, d)
    e = add_distributed_noise(x, noise_multiplier=1.0, clip=1.0, min_survivors=4)
    assert not np.array_equal(e, add_distributed_noise(x, noise_multiplier=1.0, clip=1.0, min_survivors=4))
    np.testing.assert_array_equal(x, np.ones(16))  # inputs are not modified


def test_secure_noise_has_the_right_scale() -> None:
    noise = add_central_noise(np.zeros(D), noise_multiplier=2.0, clip=0.25)
    # Not seeded: a loose bound that fails with probability far below 1e-9.
    assert abs(noise.std() - 0.5) < 0.01


def test_only_unsafe_functions_take_a_seed() -> None:
    for name in mechanisms.__all__:
        obj = getattr(mechanisms, name)
        if inspect.isfunction(obj) and "seed" in inspect.signature(obj).parameters:
            assert "unsafe" in name, name


def test_mean_divides_by_the_expected_count() -> None:
    np.testing.assert_allclose(mean_from_noised_sum(np.array([3.0, 6.0]), expected_count=1.5), [2.0, 4.0])
    with pytest.raises(ConfigurationError, match="expected_count"):
        mean_from_noised_sum(np.ones(2), expected_count=0.0)


def test_check_survivors() -> None:
    check_survivors(10, min_survivors=10)
    with pytest.raises(RoundAborted, match="survived"):
        check_survivors(9, min_survivors=10)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"noise_multiplier": 0.0, "clip": 1.0}, "noise_multiplier"),
        ({"noise_multiplier": -1.0, "clip": 1.0}, "noise_multiplier"),
        ({"noise_multiplier": math.inf, "clip": 1.0}, "noise_multiplier"),
        ({"noise_multiplier": 1.0, "clip": 0.0}, "clip"),
        ({"noise_multiplier": 1.0, "clip": math.nan}, "clip"),
    ],
)
def test_central_refuses_bad_knobs(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        add_central_noise(np.zeros(3), **kwargs)


@pytest.mark.parametrize("n_min", [0, -3])
def test_distributed_refuses_bad_min_survivors(n_min: int) -> None:
    with pytest.raises(ConfigurationError, match="min_survivors"):
        add_distributed_noise(np.zeros(3), noise_multiplier=1.0, clip=1.0, min_survivors=n_min)


@pytest.mark.parametrize("bad", [np.array([1.0, np.nan]), np.array([np.inf]), np.array(["a"])])
def test_refuses_non_finite_or_non_numeric_input(bad: np.ndarray) -> None:
    with pytest.raises(ParameterError):
        add_central_noise(bad, noise_multiplier=1.0, clip=1.0)
