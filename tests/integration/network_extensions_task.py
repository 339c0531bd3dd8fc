"""The task the extension integration tests' nodes load (``task.name = "network_extensions_task:make"``).

It is the slow numpy task of :mod:`network_slow_task`, plus, with the option ``evil_member``, one member
whose update is scaled by ``evil_scale`` (a model-poisoning member). The task recognizes that member by
the seed of its fit configuration, so the same member misbehaves in ``fedswarm simulate`` (all members in
one process) and on a real node. No tests live here (the name keeps pytest from collecting it).
"""

from __future__ import annotations

from collections.abc import Mapping

from network_slow_task import make as make_slow

from fedswarm.core.data import Arrays
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import DataInfo, EvalResult, FitConfig, FitResult, MemberState, Scalar, Task
from fedswarm.strategy.base import member_seed

_OWN = ("evil_member", "evil_scale", "federation_seed")


class PoisoningTask:
    """Delegates to ``inner``; the fit of member ``evil`` returns its update times ``scale``."""

    def __init__(self, inner: Task, *, evil: int, scale: float, seed: int) -> None:
        self.inner = inner
        self.evil = evil
        self.scale = scale
        self.seed = seed

    def init_parameters(self, *, seed: int) -> Parameters:
        return self.inner.init_parameters(seed=seed)

    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        result = self.inner.fit(parameters, data, config=config, state=state)
        if self.evil < 0 or config.seed != member_seed(self.seed, config.round, self.evil):
            return result
        if result.update is not None:
            update = result.update.flatten() * self.scale
        else:
            assert result.parameters is not None
            update = (result.parameters.flatten() - parameters.flatten()) * self.scale
        return FitResult(
            num_examples=result.num_examples,
            update=Parameters.unflatten(update, parameters.schema),
            metrics=result.metrics,
        )

    def evaluate(self, parameters: Parameters, data: Arrays) -> EvalResult:
        return self.inner.evaluate(parameters, data)


def make(info: DataInfo, options: Mapping[str, Scalar]) -> Task:
    inner = make_slow(info, {k: v for k, v in options.items() if k not in _OWN})
    return PoisoningTask(
        inner,
        evil=int(options.get("evil_member", -1)),
        scale=float(options.get("evil_scale", 25.0)),
        seed=int(options.get("federation_seed", 0)),
    )
