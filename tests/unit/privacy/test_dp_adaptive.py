"""Adaptive clipping (Andrew et al. 2021): noise bookkeeping, the geometric update, convergence, state."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedswarm.core.errors import ConfigurationError, ParameterError
from fedswarm.privacy.dp.adaptive import (
    AdaptiveClipper,
    accounted_noise_multiplier,
    default_count_noise_multiplier,
    geometric_clip_update,
    unclipped_count,
    unsafe_noised_count,
    update_noise_multiplier,
)
from fedswarm.privacy.dp.mechanisms import UnsafeNoiseWarning


def test_update_noise_multiplier_known_values() -> None:
    # z = 1 with 100 expected members and sigma_b = 100 / 20 = 5: (1 - 1/100)^(-1/2).
    assert update_noise_multiplier(noise_multiplier=1.0, count_noise_multiplier=5.0) == pytest.approx(
        1.0 / math.sqrt(0.99), rel=1e-12
    )
    # z = 2, sigma_b = 2: (1/4 - 1/16)^(-1/2) = (3/16)^(-1/2) = 4 / sqrt(3).
    assert update_noise_multiplier(noise_multiplier=2.0, count_noise_multiplier=2.0) == pytest.approx(4 / math.sqrt(3))


def test_accounted_inverts_update() -> None:
    zd = update_noise_multiplier(noise_multiplier=1.3, count_noise_multiplier=2.5)
    assert zd > 1.3
    assert accounted_noise_multiplier(update_noise_multiplier=zd, count_noise_multiplier=2.5) == pytest.approx(1.3)


def test_count_noise_too_small_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="count_noise_multiplier"):
        update_noise_multiplier(noise_multiplier=2.0, count_noise_multiplier=1.0)  # 2 * 1 <= 2


def test_default_count_noise() -> None:
    assert default_count_noise_multiplier(100) == 5.0


def test_geometric_update_known_value() -> None:
    assert geometric_clip_update(1.0, unclipped_fraction=0.7, target_quantile=0.5, clip_lr=0.2) == pytest.approx(
        math.exp(-0.04)
    )
    # Too many clipped (fraction below the target): the clip grows.
    assert geometric_clip_update(2.0, unclipped_fraction=0.1, target_quantile=0.5, clip_lr=0.2) > 2.0


def test_unclipped_count_includes_the_boundary() -> None:
    assert unclipped_count(np.array([0.5, 1.0, 1.0000001, 3.0]), clip=1.0) == 2
    with pytest.raises(ParameterError):
        unclipped_count(np.array([-1.0]), clip=1.0)


def test_noised_count_is_reproducible_only_when_unsafe() -> None:
    with pytest.warns(UnsafeNoiseWarning):
        a = unsafe_noised_count(10, count_noise_multiplier=2.0, seed=1)
        b = unsafe_noised_count(10, count_noise_multiplier=2.0, seed=1)
    assert a == b != 10.0


@pytest.mark.filterwarnings("ignore::fedswarm.privacy.dp.mechanisms.UnsafeNoiseWarning")
@pytest.mark.parametrize("quantile", [0.3, 0.5, 0.8])
def test_clip_tracks_the_target_quantile(quantile: float) -> None:
    # Update norms are log-normal; the gamma-quantile of exp(N(0, 0.5^2)) is exp(0.5 * Phi^-1(gamma)).
    rng = np.random.default_rng(0)
    m = 200
    clipper = AdaptiveClipper(
        initial_clip=0.05,
        target_quantile=quantile,
        clip_lr=0.2,
        count_noise_multiplier=default_count_noise_multiplier(m),
    )
    history = []
    for r in range(300):
        norms = np.exp(rng.normal(0.0, 0.5, size=m))
        history.append(clipper.unsafe_step_seeded(norms, expected_count=m, seed=r))
    true_q = float(np.quantile(np.exp(rng.normal(0.0, 0.5, size=1_000_000)), quantile))
    assert np.mean(history[-50:]) == pytest.approx(true_q, rel=0.1)
    assert clipper.rounds == 300


def test_observe_uses_the_expected_count() -> None:
    clipper = AdaptiveClipper(initial_clip=1.0, target_quantile=0.5, clip_lr=0.2, count_noise_multiplier=1.0)
    assert clipper.observe_noised_count(35.0, expected_count=50) == pytest.approx(math.exp(-0.2 * (0.7 - 0.5)))


def test_state_dict_round_trip_and_mismatch() -> None:
    a = AdaptiveClipper(initial_clip=1.0, count_noise_multiplier=3.0)
    a.observe_noised_count(2.0, expected_count=10)
    b = AdaptiveClipper(initial_clip=5.0, count_noise_multiplier=3.0)
    b.load_state_dict(a.state_dict())
    assert (b.clip, b.rounds) == (a.clip, 1)
    other = AdaptiveClipper(initial_clip=1.0, count_noise_multiplier=4.0)
    with pytest.raises(ConfigurationError, match="count_noise_multiplier"):
        other.load_state_dict(a.state_dict())
    bad = a.state_dict() | {"version": 0}
    with pytest.raises(ConfigurationError, match="version"):
        b.load_state_dict(bad)
    with pytest.raises(ConfigurationError, match="clip"):
        b.load_state_dict(a.state_dict() | {"clip": -1.0})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"initial_clip": 0.0}, "initial_clip"),
        ({"target_quantile": 1.0}, "target_quantile"),
        ({"target_quantile": 0.0}, "target_quantile"),
        ({"clip_lr": 0.0}, "clip_lr"),
        ({"count_noise_multiplier": 0.0}, "count_noise_multiplier"),
    ],
)
def test_clipper_refuses_bad_settings(kwargs: dict[str, float], field: str) -> None:
    settings: dict[str, float] = {"initial_clip": 1.0, "count_noise_multiplier": 1.0} | kwargs
    with pytest.raises(ConfigurationError, match=field):
        AdaptiveClipper(**settings)
