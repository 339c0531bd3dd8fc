"""The federation spec: a TOML file validated by pydantic.

Every section refuses unknown keys and wrong types; errors are reported as :class:`SpecError` with the
dotted path of the offending key (``strategy.fraction: Input should be less than or equal to 1``).
The full reference is ``docs/spec.md``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedswarm.core.errors import SpecError
from fedswarm.spec.network import NetworkSpec
from fedswarm.spec.privacy import PrivacySpec
from fedswarm.spec.quorum import DEFAULT_QUORUM, Quorum
from fedswarm.spec.robustness import AttackSpec, RobustnessSpec

__all__ = [
    "BaselinesSpec",
    "DataSpec",
    "EvaluationSpec",
    "FederationSpec",
    "LedgerSpec",
    "OutputSpec",
    "SimulationSpec",
    "Spec",
    "StagesSpec",
    "StrategySpec",
    "TaskSpec",
    "TrainingSpec",
    "apply_overrides",
    "load_spec",
    "parse_spec",
]

OptionValue = bool | int | float | str


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FederationSpec(_Section):
    name: str = Field("federation", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    members: int = Field(ge=1, le=10_000_000)
    rounds: int = Field(10, ge=1, le=1_000_000)
    seed: int = Field(0, ge=0)
    topology: Literal["star", "swarm"] = "star"


class DataSpec(_Section):
    dataset: str = Field(min_length=1)
    path: str | None = None
    label: str | None = None
    features: list[str] | None = None
    partition: Literal["iid", "dirichlet", "shards", "quantity", "natural"] = "iid"
    alpha: float = Field(0.5, gt=0)
    shards_per_member: int = Field(2, ge=1)
    min_samples: int = Field(2, ge=1)
    samples_per_member: int | None = Field(None, ge=1)
    holdout: float = Field(0.2, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    options: dict[str, OptionValue] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _table_needs_path(self) -> DataSpec:
        if self.dataset == "table" and (not self.path or not self.label):
            raise ValueError("dataset 'table' needs both 'path' and 'label'")
        return self


class TaskSpec(_Section):
    name: str = Field("numpy_softmax", min_length=1)
    path: str | None = Field(None, description="folder to import a 'module:attribute' task from (relative to the spec)")
    options: dict[str, OptionValue] = Field(default_factory=dict)


class TrainingSpec(_Section):
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(0.1, gt=0)


class RuleSpec(_Section):
    name: str = "mean"
    options: dict[str, OptionValue] = Field(default_factory=dict)


class _StrategyBase(_Section):
    fraction: float = Field(1.0, gt=0, le=1)
    min_members: int = Field(2, ge=1)
    rule: RuleSpec = Field(default_factory=RuleSpec)


class FedAvgSpec(_StrategyBase):
    name: Literal["fedavg"]
    server_lr: float = Field(1.0, gt=0)


class FedProxSpec(_StrategyBase):
    name: Literal["fedprox"]
    server_lr: float = Field(1.0, gt=0)
    mu: float = Field(0.01, ge=0)


class FedOptSpec(_StrategyBase):
    name: Literal["fedadam", "fedyogi", "fedadagrad"]
    server_lr: float = Field(0.01, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)


StrategySpec = Annotated[FedAvgSpec | FedProxSpec | FedOptSpec, Field(discriminator="name")]


class StagesSpec(_Section):
    clip: float = Field(0.0, ge=0, description="member-side L2 norm bound of each update; 0 disables")


class EvaluationSpec(_Section):
    members: Literal["all", "sampled", "none"] = "all"
    every: int = Field(1, ge=1)


class BaselinesSpec(_Section):
    local_only: bool = True
    centralized: bool = True
    local_only_max_members: int = Field(200, ge=1)


class SimulationSpec(_Section):
    backend: Literal["inprocess", "processes", "ray"] = "inprocess"
    workers: int = Field(0, ge=0)
    client_timeout: float = Field(0.0, ge=0)
    state: Literal["auto", "memory", "disk"] = "auto"
    ray_address: str | None = Field(None, description="connect to this Ray cluster instead of starting one locally")


class LedgerSpec(_Section):
    enabled: bool = True
    retain_updates: bool = Field(True, description="store every accepted update, content-addressed, for revert")
    checkpoint_every: int = Field(1, ge=1, description="rounds between signed checkpoints")
    quorum: Quorum = Field(
        DEFAULT_QUORUM, description='a checkpoint is final when strictly more than this fraction ("N/D") cosigned it'
    )


class OutputSpec(_Section):
    dir: str | None = None
    save_models: Literal["all", "final"] = "all"
    plots: bool = True


class Spec(_Section):
    federation: FederationSpec
    data: DataSpec
    task: TaskSpec = Field(default_factory=TaskSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    strategy: StrategySpec = Field(default_factory=lambda: FedAvgSpec(name="fedavg"))
    stages: StagesSpec = Field(default_factory=StagesSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    baselines: BaselinesSpec = Field(default_factory=BaselinesSpec)
    simulation: SimulationSpec = Field(default_factory=SimulationSpec)
    ledger: LedgerSpec = Field(default_factory=LedgerSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    attack: AttackSpec | None = None
    robustness: RobustnessSpec = Field(default_factory=RobustnessSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        if self.strategy.min_members > self.federation.members:
            raise ValueError(
                f"strategy.min_members ({self.strategy.min_members}) exceeds federation.members "
                f"({self.federation.members})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _format_error(exc: ValidationError, source: str) -> SpecError:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if not (isinstance(p, str) and p in _UNION_TAGS)]
    path = ".".join(loc) or source
    msg = err.get("msg", "invalid value")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (not part of the spec; see docs/spec.md)"
    elif err.get("type") == "missing":
        msg = "required key is missing"
    elif err.get("type") == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        msg = f"unknown strategy {ctx.get('tag')!r}; choose one of {ctx.get('expected_tags')}"
    more = len(exc.errors()) - 1
    if more:
        msg += f" (and {more} more problem(s))"
    return SpecError(path, msg)


_UNION_TAGS = {"fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"}


def parse_spec(raw: Mapping[str, Any], *, source: str = "<spec>") -> Spec:
    """Validate a parsed TOML mapping."""
    try:
        return Spec.model_validate(dict(raw))
    except ValidationError as exc:
        raise _format_error(exc, source) from None


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as TOML, else taken as strings)."""
    out: dict[str, Any] = _deep_copy(raw)
    for item in overrides:
        if "=" not in item:
            raise SpecError(item, "override must look like key.path=value")
        key, _, value = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise SpecError(item, "override has an empty key")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise SpecError(".".join(parts), f"{p} is not a table")
            node = nxt
        node[parts[-1]] = _parse_value(value.strip())
    return out


def _deep_copy(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in raw.items()}


def load_spec(path: str | Path, *, overrides: Sequence[str] = ()) -> tuple[Spec, dict[str, Any]]:
    """Read, override and validate a spec file. Returns the spec and the raw (overridden) mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), "spec file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), f"cannot read spec file: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(str(path), f"malformed TOML: {exc}") from None
    raw = apply_overrides(raw, overrides)
    # Relative paths inside a spec are relative to the spec file, not to the current directory.
    base = path.resolve().parent
    task = raw.get("task")
    if isinstance(task, dict):
        if isinstance(task.get("name"), str) and ":" in task["name"] and "path" not in task:
            task["path"] = "."
        if isinstance(task.get("path"), str):
            task["path"] = str((base / task["path"]).resolve())
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str):
        data["path"] = str((base / data["path"]).resolve())
    return parse_spec(raw, source=str(path)), raw
