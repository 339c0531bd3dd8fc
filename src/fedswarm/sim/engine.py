"""The simulation engine: run a federation described by a spec, on one machine.

The engine drives :meth:`Coordinator.run_round` generators and delivers their exchanges through a
backend (in-process by default). It writes the run directory:

```
RUN_DIR/
  spec.toml           the resolved spec (after --set overrides)
  metrics.jsonl       one JSON object per round
  models/round-NNNN.safetensors, models/final.safetensors
  baselines.json      local-only and centralized baselines
  summary.json        the final summary (also printed by --json)
  plots/accuracy.png, plots/loss.png
```
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from fedswarm.codec.canonical import digest as canonical_digest
from fedswarm.codec.tensors import digest as tensor_digest
from fedswarm.codec.tensors import save as save_parameters
from fedswarm.core.parameters import Parameters
from fedswarm.observe.plots import plot_metric
from fedswarm.rounds.coordinator import Coordinator, RoundGenerator, RoundOutcome
from fedswarm.rounds.observer import RunObserver, RunStart
from fedswarm.sim.backends import Backend, make_backend
from fedswarm.sim.baselines import BaselineResult, centralized_baseline, local_only_baseline
from fedswarm.sim.world import World, build_world, member_name
from fedswarm.spec.build import build_strategy
from fedswarm.spec.extensions import resolve_collector
from fedswarm.spec.schema import Spec

__all__ = [
    "RoundCallback",
    "RunResult",
    "build_summary",
    "drive",
    "pick_baseline_members",
    "round_record",
    "run_simulation",
    "write_run_outputs",
]

RoundCallback = Callable[[RoundOutcome, int], None]


def drive(gen: RoundGenerator, backend: Backend, global_vector: np.ndarray[Any, Any]) -> RoundOutcome:
    """Run one round generator to completion, delivering each exchange through ``backend``."""
    try:
        exchange = next(gen)
        while True:
            replies = backend.execute(exchange, global_vector)
            exchange = gen.send(replies)
    except StopIteration as stop:
        outcome: RoundOutcome = stop.value
        return outcome


@dataclass
class RunResult:
    summary: dict[str, Any]
    run_dir: Path
    final: Parameters
    history: list[dict[str, Any]] = field(default_factory=list)


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def round_record(o: RoundOutcome, *, model_digest: str | None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "round": o.round,
        "selected": len(o.selected),
        "accepted": len(o.accepted),
        "dropouts": {member_name(m): r for m, r in o.dropouts.items()},
        "rejected": {member_name(m): r for m, r in o.rejected.items()},
        "bytes_up": o.bytes_up,
        "bytes_down": o.bytes_down,
        "seconds": round(o.seconds, 6),
        **{k: _finite(v) for k, v in o.train_metrics.items()},
    }
    if o.central is not None:
        rec["loss"] = _finite(o.central.loss)
        for k, v in o.central.metrics.items():
            if k != "loss":
                rec[k] = _finite(v)
    if o.members_eval is not None:
        rec["members_evaluated"] = o.members_eval.members
        rec["members_accuracy_mean"] = _finite(o.members_eval.accuracy_mean)
        rec["members_accuracy_worst10"] = _finite(o.members_eval.accuracy_worst10)
    if model_digest:
        rec["model_digest"] = model_digest
    for key, value in o.annotations.items():
        rec[key] = value
    return rec


def _default_run_dir(spec: Spec) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    return Path("runs") / f"{spec.federation.name}-{stamp}"


def pick_baseline_members(world: World) -> list[int]:
    n = world.data.members
    k = min(n, world.spec.baselines.local_only_max_members)
    if k == n:
        return list(range(n))
    rng = np.random.default_rng([world.spec.federation.seed, 7919])
    return sorted(int(m) for m in rng.choice(n, size=k, replace=False))


def run_simulation(
    spec: Spec,
    *,
    out_dir: Path | None = None,
    backend: str | None = None,
    on_round: RoundCallback | None = None,
    on_phase: Callable[[str], None] | None = None,
    write_outputs: bool = True,
    observers: Sequence[RunObserver] = (),
) -> RunResult:
    """Run the whole job: rounds, baselines, outputs. Raises ``FedswarmError`` subclasses on bad input."""
    t0 = time.perf_counter()
    run_dir = (
        Path(out_dir) if out_dir is not None else (spec.output.dir and Path(spec.output.dir)) or _default_run_dir(spec)
    )
    run_dir = Path(run_dir)
    if write_outputs:
        (run_dir / "models").mkdir(parents=True, exist_ok=True)
        (run_dir / "spec.toml").write_text(tomli_w.dumps(spec.to_dict()), encoding="utf-8")
    phase = on_phase or (lambda _msg: None)
    phase("loading data and building the task")
    world = build_world(spec, state_dir=run_dir / "state" if write_outputs else None)
    strategy = build_strategy(spec)
    task, data = world.task, world.data
    start_params = task.init_parameters(seed=spec.federation.seed)
    holdout = data.holdout
    server_stages = [st for ext in world.extensions for st in ext.server_stages()]
    collector = resolve_collector(world.extensions)
    coordinator = Coordinator(
        strategy,
        schema=world.schema,
        population=data.members,
        server_stages=server_stages,
        central_evaluate=(lambda p: task.evaluate(p, holdout)) if len(holdout) else None,
        evaluate_members=spec.evaluation.members,
        member_name=member_name,
        collector=collector,
    )
    engine_backend = make_backend(
        spec, world.runtime, state_dir=run_dir / "state" if write_outputs else None, name=backend
    )
    all_observers: list[RunObserver] = list(observers)
    if write_outputs and spec.ledger.enabled:
        from fedswarm.ledger.recorder import LedgerRecorder

        all_observers.append(
            LedgerRecorder(run_dir / "ledger", spec=spec.ledger, schema=world.schema, member_name=member_name)
        )
    if all_observers:
        spec_dict = spec.to_dict()
        start = RunStart(
            federation=spec.federation.name,
            spec=spec_dict,
            spec_digest=canonical_digest(spec_dict).hex(),
            members=[member_name(m) for m in range(data.members)] if data.members <= 100_000 else [],
            strategy=spec.strategy.name,
            initial_model=start_params,
            initial_digest=tensor_digest(start_params),
            seed=spec.federation.seed,
        )
        for obs in all_observers:
            obs.on_start(start)
    metrics_fh = open(run_dir / "metrics.jsonl", "w", encoding="utf-8") if write_outputs else None
    history: list[dict[str, Any]] = []
    params = start_params
    total_up = total_down = 0
    dropouts = rejected = 0
    last: RoundOutcome | None = None
    R = spec.federation.rounds
    every = spec.evaluation.every
    stopped: str | None = None
    try:
        for rnd in range(1, R + 1):
            gvec = params.flatten()
            is_last = rnd == R
            gen = coordinator.run_round(rnd, params, evaluate=(rnd % every == 0) or is_last, evaluate_all=is_last)
            outcome = drive(gen, engine_backend, gvec)
            params = outcome.parameters
            for ext in world.extensions:
                reason = ext.after_round(outcome, model=params)
                if reason and stopped is None:
                    stopped = reason
            total_up += outcome.bytes_up
            total_down += outcome.bytes_down
            dropouts += len(outcome.dropouts)
            rejected += len(outcome.rejected)
            digest = None
            if write_outputs and (spec.output.save_models == "all" or is_last):
                digest = save_parameters(params, run_dir / "models" / f"round-{rnd:04d}.safetensors")
            if all_observers:
                digest = digest or tensor_digest(params)
                for obs in all_observers:
                    obs.on_round(outcome, model=params, model_digest=digest)
            rec = round_record(outcome, model_digest=digest)
            history.append(rec)
            if metrics_fh is not None:
                metrics_fh.write(json.dumps(rec) + "\n")
                metrics_fh.flush()
            last = outcome
            if on_round is not None:
                on_round(outcome, R)
            if stopped is not None:
                phase(f"stopping after round {rnd}: {stopped}")
                break
    except BaseException:
        for obs in all_observers:
            obs.close()
        raise
    finally:
        if metrics_fh is not None:
            metrics_fh.close()
        engine_backend.close()
    assert last is not None
    fed_seconds = time.perf_counter() - t0

    final_digest = None
    if write_outputs:
        final_digest = save_parameters(params, run_dir / "models" / "final.safetensors")

    # baselines ---------------------------------------------------------------------------------
    baseline_members = pick_baseline_members(world)
    training = strategy.training
    baselines: dict[str, BaselineResult] = {}
    if spec.baselines.centralized:
        phase("training the centralized baseline")
        baselines["centralized"] = centralized_baseline(
            task,
            start_params,
            data,
            training=training,
            rounds=R,
            seed=spec.federation.seed,
            members=baseline_members,
        )
    if spec.baselines.local_only:
        phase(f"training the local-only baseline ({len(baseline_members)} members)")
        baselines["local_only"] = local_only_baseline(
            task,
            start_params,
            data,
            training=training,
            rounds=R,
            seed=spec.federation.seed,
            members=baseline_members,
        )

    summary = build_summary(spec, world, last, history, baselines, baseline_members, run_dir, final_digest)
    summary["bytes_up"] = total_up
    summary["bytes_down"] = total_down
    summary["dropouts"] = dropouts
    summary["rejected"] = rejected
    summary["federated_seconds"] = round(fed_seconds, 4)
    if stopped is not None:
        summary["stopped_early"] = stopped
    for ext in world.extensions:
        summary.update(dict(ext.summary()))
    summary["wall_seconds"] = round(time.perf_counter() - t0, 4)
    if write_outputs:
        write_run_outputs(run_dir, summary, history, baselines)
    for obs in all_observers:
        obs.on_finish(summary)
        obs.close()
    if write_outputs and all_observers:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return RunResult(summary=summary, run_dir=run_dir, final=params, history=history)


def build_summary(
    spec: Spec,
    world: World,
    last: RoundOutcome,
    history: list[dict[str, Any]],
    baselines: Mapping[str, BaselineResult],
    baseline_members: list[int],
    run_dir: Path,
    final_digest: str | None,
) -> dict[str, Any]:
    final: dict[str, Any] = {}
    if last.central is not None:
        final["accuracy"] = _finite(last.central.metrics.get("accuracy", float("nan")))
        final["loss"] = _finite(last.central.loss)
        for k, v in last.central.metrics.items():
            if k not in ("accuracy", "loss"):
                final[k] = _finite(v)
    if last.members_eval is not None:
        final["members_accuracy_mean"] = _finite(last.members_eval.accuracy_mean)
        final["members_accuracy_worst10"] = _finite(last.members_eval.accuracy_worst10)
        if "accuracy" not in final:
            final["accuracy"] = final["members_accuracy_mean"]
            final["loss"] = _finite(last.members_eval.loss_mean)
    out_baselines: dict[str, Any] = {}
    for name, b in baselines.items():
        entry: dict[str, Any] = {
            "accuracy": _finite(b.accuracy),
            "loss": _finite(b.loss),
            "members_accuracy_mean": _finite(b.local_test_accuracy),
            "members_accuracy_worst10": _finite(b.local_test_worst10),
        }
        entry.update({k: _finite(v) for k, v in b.extra.items()})
        out_baselines[name] = entry
    per_member = []
    fed_pm = last.members_eval.per_member if last.members_eval else {}
    cen = baselines.get("centralized")
    loc = baselines.get("local_only")
    for m in baseline_members[:1000]:
        per_member.append(
            {
                "member": member_name(m),
                "train_examples": len(world.data.local(m).train),
                "local_only": _finite(loc.per_member.get(m, float("nan"))) if loc else None,
                "federated": _finite(fed_pm.get(m, float("nan"))),
                "centralized": _finite(cen.per_member.get(m, float("nan"))) if cen else None,
            }
        )
    return {
        "federation": spec.federation.name,
        "members": world.data.members,
        "rounds": len(history),
        "strategy": spec.strategy.name,
        "dataset": spec.data.dataset,
        "final": final,
        "baselines": out_baselines,
        "per_member": per_member,
        "final_model": str(run_dir / "models" / "final.safetensors") if final_digest else None,
        "final_model_digest": final_digest,
        "run_dir": str(run_dir),
    }


def write_run_outputs(
    run_dir: Path,
    summary: dict[str, Any],
    history: list[dict[str, Any]],
    baselines: Mapping[str, BaselineResult],
) -> None:
    (run_dir / "baselines.json").write_text(
        json.dumps(
            {
                k: {"accuracy": _finite(v.accuracy), "loss": _finite(v.loss), "curve": v.curve}
                for k, v in baselines.items()
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    rounds = [h["round"] for h in history]
    plots = []
    if any("accuracy" in h for h in history):
        series: dict[str, list[float]] = {"federated": [h.get("accuracy") or float("nan") for h in history]}
        if "centralized" in baselines:
            series["centralized"] = baselines["centralized"].curve
        if "local_only" in baselines:
            series["local-only"] = baselines["local_only"].curve
        plots.append(
            plot_metric(
                run_dir / "plots" / "accuracy.png",
                metric="accuracy (held-out set)",
                rounds=rounds,
                series=series,
                title=f"{summary['federation']}: accuracy per round",
            )
        )
    if any("loss" in h for h in history):
        plots.append(
            plot_metric(
                run_dir / "plots" / "loss.png",
                metric="loss (held-out set)",
                rounds=rounds,
                series={"federated": [h.get("loss") or float("nan") for h in history]},
                title=f"{summary['federation']}: loss per round",
            )
        )
    summary["plots"] = [str(p) for p in plots]
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
