"""``fedswarm node``: run a member's node next to its data, and ask a node for its status.

A kit whose keys are encrypted needs its password: ``--password-file PATH``, the environment variable
``FEDSWARM_KIT_PASSWORD``, or a prompt when standard input is a terminal (never an option in clear).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from fedswarm.cli.common import err_console, fail, guarded
from fedswarm.cli.passwords import KIT_PASSWORD_ENV, kit_password
from fedswarm.spec.schema import load_spec

__all__ = ["app", "configure_logging", "start", "status"]

app = typer.Typer(name="node", help="Run a federation member's node, or query one.", no_args_is_help=True)

_SPEC_IN_KIT = "spec.toml"


def configure_logging(member: str, *, verbose: bool) -> None:
    """Log lines with time, level and member name on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {member}: %(message)s"))
    root = logging.getLogger("fedswarm")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


_PasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help=f"file holding the kit password, if its keys are encrypted (or set {KIT_PASSWORD_ENV}; "
        "asked on a terminal)",
    ),
]


@app.command("start")
def start(
    kit: Annotated[Path, typer.Option("--kit", help="the member's startup kit folder", show_default=False)],
    data: Annotated[Path | None, typer.Option("--data", help="the member's own table (CSV/Parquet)")] = None,
    spec: Annotated[Path | None, typer.Option("--spec", help="federation spec (default KIT/spec.toml)")] = None,
    state: Annotated[Path | None, typer.Option("--state", help="data folder (default KIT/state)")] = None,
    listen: Annotated[
        str | None, typer.Option("--listen", help="host:port to bind (default: manifest address)")
    ] = None,
    exit_when_finished: Annotated[
        bool, typer.Option("--exit-when-finished", help="stop once the job's last round is committed")
    ] = False,
    password_file: _PasswordFile = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start this member's node: gRPC with mutual TLS, train when asked, lead when it is its turn."""
    from fedswarm.node.daemon import NodeDaemon

    spec_path = spec if spec is not None else kit / _SPEC_IN_KIT
    if not spec_path.is_file():
        fail(f"{spec_path}: no spec (pass --spec SPEC.toml)", 2)
    password = guarded(lambda: kit_password(kit, password_file))
    configure_logging(kit.resolve().name, verbose=verbose)

    def build() -> NodeDaemon:
        loaded, _ = load_spec(spec_path)
        return NodeDaemon(
            kit,
            spec=loaded,
            data_path=data,
            state_dir=state,
            listen=listen,
            exit_when_finished=exit_when_finished,
            password=password,
        )

    daemon = guarded(build)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("fedswarm.node").info("signal %d: stopping", signum)
        daemon.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    guarded(daemon.start)
    guarded(daemon.run)


@app.command("status")
def status(
    kit: Annotated[Path, typer.Option("--kit", help="the member's startup kit folder", show_default=False)],
    address: Annotated[str | None, typer.Option("--address", help="host:port (default: manifest address)")] = None,
    json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds")] = 5.0,
    password_file: _PasswordFile = None,
) -> None:
    """Ask a running node for its round, health, peers and refusals (with the kit's own identity)."""
    from fedswarm.node.status import query_status
    from fedswarm.transport.client import PeerError

    password = guarded(lambda: kit_password(kit, password_file))
    try:
        report = guarded(lambda: query_status(kit, address=address, timeout=timeout, password=password))
    except PeerError as exc:  # pragma: no cover - guarded turns FedswarmError into an exit
        fail(str(exc))
    if json_:
        typer.echo(json.dumps(report, separators=(",", ":")))
        return
    err_console.print(
        f"[bold]{report['member']}[/] {report['health']}  phase {report['phase']}  "
        f"round {report['round']}/{report['rounds']}  {report['topology']}  model {report['model_digest'][:16]}"
    )
    for peer in report["peers"]:
        state = "reachable" if peer["reachable"] else f"unreachable ({peer['last_error']})"
        err_console.print(f"  {peer['member']:<20} {peer['address']:<22} {state}")
    if report["refused"]:
        err_console.print("  refused: " + ", ".join(f"{k} {v}" for k, v in sorted(report["refused"].items())))


if __name__ == "__main__":
    app()
