"""``fedswarm ledger revert PATH --exclude MEMBER [--from-round R] [--updates-from FOLDER ...] --out DIR``.

Recomputes a run's model history without one member's updates from the updates its ledger retained
(:mod:`fedswarm.ledger.revert`), after checking that replaying the unchanged inputs reproduces every
recorded model. PATH is the run directory, a node's data folder ``KIT/state`` or its kit (the spec is
``spec.toml`` beside the ledger's folder or, for a node, in its kit; it says how rounds were aggregated,
and its digest must match the ledger's ``federation_created``: the run's spec digest, or a node's job
digest). PATH's ledger is the history that is reverted. A node's folder holds every round's inputs only if
that node led every round (the star aggregator's); in a swarm the inputs are spread over the rounds'
leaders, so each ``--updates-from FOLDER`` (in the same forms as PATH) adds another node's object store,
searched by digest: its ledger must be the same history as PATH's, and every update taken from it must
hash to the digest PATH's ledger records. When an update is in none of the folders, the command names the
round, the member and the leader whose folder holds it. Progress goes to stderr (``--quiet``: none).

DIR receives ``models/round-NNNN.safetensors`` and ``models/final.safetensors``, a ledger of its own
(``DIR/ledger``: the recomputed rounds with their inputs and the excluded member listed as dropped, with
simulation keys, so ``fedswarm ledger verify`` and ``lineage`` work on it), and ``revert.json``: the
source ledger (folder, size, root), the excluded member, and per round the held-out metrics of the
original and the recomputed model. The command prints the change of the final metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer

from fedswarm.cli.common import err_console, guarded, progress_bars
from fedswarm.codec.canonical import digest as canonical_digest
from fedswarm.codec.tensors import digest as tensor_digest
from fedswarm.codec.tensors import save as save_parameters
from fedswarm.core.data import Arrays
from fedswarm.core.errors import ConfigurationError
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import DataInfo, EvalResult, Task
from fedswarm.ledger.audit import AuditLog, load_audit
from fedswarm.ledger.recorder import LedgerRecorder
from fedswarm.ledger.revert import (
    RevertError,
    RoundInputs,
    check_replay,
    load_round_inputs,
    replay,
)
from fedswarm.ledger.store import DB_NAME, LedgerStore, find_ledger
from fedswarm.ledger.update_folders import UpdateFolder, open_update_folders
from fedswarm.ledger.verify import verify_ledger
from fedswarm.node.world import job_digest
from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.rounds.observer import RunStart
from fedswarm.rounds.robust.rules import FLTrustRule
from fedswarm.rounds.robust.server_update import RootTrainer, publish_server_update
from fedswarm.spec.build import build_data, build_strategy, build_task, load_data
from fedswarm.spec.robust_extension import root_data
from fedswarm.spec.schema import Spec, load_spec
from fedswarm.strategy.base import LocalTraining, Strategy

__all__ = ["RevertProgress", "Stage", "revert", "revert_run"]

Vector = np.ndarray[Any, np.dtype[np.float64]]
Stage = Literal["read", "replay", "revert", "evaluate"]
"""The steps of a revert, each over every committed round: read the retained updates, replay the recorded
history (checked against the ledger), recompute it without the member, evaluate both histories."""
RevertProgress = Callable[[Stage, int, int], None]
"""``(stage, rounds done, rounds in all)``, called after each round of each stage."""
STAGES: dict[Stage, str] = {
    "read": "reading updates",
    "replay": "replaying the record",
    "revert": "recomputing",
    "evaluate": "evaluating",
}


def _data_folder(path: Path) -> Path:
    """A node's startup kit stands for its default data folder ``KIT/state`` when that holds the ledger."""
    state = Path(path) / "state"
    return state if (state / "ledger" / DB_NAME).is_file() else Path(path)


