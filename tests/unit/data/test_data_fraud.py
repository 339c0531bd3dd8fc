"""The synthetic card-fraud generator."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from fedswarm.core.errors import SpecError
from fedswarm.data.datasets import load_dataset
from fedswarm.data.fraud import FEATURE_NAMES, bank_profiles, generate_fraud

AMOUNT = FEATURE_NAMES.index("log_amount")


def test_shape_rate_and_groups() -> None:
    data = load_dataset("fraud_synthetic", seed=11, members=8)
    assert data.x.shape == (8 * 4000, 15) and data.class_names == ("legit", "fraud")
    assert 0.007 <= data.y.mean() <= 0.014
    assert data.groups is not None
    assert np.bincount(data.groups).tolist() == [4000] * 8
    np.testing.assert_array_equal(data.x[:, 7:].sum(axis=1), 1.0)  # merchant one-hot
    np.testing.assert_allclose(data.x[:, 1] ** 2 + data.x[:, 2] ** 2, 1.0, atol=1e-5)  # hour on the circle


def test_fraud_rate_option() -> None:
    data = load_dataset("fraud_synthetic", seed=2, members=4, options={"fraud_rate": 0.05, "drift": 0.0})
    assert 0.04 <= data.y.mean() <= 0.06


def test_deterministic_by_seed() -> None:
    a = generate_fraud(banks=3, transactions_per_bank=500, seed=5)
    b = generate_fraud(banks=3, transactions_per_bank=500, seed=5)
    c = generate_fraud(banks=3, transactions_per_bank=500, seed=6)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


def test_drift_makes_banks_differ() -> None:
    def bank_means(drift: float) -> np.ndarray:
        data = generate_fraud(banks=8, transactions_per_bank=3000, drift=drift, seed=3)
        assert data.groups is not None
        return np.array([data.x[data.groups == b, AMOUNT].mean() for b in range(8)])

    drifted, identical = bank_means(1.0), bank_means(0.0)
    assert np.ptp(drifted) > 0.3  # amount_mu spread 0.35 * drift * z
    assert np.ptp(identical) < 0.12  # only sampling noise: sd 0.8 / sqrt(3000) per bank


def test_bank_profiles() -> None:
    same = bank_profiles(banks=4, fraud_rate=0.01, drift=0.0, seed=1)
    assert len(set(same)) == 1
    drifted = bank_profiles(banks=8, fraud_rate=0.01, drift=1.0, seed=1)
    rates = np.array([p.fraud_rate for p in drifted])
    assert rates.mean() == pytest.approx(0.01)
    assert rates.max() / rates.min() <= 4.0 + 1e-9  # 2**u for u in [-1, 1]
    assert len({p.amount_mu for p in drifted}) == 8


def test_fraud_follows_its_pattern_and_is_learnable_but_not_trivial() -> None:
    data = generate_fraud(banks=8, transactions_per_bank=4000, seed=4)
    fraud, legit = data.x[data.y == 1], data.x[data.y == 0]
    assert fraud[:, AMOUNT].mean() > legit[:, AMOUNT].mean() + 0.4
    present = FEATURE_NAMES.index("card_present")

    def night(rows: np.ndarray) -> float:  # within about 3 hours of midnight
        return float((rows[:, FEATURE_NAMES.index("hour_cos")] > 0.7).mean())

    assert night(fraud) > 3 * night(legit)
    assert fraud[:, present].mean() < legit[:, present].mean()
    assert data.groups is not None
    train = data.groups < 6
    model = LogisticRegression(max_iter=1000).fit(data.x[train], data.y[train])
    auc = roc_auc_score(data.y[~train], model.predict_proba(data.x[~train])[:, 1])
    assert 0.75 < auc < 0.97


def test_out_of_range_options() -> None:
    with pytest.raises(SpecError) as info:
        load_dataset("fraud_synthetic", seed=0, members=2, options={"fraud_rate": 0.0})
    assert info.value.path == "data.options.fraud_rate"
    with pytest.raises(SpecError) as info:
        load_dataset("fraud_synthetic", seed=0, members=100_000, options={})
    assert info.value.path == "data.options.transactions_per_bank"
    with pytest.raises(SpecError) as info:
        load_dataset("fraud_synthetic", seed=0, members=2, options={"label_noise": 0.5})
    assert info.value.path == "data.options.label_noise"
