"""Anomaly scores against hand-computed values, the flagging rules, and the reputation average."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedswarm.rounds.robust.detection import Detector, DetectorSettings, anomaly_scores, robust_z


def test_robust_z_by_hand() -> None:
    # median 3, |v - 3| = 2 1 0 1 7 -> MAD 1, scale 1.4826
    np.testing.assert_allclose(robust_z([1, 2, 3, 4, 10]), np.array([-2, -1, 0, 1, 7]) / 1.4826)
    # MAD 0 -> mean absolute deviation: |v - 1| = 0 0 0 4, mean 1, scale 1.2533
    np.testing.assert_allclose(robust_z([1, 1, 1, 5]), np.array([0, 0, 0, 4]) / 1.2533)
    np.testing.assert_array_equal(robust_z([2.0, 2.0, 2.0]), [0.0, 0.0, 0.0])


def test_scores_by_hand() -> None:
    updates = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-3.0, -3.0], [0.0, 0.0]])
    s = anomaly_scores(updates)
    assert s.reference.tolist() == [0.0, 0.0]  # coordinate-wise median of 1 0 1 -3 0 and 0 1 1 -3 0
    # cosine to a zero reference is undefined
    assert np.isnan(s.cosine).all()
    np.testing.assert_allclose(s.norm, [1, 1, math.sqrt(2), math.sqrt(18), 0])
    np.testing.assert_allclose(s.norm_ratio, s.norm / 1.0)
    s2 = anomaly_scores(updates[:3], reference=[1.0, 0.0])
    np.testing.assert_allclose(s2.cosine, [1.0, 0.0, 1 / math.sqrt(2)])
    np.testing.assert_allclose(s2.distance, [0.0, math.sqrt(2), 1.0])
    np.testing.assert_allclose(s2.distance_ratio, [0.0, math.sqrt(2), 1.0])


def _honest(rng: np.random.Generator, n: int, d: int = 40) -> np.ndarray:
    direction = np.linspace(1.0, 2.0, d)
    return direction + rng.normal(0.0, 0.3, size=(n, d))


def test_flags_scaled_sign_flipped_and_zero_updates_but_no_honest_one() -> None:
    rng = np.random.default_rng(3)
    rows = _honest(rng, 20)
    rows[3] *= 25.0  # scaling
    rows[7] *= -1.0  # sign flip
    rows[11] = 0.0  # free-riding
    det = Detector(DetectorSettings(), member_name=lambda m: f"m{m}")
    records = det.score_round(4, list(range(100, 120)), rows)
    by_member = {r["member"]: r for r in records}
    assert set(by_member) == {"m103", "m107", "m111"}
    assert "x the median norm" in by_member["m103"]["reason"] and by_member["m103"]["norm_ratio"] > 15
    assert by_member["m107"]["cosine"] < -0.9 and "cosine" in by_member["m107"]["reason"]
    assert by_member["m111"]["reason"].startswith("zero update") and by_member["m111"]["cosine"] is None
    for rec in records:
        assert rec["round"] == 4 and rec["flagged"] is True and rec["reputation"] == pytest.approx(0.7)
        assert set(rec) == {
            "member", "round", "distance", "cosine", "norm_z", "norm_ratio", "distance_ratio", "cosine_z",
            "reputation", "flagged", "reason",
        }  # fmt: skip


def test_reputation_is_an_exponential_moving_average() -> None:
    rng = np.random.default_rng(5)
    det = Detector(DetectorSettings(decay=0.3, threshold=0.5), member_name=str)
    pattern = [True, False, True, True]
    for rnd, bad in enumerate(pattern, start=1):
        rows = _honest(rng, 10)
        if bad:
            rows[0] *= -1.0
        det.score_round(rnd, list(range(10)), rows)
    expected = 1.0
    for bad in pattern:
        expected = 0.7 * expected + 0.3 * (0.0 if bad else 1.0)
    assert det.reputation[0] == pytest.approx(expected)  # 0.7 -> 0.79 -> 0.553 -> 0.3871
    assert det.reputation[1] == 1.0
    assert det.flagged() == ["0"]
    summary = det.summary()
    assert summary["flagged"] == ["0"]
    assert summary["detection"]["anomalies"] == 3 and summary["detection"]["times_flagged"] == {"0": 3}


def test_small_rounds_are_not_scored() -> None:
    det = Detector(DetectorSettings(min_updates=4), member_name=str)
    assert det.score_round(1, [0, 1, 2], np.array([[1.0], [1.0], [-50.0]])) == []
    assert det.rounds_scored == 0 and det.reputation == {}


def test_sampled_coordinates_estimate_the_full_scores() -> None:
    rng = np.random.default_rng(11)
    rows = _honest(rng, 12, d=20_000)
    rows[2] *= 30.0
    rows[5] *= -1.0
    full = anomaly_scores(rows)
    sampled = anomaly_scores(rows, max_coordinates=2_000, seed=3)
    assert full.columns is None and sampled.columns is not None and len(sampled.columns) == 2_000
    np.testing.assert_allclose(sampled.norm, full.norm, rtol=0.05)
    np.testing.assert_allclose(sampled.distance, full.distance, rtol=0.1)
    np.testing.assert_allclose(sampled.cosine, full.cosine, atol=0.05)
    np.testing.assert_allclose(sampled.norm_ratio, full.norm_ratio, rtol=0.05)
    same = anomaly_scores(rows, max_coordinates=2_000, seed=3)
    assert np.array_equal(same.columns, sampled.columns)  # type: ignore[arg-type]
