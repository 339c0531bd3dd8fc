"""Client-level DP in rounds: clipping and noise shares on members, the noised release at the aggregator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedswarm.core.errors import ConfigurationError, RoundAborted
from fedswarm.privacy.dp.adaptive import AdaptiveClipper
from fedswarm.privacy.dp.stages import CentralGaussianNoise, DistributedNoiseShare, DPClip, clip_and_flag
from fedswarm.rounds.privacy.member import MemberProtection
from fedswarm.rounds.privacy.messages import MemberPrivacy
from fedswarm.rounds.privacy.release import NOISE_MARGIN_STDS, SumRelease

D = 200_000  # coordinates for the empirical standard deviations (relative error ~ 1/sqrt(2 D) = 0.16%)


def _std(x: np.ndarray) -> float:
    return float(np.std(x))


def test_clip_and_flag() -> None:
    u = np.array([3.0, 4.0])
    clipped, bit = clip_and_flag(u, clip=1.0)
    assert np.linalg.norm(clipped) <= 1.0 and bit == 0.0
    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-12)
    same, bit = clip_and_flag(u, clip=5.0)
    assert bit == 1.0 and np.array_equal(same, u)
    assert np.linalg.norm(DPClip(2.0).apply(u, ctx=None)) <= 2.0
    with pytest.raises(ConfigurationError, match="privacy.clip"):
        DPClip(0.0)


def test_central_noise_on_the_mean_is_z_c_over_m() -> None:
    stage = CentralGaussianNoise(noise_multiplier=1.3, clip=0.7, expected_count=10)
    assert stage.std_on_mean == pytest.approx(1.3 * 0.7 / 10)
    mean = np.full(D, 0.25)
    noise = stage.after_aggregate(mean, ctx=None) - mean
    assert _std(noise) == pytest.approx(0.091, rel=0.01)
    assert abs(float(noise.mean())) < 5 * 0.091 / math.sqrt(D)
    assert stage.accept(0, np.array([0.7, 0.0]), ctx=None) is None
    assert "exceeds the DP clip" in str(stage.accept(0, np.array([0.8, 0.0]), ctx=None))


def test_central_release_is_the_noised_sum_over_the_cohort_not_the_survivors() -> None:
    release = SumRelease(mode="central", clip=1.0, update_noise_multiplier=2.0)
    summed = np.full(D, 3.0)  # e.g. 6 contributors of a cohort of 8
    total, count = release.release(summed, dimension=D, contributors=6, cohort=8, noise_added=False)
    assert count == 8
    mean = total / count
    assert float(np.mean(mean)) == pytest.approx(3.0 / 8, abs=5 * 0.25 / math.sqrt(D))
    assert _std(mean - 3.0 / 8) == pytest.approx(2.0 * 1.0 / 8, rel=0.01)  # z C / m on the mean
    assert release.member_privacy() == MemberPrivacy(1.0, 0.0, 0.0, False)


def test_distributed_shares_sum_to_the_target_noise() -> None:
    z, c, n_min = 1.5, 0.5, 4
    release = SumRelease(mode="distributed", clip=c, update_noise_multiplier=z, min_survivors=n_min)
    privacy = release.member_privacy()
    assert privacy.update_noise_std == pytest.approx(z * c / 2)
    assert release.value_range() == pytest.approx(c + NOISE_MARGIN_STDS * z * c / 2)
    shares = [MemberProtection.protect(np.zeros(D), privacy) for _ in range(n_min)]
    assert _std(shares[0]) == pytest.approx(z * c / 2, rel=0.01)
    assert _std(np.sum(shares, axis=0)) == pytest.approx(z * c, rel=0.01)  # the central target
    assert DistributedNoiseShare(noise_multiplier=z, clip=c, min_survivors=n_min).std == pytest.approx(z * c / 2)
    total, count = release.release(np.sum(shares, axis=0), dimension=D, contributors=4, cohort=5, noise_added=False)
    assert count == 5 and np.array_equal(total, np.sum(shares, axis=0))  # no second noise at the aggregator
    with pytest.raises(RoundAborted, match="only 3 members survived"):
        release.release(np.zeros(D), dimension=D, contributors=3, cohort=5, noise_added=False)


def test_member_protection_clips_before_noising_and_appends_the_bit() -> None:
    privacy = MemberPrivacy(clip=1.0, update_noise_std=0.0, count_noise_std=0.0, report_unclipped=True)
    out = MemberProtection.protect(np.array([0.3, 0.4]), privacy)
    np.testing.assert_array_equal(out, [0.3, 0.4, 1.0])
    out = MemberProtection.protect(np.array([3.0, 4.0]), privacy)
    assert out[2] == 0.0 and np.linalg.norm(out[:2]) <= 1.0
    noisy = MemberPrivacy(clip=1.0, update_noise_std=0.0, count_noise_std=0.5, report_unclipped=True)
    bits = [MemberProtection.protect(np.array([0.1]), noisy)[1] for _ in range(4000)]
    assert float(np.std(bits)) == pytest.approx(0.5, rel=0.05) and float(np.mean(bits)) == pytest.approx(1.0, abs=0.05)


def test_adaptive_clip_moves_with_the_noised_unclipped_count() -> None:
    clipper = AdaptiveClipper(initial_clip=1.0, target_quantile=0.5, clip_lr=0.2, count_noise_multiplier=1e-9)
    release = SumRelease(mode="central", clip=1.0, update_noise_multiplier=1.0, adaptive=clipper)
    assert release.extra == 1 and release.member_privacy().report_unclipped
    summed = np.concatenate([np.zeros(10), [10.0]])  # all 10 of 10 members went unclipped
    release.release(summed, dimension=10, contributors=10, cohort=10, noise_added=True)
    assert release.clip == pytest.approx(math.exp(-0.2 * (1.0 - 0.5)))
    assert release.last_noised_count == 10.0
    summed = np.concatenate([np.zeros(10), [0.0]])  # none: the clip grows back
    release.release(summed, dimension=10, contributors=10, cohort=10, noise_added=True)
    assert release.clip == pytest.approx(1.0)


def test_release_without_dp_is_the_plain_sum_over_contributors() -> None:
    release = SumRelease(mode="none")
    total, count = release.release(np.arange(4.0), dimension=4, contributors=3, cohort=5, noise_added=False)
    assert count == 3 and np.array_equal(total, np.arange(4.0)) and release.value_range() is None
    with pytest.raises(RoundAborted, match="expected \\[5\\]"):
        release.release(np.arange(4.0), dimension=5, contributors=3, cohort=5, noise_added=False)
