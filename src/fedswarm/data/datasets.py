"""Built-in datasets behind stable names, and the :class:`ArrayDataset` container.

A federation spec names its data (``dataset = "digits"``); :func:`load_dataset` turns the name into an
:class:`ArrayDataset`: one pooled table that a simulation later partitions across members (a real node
loads its own table with :func:`fedswarm.data.loaders.load_table` instead).

Built-ins
---------
``breast_cancer``
    scikit-learn's bundled Wisconsin diagnostic breast cancer data: 569 rows, 30 features, 2 classes.
    Option ``standardize`` (bool, default true) z-scores every feature with the mean and standard
    deviation of all 569 rows. Those 60 numbers are the only information that crosses the later
    held-out split; a real federation would obtain the same statistics by aggregating members' sums and
    sums of squares.
``digits``
    scikit-learn's bundled 8x8 handwritten digits: 1,797 rows, 64 features scaled from 0..16 to [0, 1],
    10 classes. No options.
``fraud_synthetic``
    Synthetic card transactions, one bank per member, see :mod:`fedswarm.data.fraud`.

None of them touches the network.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError, DataError, SpecError
from fedswarm.core.task import Scalar

__all__ = [
    "ArrayDataset",
    "DatasetLoader",
    "dataset_names",
    "load_dataset",
    "register_dataset",
]

_NO_OPTIONS: Mapping[str, Scalar] = MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False)
class ArrayDataset:
    """A pooled, fully in-memory classification table.

    Attributes
    ----------
    name:
        Stable name of the dataset (registry name, or the file stem for loaded tables).
    x:
        Features, float32 of shape ``(n, d)``.
    y:
        Class indices, int64 of shape ``(n,)``, each in ``range(len(class_names))``.
    feature_names, class_names:
        ``d`` feature names and the names of the classes, in index order.
    groups:
        For naturally partitioned data (one group per bank, hospital, ...), the int64 group id of every
        row; ``None`` otherwise.
    description:
        One human-readable sentence about the source.

    Equality is identity: comparing arrays element-wise is left to the caller.
    """

    name: str
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    groups: npt.NDArray[np.int64] | None
    description: str

    def __post_init__(self) -> None:
        where = f"dataset '{self.name}'"
        if self.x.ndim != 2 or self.x.dtype != np.float32:
            raise DataError(f"{where}: x must be a 2-D float32 array, got {self.x.dtype} {self.x.shape}")
        if self.y.ndim != 1 or self.y.dtype != np.int64:
            raise DataError(f"{where}: y must be a 1-D int64 array, got {self.y.dtype} {self.y.shape}")
        n, d = self.x.shape
        if self.y.shape[0] != n:
            raise DataError(f"{where}: x has {n} rows but y has {self.y.shape[0]}")
        if len(self.feature_names) != d:
            raise DataError(f"{where}: {d} feature columns but {len(self.feature_names)} feature names")
        if not self.class_names:
            raise DataError(f"{where}: class_names is empty")
        if n and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.class_names)):
            raise DataError(f"{where}: labels must lie in 0..{len(self.class_names) - 1}")
        if self.groups is not None and (self.groups.shape != (n,) or self.groups.dtype != np.int64):
            raise DataError(f"{where}: groups must be an int64 array of shape ({n},)")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.x.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class DatasetLoader(Protocol):
    """Builds a dataset from the run seed, the number of members and the spec's ``data.options``."""

    def __call__(self, *, seed: int, members: int, options: Mapping[str, Scalar]) -> ArrayDataset: ...


_REGISTRY: dict[str, DatasetLoader] = {}


