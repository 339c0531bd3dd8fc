"""Everything one simulated federation needs, built from a spec: data, task, schema, member runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedswarm.core.parameters import Schema
from fedswarm.core.task import DataInfo, Task
from fedswarm.data.datasets import ArrayDataset
from fedswarm.data.federated import FederatedData
from fedswarm.rounds.member import MemberRuntime
from fedswarm.rounds.state import InMemoryStateStore, SqliteStateStore, StateStore
from fedswarm.spec.build import build_client_stages, build_data, build_task, load_data
from fedswarm.spec.schema import Spec

__all__ = ["World", "build_world", "member_name"]

# Above this many members, per-member state lives in SQLite with an LRU cache instead of a dict.
DISK_STATE_THRESHOLD = 10_000


def member_name(member: int) -> str:
    return f"member-{member:05d}"


@dataclass
class World:
    spec: Spec
    dataset: ArrayDataset
    data: FederatedData
    info: DataInfo
    task: Task
    schema: Schema
    runtime: MemberRuntime


def _state_store(spec: Spec, state_dir: Path | None, worker: int) -> StateStore:
    mode = spec.simulation.state
    if mode == "auto":
        mode = "disk" if spec.federation.members > DISK_STATE_THRESHOLD and state_dir is not None else "memory"
    if mode == "disk":
        if state_dir is None:
            raise ValueError("disk state needs a state directory")
        return SqliteStateStore(state_dir / f"member-state-{worker}.sqlite")
    return InMemoryStateStore()


def build_world(spec: Spec, *, state_dir: Path | None = None, worker: int = 0) -> World:
    dataset = load_data(spec)
    data = build_data(spec, dataset)
    info = DataInfo(
        num_features=data.num_features,
        num_classes=data.num_classes,
        feature_names=tuple(dataset.feature_names),
    )
    task = build_task(spec, info)
    schema = task.init_parameters(seed=spec.federation.seed).schema
    runtime = MemberRuntime(
        task,
        data.local,
        schema=schema,
        stages=build_client_stages(spec),
        state_store=_state_store(spec, state_dir, worker),
        member_name=member_name,
    )
    return World(spec=spec, dataset=dataset, data=data, info=info, task=task, schema=schema, runtime=runtime)
