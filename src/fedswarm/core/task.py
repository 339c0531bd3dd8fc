"""The task API: what a user supplies so that fedswarm can train their model.

One task runs unchanged in simulation and on real nodes. It knows how to create initial parameters, how
to train on local data starting from the global parameters, and how to evaluate. It never sees other
members' data and never talks to the network: the engine calls it.

A user names their own task in the spec as ``package.module:attribute``; the attribute is either an
object implementing :class:`Task`, or a factory ``(info: DataInfo, options: Mapping[str, Scalar]) -> Task``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedswarm.core.data import Arrays
from fedswarm.core.errors import TaskError
from fedswarm.core.parameters import Parameters

__all__ = [
    "DataInfo",
    "EvalResult",
    "FitConfig",
    "FitResult",
    "MemberState",
    "ProbabilisticTask",
    "Scalar",
    "Task",
    "TaskFactory",
]

Scalar: TypeAlias = bool | int | float | str


@dataclass(frozen=True, slots=True)
class DataInfo:
    """What a task may know about the data before seeing any of it."""

    num_features: int
    num_classes: int
    feature_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FitConfig:
    """The round configuration a member trains with.

    ``seed`` is derived from the run seed, the round and the member, so local shuffling is reproducible
    and independent of which backend runs the member. ``proximal_mu`` is FedProx's μ (0 for plain local
    SGD). ``extra`` carries strategy- or user-defined knobs.
    """

    round: int
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    proximal_mu: float = 0.0
    extra: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FitResult:
    """What local training returns: either new ``parameters`` or an ``update`` (new minus global).

    Exactly one of the two must be given. ``num_examples`` weights the update in FedAvg.
    """

    num_examples: int
    parameters: Parameters | None = None
    update: Parameters | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.parameters is None) == (self.update is None):
            raise TaskError("FitResult needs exactly one of parameters= or update=")
        if not isinstance(self.num_examples, int | np.integer) or self.num_examples < 0:
            raise TaskError(f"FitResult.num_examples must be a non-negative int, got {self.num_examples!r}")


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Evaluation of parameters on one split: the number of examples, the loss and other metrics."""

    num_examples: int
    loss: float
    metrics: Mapping[str, float] = field(default_factory=dict)


class MemberState(MutableMapping[str, npt.NDArray[Any]]):
    """Persistent per-member arrays (control variates, personal layers, optimizer moments ...).

    The engine loads a member's state before :meth:`Task.fit` and stores it afterwards if it changed.
    It is kept on disk when the federation is large, so only members being trained are in memory.
    """

    __slots__ = ("_data", "dirty")

    def __init__(self, data: Mapping[str, npt.NDArray[Any]] | None = None) -> None:
        self._data: dict[str, npt.NDArray[Any]] = dict(data or {})
        self.dirty = False

    def __getitem__(self, key: str) -> npt.NDArray[Any]:
        return self._data[key]

    def __setitem__(self, key: str, value: npt.NDArray[Any]) -> None:
        self._data[key] = np.asarray(value)
        self.dirty = True

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self.dirty = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to_dict(self) -> dict[str, npt.NDArray[Any]]:
        return dict(self._data)


@runtime_checkable
class Task(Protocol):
    """A user's model and training procedure."""

    def init_parameters(self, *, seed: int) -> Parameters:
        """Initial global parameters (deterministic for a given seed)."""
        ...

    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        """Train locally on ``data`` starting from ``parameters``."""
        ...

    def evaluate(self, parameters: Parameters, data: Arrays) -> EvalResult:
        """Evaluate ``parameters`` on ``data``."""
        ...


@runtime_checkable
class ProbabilisticTask(Task, Protocol):
    """A classifier that can return class probabilities (enables AUPRC and batched evaluation)."""

    def predict_proba(self, parameters: Parameters, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Class probabilities of shape (len(x), num_classes)."""
        ...


class TaskFactory(Protocol):
    def __call__(self, info: DataInfo, options: Mapping[str, Scalar]) -> Task: ...
