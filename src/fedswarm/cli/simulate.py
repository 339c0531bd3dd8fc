"""``fedswarm simulate``: run a federation described by a spec on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fedswarm.cli.common import guarded, progress_bars
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.sim.engine import RunResult, run_simulation
from fedswarm.spec.schema import load_spec

__all__ = ["run_with_progress", "simulate"]


def run_with_progress(
    spec_path: Path,
    *,
    overrides: list[str],
    out: Path | None,
    backend: str | None,
    quiet: bool,
) -> RunResult:
    spec, _raw = load_spec(spec_path, overrides=overrides)
    progress = progress_bars("{task.fields[info]}", quiet=quiet)
    with progress:
        bar = progress.add_task(f"{spec.federation.name}: rounds", total=spec.federation.rounds, info="")

        def on_round(o: RoundOutcome, total: int) -> None:
            acc = o.central.metrics.get("accuracy") if o.central is not None else None
            info = f"acc {acc:.3f}" if acc is not None else ""
            if o.dropouts or o.rejected:
                info += f"  dropouts {len(o.dropouts)} rejected {len(o.rejected)}"
            progress.update(bar, advance=1, info=info)

        def on_phase(msg: str) -> None:
            if not quiet:
                progress.console.print(f"[dim]{msg}[/]")

        return run_simulation(spec, out_dir=out, backend=backend, on_round=on_round, on_phase=on_phase)


def simulate(
    spec: Annotated[Path, typer.Argument(help="federation spec (TOML)", show_default=False)],
    rounds: Annotated[int | None, typer.Option("--rounds", help="override federation.rounds", min=1)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="run directory (default runs/NAME-TIME)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a spec key: --set strategy.fraction=0.5")
    ] = None,
    backend: Annotated[
        str | None, typer.Option("--backend", help="inprocess | processes | ray (overrides simulation.backend)")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="print one JSON summary line on stdout")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Simulate a federation: partition data, train, aggregate, evaluate against baselines."""
    overrides = list(set_ or [])
    if rounds is not None:
        overrides.append(f"federation.rounds={rounds}")
    if backend is not None:
        overrides.append(f'simulation.backend="{backend}"')
    result = guarded(lambda: run_with_progress(spec, overrides=overrides, out=out, backend=None, quiet=quiet))
    if json_:
        line: dict[str, Any] = {k: v for k, v in result.summary.items() if k != "per_member"}
        typer.echo(json.dumps(line, separators=(",", ":")))
    else:
        print_summary(result.summary)


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{summary['federation']} — {summary['rounds']} rounds, {summary['members']} members")
    table.add_column("model")
    table.add_column("accuracy (held-out)", justify="right")
    table.add_column("members' mean", justify="right")
    table.add_column("worst 10%", justify="right")

    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else "—"

    f = summary["final"]
    table.add_row(
        "federated", fmt(f.get("accuracy")), fmt(f.get("members_accuracy_mean")), fmt(f.get("members_accuracy_worst10"))
    )
    for name, b in summary["baselines"].items():
        table.add_row(
            name.replace("_", "-"),
            fmt(b.get("accuracy")),
            fmt(b.get("members_accuracy_mean")),
            fmt(b.get("members_accuracy_worst10")),
        )
    console.print(table)
    console.print(
        f"bytes up {summary['bytes_up']:,}  down {summary['bytes_down']:,}  "
        f"wall {summary['wall_seconds']:.2f} s  dropouts {summary['dropouts']}  rejected {summary['rejected']}"
    )
    console.print(f"outputs: {summary['run_dir']}")
