"""Everything one simulated federation needs, built from a spec: data, task, schema, member runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import fedswarm.sim.attacks  # noqa: F401  (registers the attack library: simulation only)
from fedswarm.core.parameters import Schema
from fedswarm.core.task import DataInfo, Task
from fedswarm.data.datasets import ArrayDataset
from fedswarm.data.federated import FederatedData
from fedswarm.rounds.extension import RunExtension
from fedswarm.rounds.member import MemberHandler, MemberRuntime
from fedswarm.rounds.state import InMemoryStateStore, SqliteStateStore, StateStore
from fedswarm.spec.build import build_client_stages, build_data, build_task, load_data
from fedswarm.spec.extensions import build_extensions
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
    extensions: list[RunExtension]


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
    extensions = build_extensions(spec, info, data.members)
    stages = list(build_client_stages(spec))
    handlers: dict[str, MemberHandler] = {}
    for ext in extensions:
        stages.extend(ext.client_stages())
        handlers.update(ext.member_handlers())
    runtime = MemberRuntime(
        task,
        data.local,
        schema=schema,
        stages=stages,
        state_store=_state_store(spec, state_dir, worker),
        member_name=member_name,
        handlers=handlers,
    )
    return World(
        spec=spec,
        dataset=dataset,
        data=data,
        info=info,
        task=task,
        schema=schema,
        runtime=runtime,
        extensions=extensions,
    )
