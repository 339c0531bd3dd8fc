"""Helpers for the network integration tests: specs, local federations, waiting on rounds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fedswarm.node.persist import read_history
from fedswarm.node.provisioning import provision_from_spec
from fedswarm.node.up import LocalFederation, free_ports
from fedswarm.spec.schema import Spec, load_spec

HERE = Path(__file__).resolve().parent

SPEC = """
[federation]
name = "{name}"
members = {members}
rounds = {rounds}
seed = 7
topology = "{topology}"

[data]
dataset = "breast_cancer"
partition = "iid"

[task]
name = "network_slow_task:make"
path = "{here}"
options = {{ slow_seconds = {slow} }}

[strategy]
name = "fedavg"
min_members = 2

[baselines]
local_only = false
centralized = false

[ledger]
enabled = false

[network]
round_timeout = {round_timeout}
evaluate_timeout = 6
rpc_timeout = 2
takeover_grace = 1
probe_interval = 0.3
gather_timeout = 20
max_model_bytes = {max_model_bytes}
"""


def write_spec(
    tmp: Path,
    *,
    name: str = "net",
    members: int = 3,
    rounds: int = 3,
    topology: str = "star",
    slow: float = 0.0,
    round_timeout: float = 8.0,
    max_model_bytes: int = 1 << 20,
) -> tuple[Path, Spec]:
    text = SPEC.format(name=name, members=members, rounds=rounds, topology=topology, here=HERE, slow=slow,
                       round_timeout=round_timeout, max_model_bytes=max_model_bytes)  # fmt: skip
    path = tmp / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    spec, _ = load_spec(path)
    return path, spec


def federation(tmp: Path, spec: Spec) -> LocalFederation:
    out = tmp / "up"
    out.mkdir()
    ports = free_ports(spec.federation.members)
    provisioned = provision_from_spec(spec, out / "federation", ports=ports)
    return LocalFederation(out_dir=out, kits=dict(provisioned.kits), logs=out / "logs")


def wait_for(predicate: Any, *, timeout: float, what: str, fed: LocalFederation | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    logs = "" if fed is None else "\n".join(f"--- {n}\n{fed.log_tail(n, 30)}" for n in fed.kits)
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def all_done(fed: LocalFederation, rounds: int) -> bool:
    return all(
        r >= rounds
        for n, r in fed.rounds_done().items()
        if fed.processes.get(n) is None or fed.processes[n].poll() is None
    )


def history(fed: LocalFederation, name: str) -> list[dict[str, Any]]:
    return read_history(fed.state_dir(name))


def log_text(fed: LocalFederation, name: str) -> str:
    return (fed.logs / f"{name}.log").read_text(errors="replace")


EXTENSION_KEYS = ("privacy", "flagged", "detection", "stopped_early")
"""Summary keys the run extensions add, in ``simulate`` and ``up`` alike."""


def extension_spec(tmp: Path, extra: str, *, task_options: str | None = None, **kwargs: Any) -> Spec:
    """:func:`write_spec` plus ``extra`` TOML sections; ``task_options`` switches to the poisoning test task."""
    path, _ = write_spec(tmp, **kwargs)
    text = path.read_text(encoding="utf-8")
    if task_options is not None:
        text = text.replace('"network_slow_task:make"', '"network_extensions_task:make"')
        text = text.replace("options = { slow_seconds = 0.0 }", f"options = {{ {task_options} }}")
    path.write_text(text + extra, encoding="utf-8")
    spec, _ = load_spec(path)
    return spec


def extension_keys(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in EXTENSION_KEYS if k in summary}


def task_spec(tmp: Path, extra: str, *, task: str, options: str, **kwargs: Any) -> Spec:
    """:func:`write_spec` with another task (``task.name = task``, ``task.options = { options }``) plus ``extra``
    TOML sections; ``kwargs`` as for :func:`write_spec`."""
    path, _ = write_spec(tmp, **kwargs)
    text = path.read_text(encoding="utf-8")
    old_options = f"options = {{ slow_seconds = {kwargs.get('slow', 0.0)} }}"
    assert old_options in text, old_options
    text = text.replace('"network_slow_task:make"', f'"{task}"').replace(old_options, f"options = {{ {options} }}")
    path.write_text(text + extra, encoding="utf-8")
    spec, _ = load_spec(path)
    return spec


def start_all_and_kill_round_one_leader(fed: LocalFederation, *, timeout: float = 90.0) -> str:
    """Start every node of ``fed``, wait until each committed round 1, then ``SIGKILL`` the member that led
    round 1 (in a swarm with a ledger: the founding member, author of entry 0) and wait for it to exit.

    Returns the killed member's name.
    """
    for name in fed.kits:
        fed.start(name)
    wait_for(lambda: min(fed.rounds_done().values()) >= 1, timeout=timeout, what="round 1 everywhere", fed=fed)
    leader = next(p["leader"] for p in map(fed.progress, sorted(fed.kits)) if p is not None and p["round"] >= 1)
    fed.processes[leader].kill()
    fed.processes[leader].wait()
    return str(leader)


SECAGG_PLUS = """
[privacy]
secure_aggregation = "secagg+"

[privacy.secagg]
rounding = "deterministic"
clip = 2.0
"""
"""TOML sections for SecAgg+ with deterministic rounding and no DP (every sum exact and reproducible)."""