def register_dataset(name: str, loader: DatasetLoader) -> None:
    """Make ``loader`` available to specs as ``name``.

    Raises
    ------
    ConfigurationError
        If ``name`` is already registered.
    """
    if name in _REGISTRY:
        raise ConfigurationError(f"dataset '{name}' is already registered")
    _REGISTRY[name] = loader


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names, sorted."""
    return tuple(sorted(_REGISTRY))


def load_dataset(name: str, *, seed: int, members: int, options: Mapping[str, Scalar] = _NO_OPTIONS) -> ArrayDataset:
    """Load the registered dataset ``name``.

    Parameters
    ----------
    name:
        A name from :func:`dataset_names`.
    seed:
        Run seed; only generated datasets depend on it.
    members:
        Number of federation members (``fraud_synthetic`` creates one bank per member).
    options:
        Dataset-specific options (``data.options`` in a spec); unknown keys are rejected.

    Raises
    ------
    SpecError
        Unknown dataset name (path ``data.dataset``) or a bad option (path ``data.options.<key>``).
    """
    loader = _REGISTRY.get(name)
    if loader is None:
        raise SpecError("data.dataset", f"unknown dataset '{name}'; choose one of {', '.join(dataset_names())}")
    return loader(seed=seed, members=members, options=options)


# -- option parsing shared by the built-in loaders ----------------------------------------------------------


def check_option_keys(dataset: str, options: Mapping[str, Scalar], allowed: tuple[str, ...]) -> None:
    """Raise :class:`SpecError` for an option ``dataset`` does not know."""
    for key in options:
        if key not in allowed:
            accepted = ", ".join(allowed) if allowed else "no options"
            raise SpecError(f"data.options.{key}", f"dataset '{dataset}' accepts {accepted}")


def option(options: Mapping[str, Scalar], key: str, default: Any, kind: type) -> Any:
    """Read ``options[key]`` as ``kind`` (bool, int, float or str), or return ``default``."""
    value = options.get(key, default)
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise SpecError(f"data.options.{key}", f"expected {kind.__name__}, got {value!r}")
    return value


# -- built-in loaders ---------------------------------------------------------------------------------------


@functools.cache
def _sklearn_bundle(name: str) -> tuple[npt.NDArray[Any], npt.NDArray[Any], tuple[str, ...], tuple[str, ...]]:
    from sklearn import datasets as skd

    bunch = skd.load_breast_cancer() if name == "breast_cancer" else skd.load_digits()
    features = tuple(str(f) for f in bunch.feature_names)
    classes = tuple(str(c) for c in bunch.target_names)
    return np.asarray(bunch.data), np.asarray(bunch.target), features, classes


def _load_breast_cancer(*, seed: int, members: int, options: Mapping[str, Scalar]) -> ArrayDataset:
    del seed, members
    check_option_keys("breast_cancer", options, ("standardize",))
    data, target, features, classes = _sklearn_bundle("breast_cancer")
    x = data.astype(np.float64)
    if option(options, "standardize", True, bool):
        x = (x - x.mean(axis=0)) / x.std(axis=0)
    return ArrayDataset(
        name="breast_cancer",
        x=x.astype(np.float32),
        y=target.astype(np.int64),
        feature_names=features,
        class_names=classes,
        groups=None,
        description="Wisconsin diagnostic breast cancer (scikit-learn bundle): 569 rows, 30 features",
    )


def _load_digits(*, seed: int, members: int, options: Mapping[str, Scalar]) -> ArrayDataset:
    del seed, members
    check_option_keys("digits", options, ())
    data, target, features, classes = _sklearn_bundle("digits")
    return ArrayDataset(
        name="digits",
        x=(data / 16.0).astype(np.float32),
        y=target.astype(np.int64),
        feature_names=features,
        class_names=classes,
        groups=None,
        description="8x8 handwritten digits (scikit-learn bundle): 1,797 rows, 64 pixels in [0, 1]",
    )


def _load_fraud(*, seed: int, members: int, options: Mapping[str, Scalar]) -> ArrayDataset:
    from fedswarm.data.fraud import load_fraud_synthetic  # fraud.py imports this module

    return load_fraud_synthetic(seed=seed, members=members, options=options)


_BUILTINS: dict[str, Callable[..., ArrayDataset]] = {
    "breast_cancer": _load_breast_cancer,
    "digits": _load_digits,
    "fraud_synthetic": _load_fraud,
}
for _name, _loader in _BUILTINS.items():
    register_dataset(_name, _loader)