def _spec_for(ledger: Path, log: AuditLog) -> tuple[Spec, Path]:
    """The run's spec and its file: beside the ledger's folder (a run directory) or in a node's kit."""
    candidates = (ledger.parent / "spec.toml", ledger.parent.parent / "spec.toml")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise RevertError(
            f"{candidates[0]} not found: revert needs the run directory, or a node's data folder inside its kit "
            "(KIT/state, with KIT/spec.toml): the spec says how rounds were aggregated"
        )
    spec, _raw = load_spec(path)
    if log.created.spec_digest not in (canonical_digest(spec.to_dict()).hex(), job_digest(spec)):
        raise RevertError(f"{path} does not match the spec digest on the ledger ({log.created.spec_digest[:16]}...)")
    return spec, path


def _refuse_hidden(spec: Spec) -> None:
    secure = spec.privacy.secure_aggregation
    if secure != "none":
        raise RevertError(
            f"the run used privacy.secure_aggregation = {secure!r}: the aggregator only ever held sums of "
            "updates, so a member's part cannot be taken out"
        )
    if spec.robustness.groupwise.groups > 0:
        raise RevertError(
            "the run aggregated group sums (robustness.groupwise): individual updates were never used, so a "
            "member's part cannot be taken out of its group's sum"
        )
    if not spec.ledger.retain_updates:
        raise RevertError(
            "the run did not retain updates (ledger.retain_updates = false): only their digests are on the "
            "ledger, so the rounds cannot be recomputed"
        )


def _aggregator(spec: Spec, task: Task, strategy: Strategy, schema_of: Parameters) -> Any:
    trainer: RootTrainer | None = None
    if isinstance(strategy.rule, FLTrustRule):
        t = spec.training
        trainer = RootTrainer(
            task,
            root_data(spec, strategy.rule.root_size),
            training=LocalTraining(epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate),
            seed=spec.federation.seed,
        )
    schema = schema_of.schema

    def aggregate(rnd: int, x: Vector, updates: np.ndarray[Any, Any], weights: Vector) -> Vector:
        if trainer is not None:
            publish_server_update(trainer.server_update(rnd, Parameters.unflatten(x, schema)))
        return strategy.aggregate(rnd, x, updates, weights)

    return aggregate


def _metrics(result: EvalResult | None) -> dict[str, float | None]:
    if result is None:
        return {}
    out: dict[str, float | None] = {"loss": result.loss, **dict(result.metrics)}
    return {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in out.items()}


def _write_ledger(
    out: Path,
    *,
    spec: Spec,
    log: AuditLog,
    source: dict[str, Any],
    initial: Parameters,
    rounds: list[RoundInputs],
    models: list[Parameters],
    evals: list[EvalResult | None],
    exclude: str,
    from_round: int,
) -> None:
    names = sorted({m for r in rounds for m in r.members})
    index = {name: i for i, name in enumerate(names)}
    recorder = LedgerRecorder(out / "ledger", spec=spec.ledger, schema=initial.schema, member_name=lambda i: names[i])
    identity = {"revert": {**source, "exclude": exclude, "from_round": from_round}, "spec": spec.to_dict()}
    recorder.on_start(
        RunStart(
            federation=f"{log.federation}-without-{exclude}"[:120],
            spec=identity,
            spec_digest=canonical_digest(identity).hex(),
            members=names,
            strategy=spec.strategy.name,
            initial_model=initial,
            initial_digest=tensor_digest(initial),
            seed=spec.federation.seed,
        )
    )
    try:
        for inputs, model, evaluation in zip(rounds, models, evals, strict=True):
            dropped = inputs.round >= from_round and exclude in inputs.members
            keep = [i for i, m in enumerate(inputs.members) if not (dropped and m == exclude)]
            ids = [index[inputs.members[i]] for i in keep]
            selected = np.asarray(sorted([index[m] for m in inputs.members]), dtype=np.int64)
            outcome = RoundOutcome(
                round=inputs.round,
                selected=selected,
                accepted=ids,
                dropouts={index[exclude]: f"{exclude}: excluded by revert"} if dropped else {},
                rejected={},
                parameters=model,
                updates=inputs.updates[keep],
                weights=inputs.weights[keep],
                train_metrics={},
                bytes_up=0,
                bytes_down=0,
                central=evaluation,
                members_eval=None,
                seconds=0.0,
            )
            recorder.on_round(outcome, model=model, model_digest=tensor_digest(model))
        recorder.on_finish({})
    finally:
        recorder.close()


def _stage(progress: RevertProgress | None, stage: Stage) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total)


