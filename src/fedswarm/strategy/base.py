"""What every strategy shares: member sampling, the local training recipe, and the aggregation rule.

A strategy is thin state around the pure functions of :mod:`fedswarm.aggregation`: it decides which
members train in a round, with which configuration, and how their updates become the next global model.
Everything works on flat float64 vectors (see :meth:`Parameters.flatten`); the round engine converts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedswarm.aggregation.mean import weighted_mean
from fedswarm.core.errors import ConfigurationError, RoundAborted
from fedswarm.core.task import FitConfig, Scalar

__all__ = [
    "RULE_STATE_PREFIX",
    "AggregationRule",
    "LocalTraining",
    "Sampling",
    "StatefulRule",
    "Strategy",
    "member_seed",
    "sample_members",
]

Vector = npt.NDArray[np.float64]


class AggregationRule(Protocol):
    """Combines the rows of an (n, d) update matrix into one update of length d."""

    @property
    def name(self) -> str: ...

    @property
    def needs_individual_updates(self) -> bool: ...

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector: ...


@runtime_checkable
class StatefulRule(Protocol):
    """A rule that carries state from one aggregation to the next (bucketing's round counter, centered
    clipping's center): it serializes it as named arrays."""

    def state_dict(self) -> dict[str, npt.NDArray[Any]]: ...

    def load_state_dict(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Restore :meth:`state_dict`; an empty mapping resets the rule to its initial state."""
        ...


RULE_STATE_PREFIX = "rule."
"""Prefix of the rule's entries in :meth:`Strategy.state_dict`."""


@dataclass(frozen=True, slots=True)
class MeanRule:
    """FedAvg's weighted mean (weights are the members' numbers of examples)."""

    name: str = "mean"
    needs_individual_updates: bool = False
    weighted: bool = True

    def __call__(self, updates: npt.NDArray[Any], *, weights: npt.NDArray[Any]) -> Vector:
        return weighted_mean(updates, weights=weights if self.weighted else None)


@dataclass(frozen=True, slots=True)
class Sampling:
    """Which members train each round: a ``fraction`` of the candidates, but at least ``min_members``."""

    fraction: float = 1.0
    min_members: int = 2

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigurationError(f"strategy.fraction must be in (0, 1], got {self.fraction}")
        if self.min_members < 1:
            raise ConfigurationError(f"strategy.min_members must be >= 1, got {self.min_members}")

    def count(self, candidates: int) -> int:
        return min(candidates, max(self.min_members, math.ceil(self.fraction * candidates - 1e-9)))


@dataclass(frozen=True, slots=True)
class LocalTraining:
    """The local recipe sent to members: epochs, batch size and learning rate."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ConfigurationError(
                "training needs epochs >= 1, batch_size >= 1 and learning_rate > 0, got "
                f"{self.epochs}, {self.batch_size}, {self.learning_rate}"
            )


_MASK63 = (1 << 63) - 1


def member_seed(seed: int, rnd: int, member: int) -> int:
    """Deterministic per-(run, round, member) seed, independent of backend and of who else trains."""
    h = (seed & _MASK63) * 0x9E3779B97F4A7C15 + rnd * 0xBF58476D1CE4E5B9 + member * 0x94D049BB133111EB
    h ^= h >> 31
    h = (h * 0xD6E8FEB86659FD93) & ((1 << 64) - 1)
    return (h ^ (h >> 32)) & _MASK63


def sample_members(
    rnd: int, candidates: int | npt.NDArray[np.int64], *, sampling: Sampling, seed: int
) -> npt.NDArray[np.int64]:
    """Pick this round's members, sorted; deterministic in (seed, round, candidates).

    ``candidates`` is either the population size (every member 0..n-1 is a candidate; nothing is
    materialised beyond the sample) or an explicit array of available member ids.
    """
    rng = np.random.Generator(np.random.PCG64([seed & _MASK63, rnd]))
    if isinstance(candidates, int | np.integer):
        n = int(candidates)
        k = sampling.count(n)
        if k < sampling.min_members:
            raise RoundAborted(
                f"round {rnd}: only {n} member(s) available, strategy.min_members is {sampling.min_members}"
            )
        if k == n:
            return np.arange(n, dtype=np.int64)
        return np.sort(rng.choice(n, size=k, replace=False).astype(np.int64))
    ids = np.sort(np.asarray(candidates, dtype=np.int64))
    k = sampling.count(len(ids))
    if k < sampling.min_members:
        raise RoundAborted(
            f"round {rnd}: only {len(ids)} member(s) available, strategy.min_members is {sampling.min_members}"
        )
    if k == len(ids):
        return ids
    return np.sort(ids[rng.choice(len(ids), size=k, replace=False)])


class Strategy:
    """Base strategy: FedAvg-style server update ``x ← x + server_lr · rule(updates)``.

    Subclasses override :meth:`server_update` (FedOpt) or :meth:`fit_extra` (FedProx).
    """

    name: ClassVar[str] = "fedavg"

    def __init__(
        self,
        *,
        sampling: Sampling,
        training: LocalTraining,
        rule: AggregationRule | None = None,
        server_lr: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.sampling = sampling
        self.training = training
        self.rule: AggregationRule = rule if rule is not None else MeanRule()
        self.server_lr = float(server_lr)
        self.seed = int(seed)

    # selection and configuration ----------------------------------------------------------------
    def select(self, rnd: int, candidates: int | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return sample_members(rnd, candidates, sampling=self.sampling, seed=self.seed)

    def fit_extra(self) -> Mapping[str, Scalar]:
        return {}

    def proximal_mu(self) -> float:
        return 0.0

    def fit_config(self, rnd: int, member: int) -> FitConfig:
        t = self.training
        return FitConfig(
            round=rnd,
            epochs=t.epochs,
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            seed=member_seed(self.seed, rnd, member),
            proximal_mu=self.proximal_mu(),
            extra=self.fit_extra(),
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "rule": self.rule.name, "server_lr": self.server_lr}

    # aggregation ------------------------------------------------------------------------------
    def aggregate(self, rnd: int, x: Vector, updates: npt.NDArray[Any], weights: npt.NDArray[Any]) -> Vector:
        """Return the next global vector from the current one and the accepted updates."""
        delta = self.rule(updates, weights=weights)
        return self.server_update(x, delta)

    def server_update(self, x: Vector, delta: Vector) -> Vector:
        return x + self.server_lr * delta

    # state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, npt.NDArray[Any]]:
        """Everything the next aggregation depends on besides the model, as named arrays: the server
        optimizer's state (:meth:`server_state`) and the rule's, under ``rule.<name>``.

        A run that saves it after a round and restores it into a freshly built strategy (a resumed run,
        or the next leader of a swarm) aggregates the following rounds exactly as one that never stopped.
        """
        state = dict(self.server_state())
        if isinstance(self.rule, StatefulRule):
            state.update({RULE_STATE_PREFIX + k: v for k, v in self.rule.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Restore :meth:`state_dict`; an empty mapping resets the strategy to its initial state.

        Raises
        ------
        ConfigurationError
            The state does not fit this strategy or its rule.
        """
        rule = {k[len(RULE_STATE_PREFIX) :]: v for k, v in state.items() if k.startswith(RULE_STATE_PREFIX)}
        own = {k: v for k, v in state.items() if not k.startswith(RULE_STATE_PREFIX)}
        if isinstance(self.rule, StatefulRule):
            self.rule.load_state_dict(rule)
        elif rule:
            raise ConfigurationError(f"rule {self.rule.name!r} has no state, got keys {sorted(rule)}")
        self.load_server_state(own)

    def server_state(self) -> dict[str, npt.NDArray[Any]]:
        """The server optimizer's state (none for FedAvg's step)."""
        return {}

    def load_server_state(self, state: Mapping[str, npt.NDArray[Any]]) -> None:
        if state:
            raise ConfigurationError(f"{self.name} has no server state, got keys {sorted(state)}")


StrategyFactory = Callable[..., Strategy]
