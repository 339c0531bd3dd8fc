"""The aggregator's own update on a small clean root data set, for FLTrust (Cao, Fang, Liu, Gong 2021,
"FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping", NDSS).

FLTrust needs, in every round, the update ``g_0`` the aggregator gets by training the *current* global
model on its root data set with the members' local recipe. An aggregation rule only sees the updates, so:

1. :class:`RootTrainer` holds the task, the root data and the recipe, and computes ``g_0`` for a round
   from the global parameters (its local shuffling is seeded by the run seed and the round, so a replay
   computes the same ``g_0``);
2. :class:`ServerUpdateCollector` wraps the round's collector: before the members' updates are gathered it
   computes ``g_0`` from the global parameters the round sends out and publishes it with
   :func:`publish_server_update`;
3. the FLTrust rule takes it with :func:`take_server_update` when the strategy aggregates.

The hand-over is a context variable, set and consumed within one call of the round generator, so
concurrent runs in other threads do not see each other's value; a value is consumed once, and a rule that
finds none raises instead of aggregating without its root of trust.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar

import numpy as np
import numpy.typing as npt

from fedswarm.core.data import Arrays
from fedswarm.core.errors import ConfigurationError, TaskError
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import FitConfig, FitResult, MemberState, Task
from fedswarm.rounds.collect import Collector, CollectorGenerator
from fedswarm.rounds.messages import FitRequest
from fedswarm.rounds.stages import ServerContext
from fedswarm.strategy.base import LocalTraining, member_seed

__all__ = ["ROOT_SEED_ID", "RootTrainer", "ServerUpdateCollector", "publish_server_update", "take_server_update"]

Vector = npt.NDArray[np.float64]

ROOT_SEED_ID = (1 << 40) + 17
"""Member id used to derive the root trainer's per-round seed (no real member has it)."""

_SERVER_UPDATE: ContextVar[Vector | None] = ContextVar("fedswarm_fltrust_server_update", default=None)


def publish_server_update(update: Vector) -> None:
    """Make ``update`` the server update of the round being aggregated in this context."""
    _SERVER_UPDATE.set(np.asarray(update, dtype=np.float64))


def take_server_update(dimension: int) -> Vector:
    """Consume the published server update (it can be taken once).

    Raises
    ------
    ConfigurationError
        No server update was published for this round, or it has the wrong length.
    """
    value = _SERVER_UPDATE.get()
    _SERVER_UPDATE.set(None)
    if value is None:
        raise ConfigurationError(
            "rule 'fltrust' has no server update for this round: it runs only inside a run built from a spec "
            "(the robustness extension trains the aggregator's root data set each round)"
        )
    if value.shape != (dimension,):
        raise ConfigurationError(f"fltrust: the server update has shape {list(value.shape)}, expected [{dimension}]")
    return value


class RootTrainer:
    """Trains the global model on the aggregator's root data with the members' local recipe.

    Parameters
    ----------
    task
        The federation's task.
    root
        The root data set (small and clean).
    training
        Epochs, batch size and learning rate (the members' recipe, as in the FLTrust paper).
    seed
        The run seed; round ``r`` shuffles with ``member_seed(seed, r, ROOT_SEED_ID)``.
    """

    def __init__(self, task: Task, root: Arrays, *, training: LocalTraining, seed: int) -> None:
        if len(root) == 0:
            raise ConfigurationError("fltrust: the root data set is empty")
        self.task = task
        self.root = root
        self.training = training
        self.seed = int(seed)

    def server_update(self, rnd: int, parameters: Parameters) -> Vector:
        """``g_0`` for round ``rnd``: the root-trained parameters minus ``parameters``, flat float64."""
        t = self.training
        config = FitConfig(
            round=rnd,
            epochs=t.epochs,
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            seed=member_seed(self.seed, rnd, ROOT_SEED_ID),
        )
        result = self.task.fit(parameters, self.root, config=config, state=MemberState())
        if not isinstance(result, FitResult):
            raise TaskError(f"root trainer: task.fit must return FitResult, got {type(result).__name__}")
        if result.update is not None:
            result.update.check_schema(parameters.schema, who="root trainer: update")
            return result.update.flatten()
        assert result.parameters is not None
        result.parameters.check_schema(parameters.schema, who="root trainer: parameters")
        return np.asarray(result.parameters.flatten() - parameters.flatten(), dtype=np.float64)


class ServerUpdateCollector:
    """Publishes the round's FLTrust server update, then collects with ``inner``.

    ``trainer`` is built on first use (a worker process that never coordinates never builds it).
    """

    def __init__(self, inner: Collector, trainer: Callable[[], RootTrainer]) -> None:
        self.inner = inner
        self._make_trainer = trainer
        self._trainer: RootTrainer | None = None

    @property
    def reveals_individual_updates(self) -> bool:
        return self.inner.reveals_individual_updates

    def collect(
        self,
        rnd: int,
        requests: Mapping[int, FitRequest],
        *,
        dimension: int,
        ctx: ServerContext,
        screen: Callable[[int, npt.NDArray[np.float64]], str | None],
        member_name: Callable[[int], str],
    ) -> CollectorGenerator:
        if requests:
            if self._trainer is None:
                self._trainer = self._make_trainer()
            first = next(iter(requests.values()))
            publish_server_update(self._trainer.server_update(rnd, first.parameters))
        collection = yield from self.inner.collect(
            rnd, requests, dimension=dimension, ctx=ctx, screen=screen, member_name=member_name
        )
        return collection
