"""The dataset registry and the scikit-learn built-ins."""

from __future__ import annotations

import numpy as np
import pytest

from fedswarm.core.errors import ConfigurationError, DataError, SpecError
from fedswarm.data.datasets import ArrayDataset, dataset_names, load_dataset, register_dataset


def test_builtin_names_are_registered() -> None:
    assert {"breast_cancer", "digits", "fraud_synthetic"} <= set(dataset_names())
    assert list(dataset_names()) == sorted(dataset_names())


def test_unknown_name_is_a_spec_error_listing_the_choices() -> None:
    with pytest.raises(SpecError) as info:
        load_dataset("mnist", seed=0, members=2)
    assert info.value.path == "data.dataset"
    assert "unknown dataset 'mnist'" in str(info.value)
    assert "breast_cancer" in str(info.value) and "digits" in str(info.value)


def test_digits_is_scaled_to_unit_interval() -> None:
    data = load_dataset("digits", seed=0, members=2)
    assert data.x.shape == (1797, 64) and data.x.dtype == np.float32 and data.y.dtype == np.int64
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    # class sizes of the UCI optdigits test set bundled with scikit-learn
    assert np.bincount(data.y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert data.groups is None and data.num_classes == 10


def test_breast_cancer_standardized_by_default_and_raw_on_request() -> None:
    data = load_dataset("breast_cancer", seed=0, members=2)
    assert data.x.shape == (569, 30)
    assert np.bincount(data.y).tolist() == [212, 357]
    assert data.class_names == ("malignant", "benign")
    np.testing.assert_allclose(data.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x.std(axis=0), 1.0, atol=1e-4)
    raw = load_dataset("breast_cancer", seed=0, members=2, options={"standardize": False})
    assert raw.feature_names[3] == "mean area"
    assert float(raw.x[:, 3].max()) == pytest.approx(2501.0)


def test_bad_options_name_the_option() -> None:
    with pytest.raises(SpecError) as info:
        load_dataset("digits", seed=0, members=2, options={"standardize": True})
    assert info.value.path == "data.options.standardize"
    with pytest.raises(SpecError) as info:
        load_dataset("breast_cancer", seed=0, members=2, options={"standardize": 1})
    assert info.value.path == "data.options.standardize"
    with pytest.raises(SpecError, match="fraud_rate"):
        load_dataset("fraud_synthetic", seed=0, members=2, options={"fraud_rate": "high"})


def test_array_dataset_validates_its_arrays() -> None:
    x = np.zeros((3, 2), dtype=np.float32)
    y = np.array([0, 1, 1], dtype=np.int64)
    ok = ArrayDataset("t", x, y, ("a", "b"), ("n", "p"), None, "test")
    assert len(ok) == 3 and ok.num_features == 2
    with pytest.raises(DataError, match="float32"):
        ArrayDataset("t", x.astype(np.float64), y, ("a", "b"), ("n", "p"), None, "test")
    with pytest.raises(DataError, match=r"0\.\.1"):
        ArrayDataset("t", x, y + 1, ("a", "b"), ("n", "p"), None, "test")
    with pytest.raises(DataError, match="feature names"):
        ArrayDataset("t", x, y, ("a",), ("n", "p"), None, "test")
    with pytest.raises(DataError, match="groups"):
        ArrayDataset("t", x, y, ("a", "b"), ("n", "p"), np.zeros(2, dtype=np.int64), "test")


def test_registering_a_taken_name_fails() -> None:
    def loader(*, seed: int, members: int, options: object) -> ArrayDataset:
        raise AssertionError("never called")

    with pytest.raises(ConfigurationError, match="digits"):
        register_dataset("digits", loader)
