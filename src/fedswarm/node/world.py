"""What a node needs from the spec: its task, its own data, the member runtime, and the job's digest.

Without ``--data`` a node builds the spec's dataset and partition exactly as ``fedswarm simulate`` does
and keeps only its own member's share (and the held-out set, which the coordinating node evaluates on,
as the simulation does). With ``--data PATH`` it reads its own table (the spec's ``data.label`` and
``data.features`` columns) and splits it into local train and test sets.

The node builds the spec's run extensions (:func:`fedswarm.spec.extensions.build_extensions`) exactly as a
simulation does: their client stages and member handlers go into the member runtime, and the node's
:class:`~fedswarm.node.lead.Leadership` uses the same objects when it coordinates. CKKS keys come from the
startup kit (:func:`kit_ckks_keys`), never from the simulation's key cache. The runtime trains a member
at most once per round, global model and seed: an extension's fit handler asked again for the same round
(a retried or re-led round) gets the same result, as a plain fit does (:mod:`fedswarm.node.worker`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedswarm.codec import canonical
from fedswarm.core.data import Arrays, LocalData
from fedswarm.core.errors import ConfigurationError, DataError, SpecError
from fedswarm.core.parameters import Parameters, Schema
from fedswarm.core.task import DataInfo, Task
from fedswarm.data.loaders import load_table
from fedswarm.privacy.he.ckks import CKKSKeyMaterial
from fedswarm.rounds.extension import RunExtension
from fedswarm.rounds.member import MemberHandler, MemberRuntime
from fedswarm.rounds.messages import Dropout, FitReply, FitRequest
from fedswarm.rounds.state import SqliteStateStore
from fedswarm.spec.build import build_client_stages, build_data, build_task, load_data
from fedswarm.spec.extensions import build_extensions
from fedswarm.spec.schema import Spec

__all__ = ["NodeRuntime", "NodeWorld", "build_node_world", "job_digest", "kit_ckks_keys"]


@dataclass
class NodeWorld:
    task: Task
    schema: Schema
    initial: Parameters
    local: LocalData
    holdout: Arrays | None
    runtime: MemberRuntime
    info: DataInfo
    extensions: list[RunExtension]


class NodeRuntime(MemberRuntime):
    """The member runtime of a node: trains at most once per (member, round, seed, global model)."""

    _last: tuple[tuple[int, int, int, str], FitReply | Dropout] | None = None

    def fit(self, member: int, request: FitRequest, global_vector: npt.NDArray[np.float64]) -> FitReply | Dropout:
        key = (
            member,
            request.config.round,
            request.config.seed,
            hashlib.sha256(np.ascontiguousarray(global_vector, dtype=np.float64).tobytes()).hexdigest(),
        )
        last = self._last
        if last is not None and last[0] == key:
            return last[1]
        reply = super().fit(member, request, global_vector)
        self._last = (key, reply)
        return reply


def kit_ckks_keys(spec: Spec, kit_dir: Path, *, password: bytes | None = None) -> CKKSKeyMaterial | None:
    """The CKKS keys of the node whose startup kit is ``kit_dir`` (``None`` when the spec does not use CKKS),
    from :func:`fedswarm.node.kit.ckks_material` (which verifies them against the kit's signed manifest).

    Raises
    ------
    ConfigurationError
        The spec uses CKKS but the kit holds no CKKS keys (nodes never fall back to simulation keys).
    """
    if spec.privacy.secure_aggregation != "ckks":
        return None
    from fedswarm.node.kit import ckks_material

    found = ckks_material(Path(kit_dir), password=password)
    if found is None:
        raise ConfigurationError(
            f"privacy.secure_aggregation = 'ckks': the startup kit {kit_dir} holds no CKKS keys; real nodes take "
            "them from provisioning (provision the federation again with this spec)"
        )
    public, secret = found
    return CKKSKeyMaterial(public=bytes(public), secret=None if secret is None else bytes(secret))


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


def build_node_world(
    spec: Spec,
    *,
    member: int,
    name: str,
    data_path: Path | None,
    state_dir: Path,
    population: int | None = None,
    ckks_keys: CKKSKeyMaterial | None = None,
) -> NodeWorld:
    """Build member ``member``'s task, data, run extensions and runtime.

    ``population``: the members of the federation (default ``federation.members``), which extensions
    account over; ``ckks_keys``: the node's CKKS keys (:func:`kit_ckks_keys`).

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

    extensions = build_extensions(
        spec, info, population if population is not None else spec.federation.members, ckks_keys=ckks_keys
    )
    stages = list(build_client_stages(spec))
    handlers: dict[str, MemberHandler] = {}
    for ext in extensions:
        stages.extend(ext.client_stages())
        handlers.update(ext.member_handlers())
    runtime = NodeRuntime(
        task,
        data_for,
        schema=initial.schema,
        stages=stages,
        state_store=SqliteStateStore(Path(state_dir) / "member-state.sqlite"),
        member_name=lambda m: name if m == member else f"member-{m:05d}",
        handlers=handlers,
    )
    return NodeWorld(
        task=task,
        schema=initial.schema,
        initial=initial,
        local=local,
        holdout=holdout,
        runtime=runtime,
        info=info,
        extensions=extensions,
    )
