"""``fedswarm up``: run a spec as a real federation of local processes and report like ``simulate``.

The federation runs through :func:`fedswarm.node.up.run_local_federation` (every member its own
process, gRPC with mutual TLS on 127.0.0.1). The report is then assembled with the simulation engine's
own code from the rounds the nodes committed: the same round records, baselines and summary, so the
JSON line has the same keys and, for the same spec and seed, the same sampled members and accuracy.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from fedswarm.cli.common import err_console, guarded
from fedswarm.cli.simulate import print_summary
from fedswarm.codec.tensors import decode
from fedswarm.codec.tensors import save as save_parameters
from fedswarm.core.errors import VerificationError
from fedswarm.core.parameters import Parameters
from fedswarm.node.persist import blob_copies
from fedswarm.node.records import extension_summary, outcome_from_record
from fedswarm.node.up import LocalFederation, run_local_federation
from fedswarm.sim.baselines import BaselineResult, centralized_baseline, local_only_baseline
from fedswarm.sim.engine import build_summary, pick_baseline_members, round_record, write_run_outputs
from fedswarm.sim.world import World, build_world
from fedswarm.spec.build import build_strategy
from fedswarm.spec.schema import Spec, load_spec

__all__ = ["final_model", "report", "run_up", "up"]


def final_model(fed: LocalFederation, digest: str) -> Parameters:
    """The model ``digest`` as the first node of ``fed`` (by name) that holds a copy hashing to it keeps it.

    A node that stopped keeps it as a file in its ``blobs/`` folder; one killed before it stopped keeps its last
    small model only in its ``progress.json`` (read with :func:`fedswarm.node.persist.blob_copies`). A copy
    whose bytes do not hash to ``digest`` is skipped.

    Raises
    ------
    VerificationError
        No node holds a copy that hashes to ``digest``; the message names the digest, the data folders looked
        in and every copy or progress file that was rejected.
    """
    folders = [fed.state_dir(name) for name in sorted(fed.kits)]
    rejected: list[str] = []
    for folder in folders:
        try:
            copies = blob_copies(folder, digest)
        except (OSError, ValueError) as exc:
            rejected.append(f"{folder}: unreadable ({exc})")
            continue
        for source, data in copies:
            actual = hashlib.sha256(data).hexdigest()
            if actual == digest:
                return decode(data, source=str(source))
            rejected.append(f"{source}: its copy hashes to {actual[:16]}")
    looked = ", ".join(str(f) for f in folders)
    why = f"; rejected: {'; '.join(rejected)}" if rejected else ""
    raise VerificationError(
        f"no node holds the final model {digest}: looked in blobs/ and progress.json of {looked}{why}"
    )


def report(spec: Spec, fed: LocalFederation, *, seconds: float, world: World | None = None) -> dict[str, Any]:
    """Build ``simulate``'s outputs and summary from the rounds a local federation committed.

    Raises
    ------
    VerificationError
        No node holds the final model (:func:`final_model`).
    """
    t0 = time.perf_counter()
    run_dir = fed.out_dir
    (run_dir / "models").mkdir(parents=True, exist_ok=True)
    records = fed.history()
    world = world if world is not None else build_world(spec)
    final = final_model(fed, records[-1]["model_digest"])
    history = []
    with open(run_dir / "metrics.jsonl", "w", encoding="utf-8") as fh:
        for rec in records:
            outcome = outcome_from_record(rec, final)
            row = round_record(outcome, model_digest=rec["model_digest"])
            history.append(row)
            fh.write(json.dumps(row) + "\n")
    last = outcome_from_record(records[-1], final)
    final_digest = save_parameters(final, run_dir / "models" / "final.safetensors")
    start_params = world.task.init_parameters(seed=spec.federation.seed)
    members = pick_baseline_members(world)
    training = build_strategy(spec).training
    baselines: dict[str, BaselineResult] = {}
    rounds = spec.federation.rounds
    kwargs: dict[str, Any] = {"training": training, "rounds": rounds, "seed": spec.federation.seed, "members": members}
    if spec.baselines.centralized:
        baselines["centralized"] = centralized_baseline(world.task, start_params, world.data, **kwargs)
    if spec.baselines.local_only:
        baselines["local_only"] = local_only_baseline(world.task, start_params, world.data, **kwargs)
    summary = build_summary(spec, world, last, history, baselines, members, run_dir, final_digest)
    summary["bytes_up"] = sum(int(r["bytes_up"]) for r in records)
    summary["bytes_down"] = sum(int(r["bytes_down"]) for r in records)
    summary["dropouts"] = sum(len(r["dropouts"]) for r in records)
    summary["rejected"] = sum(len(r["rejected"]) for r in records)
    summary["federated_seconds"] = round(seconds, 4)
    summary.update(extension_summary(records))  # privacy, flagged, detection, stopped_early, as simulate
    summary["wall_seconds"] = round(seconds + time.perf_counter() - t0, 4)
    summary["topology"] = spec.federation.topology
    summary["logs"] = str(fed.logs)
    write_run_outputs(run_dir, summary, history, baselines)
    return summary


def run_up(spec: Path, *, overrides: list[str], out: Path | None, timeout: float, quiet: bool) -> dict[str, Any]:
    """Run ``spec`` as a local federation of real node processes and return the summary."""
    loaded, _ = load_spec(spec, overrides=overrides)
    world = build_world(loaded)  # refuses what every node would refuse (unsafe combinations ...) before any starts
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    target = out if out is not None else Path("runs") / f"{loaded.federation.name}-up-{stamp}"
    rounds = loaded.federation.rounds
    shown: dict[str, int] = {}

    def progress(done: Any) -> None:
        low = min(done.values()) if done else 0
        if not quiet and shown.get("low") != low:
            shown["low"] = low
            err_console.print(f"[dim]{loaded.federation.name}: round {low}/{rounds} committed everywhere[/]")

    if not quiet:
        err_console.print(
            f"[dim]starting {loaded.federation.members} nodes ({loaded.federation.topology}) in {target}[/]"
        )
    t0 = time.perf_counter()
    fed = run_local_federation(loaded, out_dir=target, timeout=timeout, on_progress=progress)
    return report(loaded, fed, seconds=time.perf_counter() - t0, world=world)


def up(
    spec: Annotated[Path, typer.Argument(help="federation spec (TOML)", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="fresh folder (default runs/NAME-up-TIME)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a spec key: --set federation.rounds=5")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="print one JSON summary line on stdout")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds the whole job may take")] = 600.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Provision a fresh federation, run every member as its own process over mutual TLS, report, stop."""
    summary = guarded(lambda: run_up(spec, overrides=list(set_ or []), out=out, timeout=timeout, quiet=quiet))
    if json_:
        typer.echo(json.dumps({k: v for k, v in summary.items() if k != "per_member"}, separators=(",", ":")))
    else:
        print_summary(summary)
        err_console.print(f"node logs: {summary['logs']}")
