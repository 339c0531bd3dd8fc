"""The two baselines every run is compared with, trained with the same budget as the federation.

* **centralized**: one model trained on the pooled training data of all members (what you would get if
  the data could be pooled), for ``rounds × epochs`` epochs.
* **local-only**: each member alone, on its own training split, for ``rounds × epochs`` epochs — as if it
  had taken part in every round, the most generous budget for this baseline. With many members a
  deterministic sample of at most ``local_only_max_members`` is trained.

Both are evaluated on the pooled held-out set (the same set as the federated model), and on members'
local test splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedswarm.core.data import Arrays
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import EvalResult, FitConfig, MemberState, Task
from fedswarm.data.federated import FederatedData
from fedswarm.rounds.coordinator import worst_fraction_mean
from fedswarm.strategy.base import LocalTraining, member_seed

__all__ = ["BaselineResult", "centralized_baseline", "local_only_baseline"]


@dataclass
class BaselineResult:
    accuracy: float
    loss: float
    curve: list[float] = field(default_factory=list)
    per_member: dict[int, float] = field(default_factory=dict)
    local_test_accuracy: float = float("nan")
    local_test_worst10: float = float("nan")
    extra: dict[str, float] = field(default_factory=dict)


def _train(
    task: Task, start: Parameters, data: Arrays, *, training: LocalTraining, rounds: int, seed: int, who: int
) -> tuple[Parameters, list[Parameters]]:
    params = start
    snapshots: list[Parameters] = []
    state = MemberState()
    for r in range(1, rounds + 1):
        cfg = FitConfig(
            round=r,
            epochs=training.epochs,
            batch_size=training.batch_size,
            learning_rate=training.learning_rate,
            seed=member_seed(seed, r, who),
        )
        res = task.fit(params, data, config=cfg, state=state)
        if res.parameters is not None:
            params = res.parameters
        else:
            assert res.update is not None
            params = Parameters.unflatten(params.flatten() + res.update.flatten(), params.schema)
        snapshots.append(params)
    return params, snapshots


def _acc(res: EvalResult) -> float:
    return float(res.metrics.get("accuracy", float("nan")))


def centralized_baseline(
    task: Task,
    start: Parameters,
    data: FederatedData,
    *,
    training: LocalTraining,
    rounds: int,
    seed: int,
    members: Sequence[int],
) -> BaselineResult:
    pooled = data.pooled_train()
    final, snaps = _train(task, start, pooled, training=training, rounds=rounds, seed=seed, who=-1)
    holdout = data.holdout
    curve = [_acc(task.evaluate(p, holdout)) for p in snaps] if len(holdout) else []
    res = task.evaluate(final, holdout) if len(holdout) else None
    per_member = {}
    for m in members:
        test = data.local(m).test
        if len(test):
            per_member[m] = _acc(task.evaluate(final, test))
    vals = np.fromiter(per_member.values(), dtype=np.float64, count=len(per_member))
    return BaselineResult(
        accuracy=_acc(res) if res else float("nan"),
        loss=res.loss if res else float("nan"),
        curve=curve,
        per_member=per_member,
        local_test_accuracy=float(np.nanmean(vals)) if len(vals) else float("nan"),
        local_test_worst10=worst_fraction_mean(vals) if len(vals) else float("nan"),
        extra={k: float(v) for k, v in (res.metrics.items() if res else ()) if k not in ("accuracy", "loss")},
    )


def local_only_baseline(
    task: Task,
    start: Parameters,
    data: FederatedData,
    *,
    training: LocalTraining,
    rounds: int,
    seed: int,
    members: Sequence[int],
) -> BaselineResult:
    holdout = data.holdout
    own: dict[int, float] = {}
    on_holdout: list[float] = []
    losses: list[float] = []
    extras: dict[str, list[float]] = {}
    curves: list[list[float]] = []
    for m in members:
        local = data.local(m)
        final, snaps = _train(task, start, local.train, training=training, rounds=rounds, seed=seed, who=m)
        if len(local.test):
            own[m] = _acc(task.evaluate(final, local.test))
        if len(holdout):
            r = task.evaluate(final, holdout)
            on_holdout.append(_acc(r))
            losses.append(r.loss)
            for k, v in r.metrics.items():
                if k not in ("accuracy", "loss"):
                    extras.setdefault(k, []).append(float(v))
            curves.append([_acc(task.evaluate(p, holdout)) for p in snaps])
    own_vals = np.fromiter(own.values(), dtype=np.float64, count=len(own))
    curve = list(np.mean(np.asarray(curves), axis=0)) if curves else []
    return BaselineResult(
        accuracy=float(np.mean(on_holdout)) if on_holdout else float(np.nanmean(own_vals)),
        loss=float(np.mean(losses)) if losses else float("nan"),
        curve=[float(c) for c in curve],
        per_member=own,
        local_test_accuracy=float(np.nanmean(own_vals)) if len(own_vals) else float("nan"),
        local_test_worst10=worst_fraction_mean(own_vals) if len(own_vals) else float("nan"),
        extra={k: float(np.nanmean(v)) for k, v in extras.items()},
    )
