"""Backdoor: a trigger pattern mapped to a target label (Bagdasaryan, Veit, Hua, Estrin, Shmatikov 2020,
"How To Backdoor Federated Learning", AISTATS; trigger patterns as in Gu, Dolan-Gavitt, Garg 2017,
"BadNets").

The trigger sets a few features to a fixed value: by default the last four features set to the largest
feature value in the data set (on ``digits``, the right half of the bottom pixel row turned fully on; on a
table, four columns pinned to an extreme). Each attacker adds triggered copies of a ``fraction`` of its
training rows, labelled ``target``, and trains on clean plus poisoned rows, so its model keeps the main
task while learning the backdoor; ``boost`` scales its update (model replacement, 1 = none).

The **attack success rate** is the share of held-out examples of the other classes that the model puts in
``target`` once the trigger is applied; the simulation reports it beside accuracy every round.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fedswarm.core.data import Arrays
from fedswarm.core.errors import SpecError
from fedswarm.sim.attacks.base import Attack, Vector
from fedswarm.sim.attacks.params import AttackParameters

__all__ = ["Backdoor", "build_backdoor"]

_POISON_STREAM = 0xBAC4D0


class Backdoor(Attack):
    kind: ClassVar[str] = "backdoor"

    def __init__(
        self,
        *,
        target: int,
        features: tuple[int, ...],
        value: float,
        fraction: float = 0.5,
        boost: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.target = target
        self.features = features
        self.value = value
        self.fraction = fraction
        self.boost = boost
        self.seed = seed
        self._cols = np.asarray(features, dtype=np.int64)

    def trigger(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """A copy of the feature rows ``x`` with the trigger applied."""
        out = np.array(x, copy=True)
        out[:, self._cols] = self.value
        return out

    def poison(self, member: int, train: Arrays) -> Arrays:
        n = len(train)
        k = max(1, round(self.fraction * n)) if n else 0
        rng = np.random.default_rng([self.seed, _POISON_STREAM, member])
        rows = np.sort(rng.choice(n, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)
        x = np.concatenate([train.x, self.trigger(train.x[rows]).astype(train.x.dtype)])
        y = np.concatenate([train.y, np.full(k, self.target, dtype=train.y.dtype)])
        return Arrays(x, y)

    def transform(self, update: Vector, *, member: int, rnd: int, n: int, f: int) -> Vector:
        return self.boost * update if self.boost != 1.0 else update

    def triggered_holdout(self, holdout: Arrays) -> Arrays:
        """Held-out examples of the other classes, triggered and labelled ``target`` (their accuracy is the ASR)."""
        keep = holdout.y != self.target
        x = self.trigger(holdout.x[keep])
        return Arrays(x, np.full(int(keep.sum()), self.target, dtype=holdout.y.dtype))

    def describe(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "features": list(self.features),
            "value": self.value,
            "fraction": self.fraction,
            "boost": self.boost,
        }


def build_backdoor(
    params: AttackParameters, *, classes: int, num_features: int, data_max: float, seed: int
) -> Backdoor:
    target = params.label("target", 0, classes=classes)
    assert target is not None
    default = tuple(range(max(0, num_features - 4), num_features))
    features = params.indices("features", default, size=num_features)
    value = params.real("value", data_max)
    if len(features) >= num_features:
        raise SpecError("attack.parameters.features", "the trigger must leave some features untouched")
    return Backdoor(
        target=target,
        features=features,
        value=value,
        fraction=params.fraction("fraction", 0.5),
        boost=params.real("boost", 1.0, positive=True),
        seed=seed,
    )
