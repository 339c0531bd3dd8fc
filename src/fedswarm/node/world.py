"""What a node needs from the spec: its task, its own data, the member runtime, and the job's digest.

Without ``--data`` a node builds the spec's dataset and partition exactly as ``fedswarm simulate`` does
and keeps only its own member's share (and the held-out set, which the coordinating node evaluates on,
as the simulation does). With ``--data PATH`` it reads its own table (the spec's ``data.label`` and
``data.features`` columns) and splits it into local train and test sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedswarm.codec import canonical
from fedswarm.core.data import Arrays, LocalData
from fedswarm.core.errors import ConfigurationError, DataError, SpecError
from fedswarm.core.parameters import Parameters, Schema
from fedswarm.core.task import DataInfo, Task
from fedswarm.data.loaders import load_table
from fedswarm.rounds.member import MemberRuntime
from fedswarm.rounds.state import SqliteStateStore
from fedswarm.spec.build import build_client_stages, build_data, build_task, load_data
from fedswarm.spec.schema import Spec

__all__ = ["NodeWorld", "build_node_world", "job_digest"]


@dataclass
class NodeWorld:
    task: Task
    schema: Schema
    initial: Parameters
    local: LocalData
    holdout: Arrays | None
    runtime: MemberRuntime


def job_digest(spec: Spec) -> str:
    """SHA-256 (hex) of the spec without what is local to one machine (output folder, data/task paths)."""
    value = spec.to_dict()
    value.pop("output", None)
    for section in ("data", "task"):
        if isinstance(value.get(section), dict):
            value[section] = {k: v for k, v in value[section].items() if k != "path"}
    return canonical.digest(value).hex()


def _own_table(spec: Spec, path: Path) -> tuple[LocalData, DataInfo]:
    label = spec.data.label
    if not label:
        raise SpecError("data.label", "a node started with --data needs the label column named in the spec")
    table = load_table(path, label=label, features=spec.data.features)
    classes = max(len(table.class_names), spec.network.num_classes or 0)
    rng = np.random.default_rng([spec.federation.seed, 104729])
    order = rng.permutation(len(table.y))
    n_test = round(spec.data.test_fraction * len(order))
    test, train = order[:n_test], order[n_test:]
    if len(train) == 0:
        raise DataError(f"{path}: no rows left for training after the {spec.data.test_fraction} test split")
    local = LocalData(Arrays(table.x[train], table.y[train]), Arrays(table.x[test], table.y[test]), classes)
    return local, DataInfo(num_features=table.x.shape[1], num_classes=classes, feature_names=table.feature_names)


def build_node_world(spec: Spec, *, member: int, name: str, data_path: Path | None, state_dir: Path) -> NodeWorld:
    """Build member ``member``'s task, data and runtime.

    Raises
    ------
    ConfigurationError
        The member is not one of the spec's members and no ``data_path`` was given.
    """
    holdout: Arrays | None = None
    if data_path is not None:
        local, info = _own_table(spec, Path(data_path))
    else:
        if member >= spec.federation.members:
            raise ConfigurationError(
                f"{name} is not one of the spec's {spec.federation.members} members: start it with --data PATH"
            )
        dataset = load_data(spec)
        data = build_data(spec, dataset)
        local = data.local(member)
        holdout = data.holdout if len(data.holdout) else None
        info = DataInfo(
            num_features=data.num_features, num_classes=data.num_classes, feature_names=tuple(dataset.feature_names)
        )
    task = build_task(spec, info)
    initial = task.init_parameters(seed=spec.federation.seed)

    def data_for(m: int) -> LocalData:
        if m != member:
            raise DataError(f"this node holds the data of {name} only, not of member {m}")
        return local

    runtime = MemberRuntime(
        task,
        data_for,
        schema=initial.schema,
        stages=build_client_stages(spec),
        state_store=SqliteStateStore(Path(state_dir) / "member-state.sqlite"),
        member_name=lambda m: name if m == member else f"member-{m:05d}",
    )
    return NodeWorld(task=task, schema=initial.schema, initial=initial, local=local, holdout=holdout, runtime=runtime)
