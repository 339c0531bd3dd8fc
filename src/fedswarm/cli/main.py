"""The ``fedswarm`` command."""

from __future__ import annotations

import typer

from fedswarm.cli import node as node_cli
from fedswarm.cli import provision as provision_cli
from fedswarm.cli.demo import demo
from fedswarm.cli.init import init
from fedswarm.cli.ledger import ledger_app
from fedswarm.cli.revert import revert
from fedswarm.cli.simulate import simulate
from fedswarm.cli.up import up

__all__ = ["app", "main"]

app = typer.Typer(
    name="fedswarm",
    help="Decentralized AI: federated training with a verifiable ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("simulate")(simulate)
app.command("demo")(demo)
app.command("init")(init)
app.command("up")(up)
app.add_typer(node_cli.app, name="node")
app.add_typer(provision_cli.app, name="provision")
ledger_app.command("revert")(revert)
app.add_typer(ledger_app, name="ledger")


def main() -> None:
    app()