def _sources(ledger: Path, folders: Sequence[UpdateFolder], rounds: Sequence[RoundInputs]) -> list[dict[str, Any]]:
    """Each folder searched for updates (PATH's ledger first) and how many of the updates came from it."""
    used: dict[Path, int] = {}
    for inputs in rounds:
        for origin in inputs.origins:
            used[origin] = used.get(origin, 0) + 1
    out: list[dict[str, Any]] = [{"ledger": str(ledger), "updates": used.get(ledger, 0)}]
    out.extend(
        {"folder": str(f.path), "ledger": str(f.ledger), "size": f.size, "updates": used.get(f.ledger, 0)}
        for f in folders
    )
    return out


def revert_run(
    path: Path,
    *,
    exclude: str,
    from_round: int,
    out: Path,
    verify: bool = True,
    updates_from: Sequence[Path] = (),
    progress: RevertProgress | None = None,
) -> dict[str, Any]:
    """Recompute the run at ``path`` without ``exclude`` from ``from_round`` on; write it to ``out``.

    ``path`` (run directory, node data folder or node kit) holds the ledger whose history is reverted;
    retained updates are looked up by digest in its object store and then in those of ``updates_from``
    (other copies of the same history, in the same forms; see
    :func:`fedswarm.ledger.update_folders.open_update_folders`). ``verify`` checks ``path``'s ledger first (the
    other folders are only searched for updates, each checked against its digest). Returns the report
    written to ``out/revert.json``.

    Raises
    ------
    RevertError
        The spec is missing or does not match, the member never contributed, updates were not retained,
        are in none of the folders or were secure-aggregated, a folder is of another history or holds an
        altered update, or the recorded history cannot be reproduced.
    """
    path = _data_folder(path)
    if verify:
        verify_ledger(path)
    ledger = find_ledger(path)
    log = load_audit(ledger)
    spec, spec_path = _spec_for(ledger, log)
    _refuse_hidden(spec)
    contributed = [n for n, r in log.rounds.items() if r.aggregate and exclude in r.aggregate.contributors]
    if not any(n >= from_round for n in contributed):
        raise RevertError(
            f"{exclude} contributed no update from round {from_round} on (rounds: {contributed or 'none'})"
        )
    if out.exists() and any(out.iterdir()):
        raise ConfigurationError(f"--out {out} exists and is not empty; choose a new folder")

    initial = log.objects.get_parameters(log.created.initial_model)
    folders = open_update_folders(log, [_data_folder(p) for p in updates_from])
    try:
        rounds = load_round_inputs(log, schema=initial.schema, folders=folders, progress=_stage(progress, "read"))
    finally:
        for folder in folders:
            folder.objects.close()
    dataset = load_data(spec)
    data = build_data(spec, dataset)
    info = DataInfo(data.num_features, data.num_classes, tuple(dataset.feature_names))
    task = build_task(spec, info)

    original = replay(
        initial,
        rounds,
        aggregate=_aggregator(spec, task, build_strategy(spec), initial),
        progress=_stage(progress, "replay"),
    )
    check_replay(rounds, original)
    reverted = replay(
        initial,
        rounds,
        aggregate=_aggregator(spec, task, build_strategy(spec), initial),
        exclude=exclude,
        from_round=from_round,
        min_members=spec.strategy.min_members,
        progress=_stage(progress, "revert"),
    )

    holdout: Arrays = data.holdout
    evals_before: list[EvalResult | None] = []
    evals_after: list[EvalResult | None] = []
    per_round: list[dict[str, Any]] = []
    for inputs, before, after in zip(rounds, original, reverted, strict=True):
        eb = task.evaluate(before, holdout) if len(holdout) else None
        ea = task.evaluate(after, holdout) if len(holdout) else None
        evals_before.append(eb)
        evals_after.append(ea)
        per_round.append(
            {
                "round": inputs.round,
                "excluded": inputs.round >= from_round and exclude in inputs.members,
                "model": inputs.model,
                "reverted_model": tensor_digest(after),
                "original": _metrics(eb),
                "reverted": _metrics(ea),
            }
        )
        if progress is not None:
            progress("evaluate", len(per_round), len(rounds))

    (out / "models").mkdir(parents=True, exist_ok=True)
    for inputs, model in zip(rounds, reverted, strict=True):
        save_parameters(model, out / "models" / f"round-{inputs.round:04d}.safetensors")
    final_digest = save_parameters(reverted[-1], out / "models" / "final.safetensors")
    (out / "spec.toml").write_text(spec_path.read_text(encoding="utf-8"), encoding="utf-8")

    with LedgerStore(ledger, readonly=True) as store:
        source = {"ledger": str(ledger), "federation": store.federation, "size": store.size, "root": store.root().hex()}
    _write_ledger(
        out,
        spec=spec,
        log=log,
        source=source,
        initial=initial,
        rounds=rounds,
        models=reverted,
        evals=evals_after,
        exclude=exclude,
        from_round=from_round,
    )
    final_before, final_after = _metrics(evals_before[-1]), _metrics(evals_after[-1])
    change = {
        k: (final_after[k] - v) if v is not None and final_after.get(k) is not None else None  # type: ignore[operator]
        for k, v in final_before.items()
    }
    report: dict[str, Any] = {
        "source": source,
        "exclude": exclude,
        "from_round": from_round,
        "rounds_changed": sum(1 for r in per_round if r["excluded"]),
        "final": {"original": final_before, "reverted": final_after, "change": change},
        "final_model": str(out / "models" / "final.safetensors"),
        "final_model_digest": final_digest,
        "original_final_model_digest": rounds[-1].model,
        "ledger": str(out / "ledger"),
        "update_sources": _sources(ledger, folders, rounds),
        "rounds": per_round,
    }
    (out / "revert.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def _run_with_progress(run: Callable[[RevertProgress], dict[str, Any]], *, quiet: bool) -> dict[str, Any]:
    """Run ``run`` showing one bar per stage on stderr (none with ``quiet``)."""
    bars = progress_bars("rounds", quiet=quiet)
    tasks: dict[Stage, Any] = {}

    def progress(stage: Stage, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(STAGES[stage], total=total)
        bars.update(tasks[stage], completed=done)

    with bars:
        return run(progress)


def revert(
    path: Annotated[
        Path,
        typer.Argument(
            help="run directory, node data folder (KIT/state) or node kit: the ledger whose history is reverted",
            show_default=False,
        ),
    ],
    exclude: Annotated[str, typer.Option("--exclude", help="member whose updates to take out (e.g. member-00003)")],
    out: Annotated[Path, typer.Option("--out", help="folder for the recomputed models and their ledger")],
    from_round: Annotated[int, typer.Option("--from-round", min=1, help="first round without the member")] = 1,
    updates_from: Annotated[
        list[Path] | None,
        typer.Option(
            "--updates-from",
            metavar="FOLDER",
            help="another node's data folder (or kit, or run directory) of the same history, searched for retained "
            "updates by digest; repeat for each (a swarm's updates stay with the rounds' leaders)",
        ),
    ] = None,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="verify the ledger first")] = True,
    json_: Annotated[bool, typer.Option("--json", help="print the report as one JSON line")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress output")] = False,
) -> None:
    """Recompute the model history without a member's updates, from the updates the ledger retained."""
    report = guarded(
        lambda: _run_with_progress(
            lambda progress: revert_run(
                path,
                exclude=exclude,
                from_round=from_round,
                out=out,
                verify=verify,
                updates_from=tuple(updates_from or ()),
                progress=progress,
            ),
            quiet=quiet,
        )
    )
    if json_:
        typer.echo(json.dumps({k: v for k, v in report.items() if k != "rounds"}, separators=(",", ":")))
        return
    final = report["final"]
    typer.echo(
        f"reverted {report['rounds_changed']} round(s) without {exclude} (from round {from_round}); models and "
        f"their ledger in {out}"
    )
    for key in sorted(final["original"]):
        before, after, delta = final["original"][key], final["reverted"].get(key), final["change"].get(key)
        if before is None or after is None or delta is None:
            continue
        typer.echo(f"  {key:<12} {before:.4f} -> {after:.4f} ({delta:+.4f})")
    err_console.print(f"report: {out / 'revert.json'}")
