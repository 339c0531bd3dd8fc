"""The ``fedswarm`` command."""

from __future__ import annotations

import typer

from fedswarm.cli.demo import demo
from fedswarm.cli.init import init
from fedswarm.cli.simulate import simulate

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


def main() -> None:
    app()
