"""A whole federation on this machine: provision, start every member as its own process, run, stop.

``fedswarm up`` uses this to run a spec across real processes that talk gRPC with mutual TLS on
127.0.0.1, each on a free port::

    OUT/federation/ca/, OUT/federation/<member>/   the CA and the startup kits (with spec.toml)
    OUT/federation/<member>/state/                 each node's data folder
    OUT/logs/<member>.log                          each node's log

Processes are stopped by their pids: ``SIGTERM``, then ``SIGKILL`` after a grace period. The job is
done when every node committed the last round, or adopted a commit that stopped the run early (a privacy
budget ran out: :meth:`LocalFederation.stopped_early`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from fedswarm.core.errors import ConfigurationError, RoundAborted
from fedswarm.node.persist import read_history
from fedswarm.node.provisioning import provision_from_spec
from fedswarm.node.records import stop_reason
from fedswarm.spec.schema import Spec
from fedswarm.transport._generated.fedswarm.v1 import federation_pb2 as pb
from fedswarm.transport.envelope import MessageRefused, open_body

__all__ = ["LocalFederation", "free_ports", "node_command", "run_local_federation", "stop_processes"]


def free_ports(count: int, *, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free on ``host`` a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def node_command(kit: Path, *, python: str = sys.executable, extra: Sequence[str] = ()) -> list[str]:
    """The command line that runs the node of ``kit``."""
    return [python, "-m", "fedswarm.cli.node", "start", "--kit", str(kit), *extra]


@dataclass
class LocalFederation:
    """The processes of a local federation and where their files are."""

    out_dir: Path
    kits: dict[str, Path]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def state_dir(self, name: str) -> Path:
        return self.kits[name] / "state"

    def start(
        self, name: str, *, extra: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start (or restart) member ``name``'s node; its log is appended to ``logs/<name>.log``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        proc = subprocess.Popen(
            node_command(self.kits[name].resolve(), extra=extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.out_dir,
        )
        log.close()
        self.processes[name] = proc
        return proc

    def progress(self, name: str) -> dict[str, Any] | None:
        path = self.state_dir(name) / "progress.json"
        try:
            value: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value

    def rounds_done(self) -> dict[str, int]:
        return {n: int((self.progress(n) or {}).get("round", 0)) for n in self.kits}

    def stopped_early(self, name: str) -> str | None:
        """Why member ``name``'s last adopted commit stopped the run before its last round, or ``None``."""
        commit = (self.progress(name) or {}).get("commit")
        if not commit:
            return None
        try:
            return stop_reason(open_body(pb.Envelope.FromString(bytes.fromhex(str(commit))), pb.Commit))
        except (ValueError, DecodeError, MessageRefused):  # a torn progress file: not finished yet
            return None

    def finished(self, rounds: int) -> bool:
        """Every node committed ``rounds`` rounds or adopted the commit that stopped the run early."""
        return all(r >= rounds or self.stopped_early(n) is not None for n, r in self.rounds_done().items())

    def history(self) -> list[dict[str, Any]]:
        """The round records of the member with the most complete history."""
        best: list[dict[str, Any]] = []
        for name in self.kits:
            records = read_history(self.state_dir(name))
            if len(records) > len(best):
                best = records
        return best

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.logs / f"{name}.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def stop(self, *, grace: float = 10.0) -> None:
        stop_processes(list(self.processes.values()), grace=grace)


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], *, grace: float = 10.0) -> None:
    """``SIGTERM`` each running process by pid, wait up to ``grace`` seconds, then ``SIGKILL`` the rest."""
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace
    for proc in processes:
        try:
            proc.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5.0)


def run_local_federation(
    spec: Spec,
    *,
    out_dir: Path,
    timeout: float = 600.0,
    on_progress: Callable[[Mapping[str, int]], None] | None = None,
    on_poll: Callable[[LocalFederation, Mapping[str, int]], None] | None = None,
) -> LocalFederation:
    """Provision ``spec`` into ``out_dir``, run every member as a process until the job is done, stop them.

    ``on_progress`` hears of every change of the rounds each node committed; ``on_poll`` is called at
    every look at them (ten times a second) with the running federation (a benchmark reads its processes).

    Raises
    ------
    ConfigurationError
        ``out_dir`` is not empty.
    RoundAborted
        A node exited early, or the job did not finish within ``timeout`` seconds (the message carries
        the tail of the logs).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigurationError(f"--out {out_dir}: not empty; `fedswarm up` provisions into a fresh folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    ports = free_ports(spec.federation.members, host=spec.network.host)
    provisioned = provision_from_spec(spec, out_dir / "federation", ports=ports)
    fed = LocalFederation(out_dir=out_dir, kits=dict(provisioned.kits), logs=out_dir / "logs")
    rounds = spec.federation.rounds
    try:
        for name in fed.kits:
            fed.start(name)
        end = time.monotonic() + timeout
        last: dict[str, int] = {}
        while True:
            done = fed.rounds_done()
            if done != last and on_progress is not None:
                on_progress(done)
            last = done
            if on_poll is not None:
                on_poll(fed, done)
            if fed.finished(rounds):
                break
            dead = [n for n, p in fed.processes.items() if p.poll() is not None]
            if dead:
                name = dead[0]
                raise RoundAborted(
                    f"the node of {name} exited with code {fed.processes[name].returncode}; "
                    f"last lines of {fed.logs / (name + '.log')}:\n{fed.log_tail(name)}"
                )
            if time.monotonic() > end:
                lagging = sorted(n for n, r in done.items() if r < rounds)
                raise RoundAborted(
                    f"the job did not finish within {timeout:g} s (rounds committed: {done}); "
                    f"last lines of {lagging[0]}'s log:\n{fed.log_tail(lagging[0])}"
                )
            time.sleep(0.1)
    finally:
        fed.stop()
    return fed
