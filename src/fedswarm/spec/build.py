"""Turn a validated :class:`~fedswarm.spec.schema.Spec` into live objects: data, task, strategy, stages.

Registries map the stable names used in specs to factories. A user's own task is named
``package.module:attribute`` and imported from the current working directory or the Python path.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedswarm.core.errors import SpecError
from fedswarm.core.task import DataInfo, Scalar, Task
from fedswarm.data.datasets import ArrayDataset, load_dataset
from fedswarm.data.federated import FederatedData, build_federated_data
from fedswarm.data.loaders import load_table
from fedswarm.rounds.stages import ClientStage, ClipNorm
from fedswarm.spec.rules import RULES, build_registered_rule
from fedswarm.spec.schema import FedAvgSpec, FedOptSpec, FedProxSpec, Spec
from fedswarm.strategy.base import AggregationRule, LocalTraining, Sampling, Strategy
from fedswarm.strategy.fedavg import FedAvg
from fedswarm.strategy.fedopt import FedAdagrad, FedAdam, FedYogi
from fedswarm.strategy.fedprox import FedProx
from fedswarm.task.numpy_softmax import make_numpy_softmax_task

__all__ = [
    "RULES",
    "STRATEGIES",
    "TASKS",
    "build_client_stages",
    "build_data",
    "build_rule",
    "build_strategy",
    "build_task",
    "load_data",
]

TaskFactoryFn = Callable[[DataInfo, Mapping[str, Scalar]], Task]


def _sklearn_factory(info: DataInfo, options: Mapping[str, Scalar]) -> Task:
    from fedswarm.task.sklearn_task import make_sklearn_task

    return make_sklearn_task(info, options)


def _torch_factory(info: DataInfo, options: Mapping[str, Scalar]) -> Task:
    from fedswarm.task.torch_task import make_torch_mlp_task

    return make_torch_mlp_task(info, options)


TASKS: dict[str, TaskFactoryFn] = {
    "numpy_softmax": make_numpy_softmax_task,
    "sklearn": _sklearn_factory,
    "torch_mlp": _torch_factory,
}

STRATEGIES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
}


def load_data(spec: Spec) -> ArrayDataset:
    d = spec.data
    if d.dataset == "table":
        assert d.path is not None and d.label is not None
        return load_table(d.path, label=d.label, features=d.features)
    return load_dataset(d.dataset, seed=spec.federation.seed, members=spec.federation.members, options=d.options)


def build_data(spec: Spec, dataset: ArrayDataset | None = None) -> FederatedData:
    d = spec.data
    ds = dataset if dataset is not None else load_data(spec)
    return build_federated_data(
        ds,
        members=spec.federation.members,
        scheme=d.partition,
        alpha=d.alpha,
        shards_per_member=d.shards_per_member,
        min_samples=d.min_samples,
        samples_per_member=d.samples_per_member,
        holdout=d.holdout,
        test_fraction=d.test_fraction,
        seed=spec.federation.seed,
    )


def _import_target(target: str, path: str | None) -> Any:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SpecError("task.name", f"{target!r} is neither a built-in task {sorted(TASKS)} nor 'module:attribute'")
    folder = str(Path(path).resolve()) if path else str(Path.cwd())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError("task.name", f"cannot import module {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SpecError("task.name", f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def build_task(spec: Spec, info: DataInfo) -> Task:
    name = spec.task.name
    factory = TASKS.get(name)
    if factory is not None:
        return factory(info, spec.task.options)
    if ":" not in name:
        raise SpecError("task.name", f"unknown task {name!r}; choose one of {sorted(TASKS)} or 'module:attribute'")
    obj = _import_target(name, spec.task.path)
    if isinstance(obj, Task) and not isinstance(obj, type):
        return obj
    if callable(obj):
        task = obj(info, spec.task.options)
        if not isinstance(task, Task):
            raise SpecError("task.name", f"{name} returned {type(task).__name__}, which does not implement Task")
        return task
    raise SpecError("task.name", f"{name} is neither a Task nor a factory (info, options) -> Task")


def build_rule(spec: Spec) -> AggregationRule:
    rule = spec.strategy.rule
    return build_registered_rule(rule.name, rule.options, seed=spec.federation.seed)


def build_strategy(spec: Spec) -> Strategy:
    s = spec.strategy
    sampling = Sampling(fraction=s.fraction, min_members=s.min_members)
    t = spec.training
    training = LocalTraining(epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate)
    rule = build_rule(spec)
    seed = spec.federation.seed
    if isinstance(s, FedProxSpec):
        return FedProx(sampling=sampling, training=training, mu=s.mu, rule=rule, server_lr=s.server_lr, seed=seed)
    if isinstance(s, FedOptSpec):
        cls = STRATEGIES[s.name]
        assert issubclass(cls, FedAdam | FedYogi | FedAdagrad)
        return cls(
            sampling=sampling, training=training, server_lr=s.server_lr,
            beta1=s.beta1, beta2=s.beta2, tau=s.tau, rule=rule, seed=seed,
        )  # fmt: skip
    assert isinstance(s, FedAvgSpec)
    return FedAvg(sampling=sampling, training=training, rule=rule, server_lr=s.server_lr, seed=seed)


def build_client_stages(spec: Spec) -> list[ClientStage]:
    stages: list[ClientStage] = []
    if spec.stages.clip > 0:
        stages.append(ClipNorm(spec.stages.clip))
    return stages
