"""Every simulated attack against every aggregation rule, on digits: final accuracy, backdoor success,
detection, and what each rule costs.

The job: scikit-learn's digits, 25 members (IID, and Dirichlet label skew alpha = 0.5), 20% of the rows
held out centrally, softmax regression (numpy task), 2 local epochs of mini-batch SGD (batch 16, lr 0.1),
FedAvg's server step (server lr 1), 20 rounds, every member in every round. Five members attack from
round 1 (chosen by the seed). Rules (``[strategy.rule]``): mean, median, trimmed_mean (beta 0.2: trims 5
of 25), krum, multi_krum and bulyan (f = 5; n = 25 >= 4f + 3), geometric_median, fltrust (100 root
examples), clipped_mean (max_norm 0.5) and centered_clipping (tau 0.5); honest update norms of this task
are about 0.25-0.45 (IID) and 0.25-1.1 (Dirichlet, median 0.5), so the norm bound sits at the honest
norms, as norm bounding intends. Two more columns put bucketing (Karimireddy, He, Jaggi 2022: the rule
aggregates the means of random pairs of updates, ``bucket_size = 2``) in front of fltrust and
centered_clipping; their buckets are drawn from the run seed and the round. Attacks (``[attack]``
defaults): label_flip, sign_flip, scaling (model replacement, Bagdasaryan et al. 2020: each attacker
trains on flipped labels and scales its update by n / (f * server lr) = 5, so that the five together
replace the global model with their poisoned one), gaussian (std 1), alie (Baruch et al.'s z), ipm
(epsilon 5), backdoor (last 4 pixels on, target 0, half of the attacker's rows added poisoned),
free_ride; ``none`` is the clean run. Every cell is the mean over ``--seeds`` seeds. A reference run
``absent`` (plain mean, the five attackers send nothing) gives the accuracy of the honest members alone.

The goal: under every attack the best rule within 2 points of the clean run (the plain mean without
attackers), and the plain mean collapsing under scaling and IPM. The tables also give, per rule, its
worst gap over the attacks (a rule that meets the goal under every attack is one a user can pick without
knowing the attack), and the per-seed numbers.

Detection (on by default in every run) is summarized from the plain-mean runs: how many attackers and
honest members the run summary flags. With ``--cost``, ``benchmarks/aggregation_cost.py`` is run at
``--cost-members`` x ``--cost-params`` (default 100 x 1,000,000) and its per-rule seconds are reported
beside the accuracy, with the per-round cost of detection at the same size. ``--reuse FILE`` takes the
runs from an earlier ``robustness.json`` instead of simulating them (to redo the tables, the plot or the
cost alone).

Run from the repository root::

    .venv/bin/python benchmarks/robustness.py             # full: 3 seeds, 20 rounds, both partitions, cost
    .venv/bin/python benchmarks/robustness.py --quick     # 1 seed, 8 rounds, no cost (about a minute)
    .venv/bin/python benchmarks/robustness.py --reuse benchmarks/results/robustness.json   # tables + cost only

Prints exactly one JSON line on stdout (progress on stderr) and writes ``benchmarks/results/robustness.json``
(every run), ``robustness.md`` (the tables) and ``robustness.png`` (accuracy heatmaps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

RULES: dict[str, tuple[str, dict[str, Any]]] = {  # column -> ([strategy.rule] name, options)
    "mean": ("mean", {}),
    "median": ("median", {}),
    "trimmed_mean": ("trimmed_mean", {"beta": 0.2}),
    "krum": ("krum", {"f": 5}),
    "multi_krum": ("multi_krum", {"f": 5}),
    "bulyan": ("bulyan", {"f": 5}),
    "geometric_median": ("geometric_median", {}),
    "fltrust": ("fltrust", {"root_size": 100}),
    "clipped_mean": ("clipped_mean", {"max_norm": 0.5}),
    "centered_clipping": ("centered_clipping", {"tau": 0.5}),
    "fltrust_s2": ("fltrust", {"root_size": 100, "bucket_size": 2}),
    "centered_clipping_s2": ("centered_clipping", {"tau": 0.5, "bucket_size": 2}),
}
ATTACKS = ["none", "label_flip", "sign_flip", "scaling", "gaussian", "alie", "ipm", "backdoor", "free_ride"]
REFERENCE = "absent"  # plain mean, attackers silent: the honest members alone
PARTITIONS = ["iid", "dirichlet"]
MEMBERS, ATTACKERS = 25, 5
COST_NAMES = {  # row of the cost table -> rule of aggregation_cost.py
    "median": "median",
    "median (weighted)": "weighted_median",
    "trimmed_mean": "trimmed_mean",
    "krum": "krum",
    "multi_krum": "multi_krum",
    "bulyan": "bulyan",
    "bulyan (f = 1)": "bulyan_f1",
    "geometric_median": "geometric_median",
    "fltrust": "fltrust",
    "fltrust_s2": "fltrust_bucketed",
    "clipped_mean": "clipped_mean",
    "centered_clipping": "centered_clipping",
    "centered_clipping (3 iterations)": "centered_clipping_3",
}
RESULTS = Path(__file__).resolve().parent / "results"


def _spec(partition: str, attack: str, rule: str, seed: int, rounds: int) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "federation": {"name": "robustness", "members": MEMBERS, "rounds": rounds, "seed": seed},
        "data": {"dataset": "digits", "partition": partition, "alpha": 0.5, "min_samples": 10},
        "training": {"epochs": 2, "batch_size": 16, "learning_rate": 0.1},
        "strategy": {"name": "fedavg", "min_members": 5, "rule": {"name": RULES[rule][0], "options": RULES[rule][1]}},
        "baselines": {"local_only": False, "centralized": False},
        "evaluation": {"members": "none"},
        "ledger": {"enabled": False},
    }
    if attack != "none":
        raw["attack"] = {"kind": attack, "members": ATTACKERS}
    return raw


def _run(job: tuple[str, str, str, int, int]) -> dict[str, Any]:
    partition, attack, rule, seed, rounds = job
    import fedswarm.sim.attacks  # noqa: F401  (registers the attack library in this worker)
    from fedswarm.core.task import DataInfo
    from fedswarm.sim.attacks import AttackReport, build_attack_part, choose_attackers
    from fedswarm.sim.engine import run_simulation
    from fedswarm.spec.schema import parse_spec

    spec = parse_spec(_spec(partition, attack, rule, seed, rounds))
    start = time.perf_counter()
    res = run_simulation(spec, write_outputs=False)
    seconds = time.perf_counter() - start
    acc = [h.get("accuracy") for h in res.history]
    out: dict[str, Any] = {
        "partition": partition,
        "attack": attack,
        "rule": rule,
        "seed": seed,
        "accuracy": res.summary["final"]["accuracy"],
        "accuracy_mean_over_rounds": float(np.mean([a for a in acc if a is not None])),
        "accuracy_min": float(min(a for a in acc if a is not None)),
        "accuracy_per_round": [None if a is None else round(float(a), 4) for a in acc],
        "seconds": round(seconds, 3),
    }
    if attack == "backdoor":
        out["attack_success_rate"] = res.summary["attack"]["attack_success_rate"]
    if attack == "none":  # the trigger on the clean model: the backdoor's baseline
        probe = parse_spec(_spec(partition, "backdoor", rule, seed, rounds))
        report = build_attack_part(probe, DataInfo(64, 10), MEMBERS).hook
        assert isinstance(report, AttackReport)
        out["attack_success_rate"] = report.attack_success_rate(res.final)
    attackers = set()
    if spec.attack is not None:
        attackers = {f"member-{m:05d}" for m in choose_attackers(spec.attack, members=MEMBERS, seed=seed)}
    flagged = set(res.summary.get("flagged", []))
    out["flagged_attackers"] = len(flagged & attackers)
    out["flagged_honest"] = len(flagged - attackers)
    return out


def _aggregate(runs: list[dict[str, Any]], key: str) -> dict[str, dict[str, dict[str, float]]]:
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in runs:
        if r.get(key) is None:
            continue
        table.setdefault(r["partition"], {}).setdefault(r["attack"], {}).setdefault(r["rule"], []).append(r[key])
    return {
        p: {a: {k: float(np.mean(v)) for k, v in rules.items()} for a, rules in at.items()} for p, at in table.items()
    }


def _cost(members: int, params: int) -> dict[str, Any]:
    script = Path(__file__).resolve().parent / "aggregation_cost.py"
    cmd = [
        sys.executable,
        str(script),
        "--members",
        str(members),
        "--params",
        str(params),
        "--repeats",
        "1",
        "--no-memory",
    ]
    print(f"running {' '.join(cmd[1:])}", file=sys.stderr)
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    cost: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    from fedswarm.rounds.robust.detection import anomaly_scores

    updates = np.random.default_rng(0).standard_normal((members, params))
    anomaly_scores(updates)
    start = time.perf_counter()
    anomaly_scores(updates)
    cost["detection_seconds"] = round(time.perf_counter() - start, 4)
    return cost


def _goal(
    accuracy: dict[str, Any], runs: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per attack: the best rule's gap to the clean plain mean; per rule: its worst gap over the attacks."""
    per_seed: dict[tuple[str, str, str], dict[int, float]] = {}
    for r in runs:
        per_seed.setdefault((r["partition"], r["attack"], r["rule"]), {})[r["seed"]] = r["accuracy"]
    goal: dict[str, dict[str, Any]] = {}
    worst: dict[str, dict[str, Any]] = {}
    for partition, attacks in accuracy.items():
        clean = attacks["none"]["mean"]
        clean_seeds = per_seed[(partition, "none", "mean")]
        goal[partition] = {}
        for attack in ATTACKS[1:]:
            row = attacks[attack]
            best_rule = max(row, key=lambda r: row[r])
            gap = 100.0 * (row[best_rule] - clean)
            seeds = per_seed[(partition, attack, best_rule)]
            goal[partition][attack] = {
                "best_rule": best_rule,
                "best": row[best_rule],
                "clean": clean,
                "gap_points": round(gap, 2),
                "met": gap >= -2.0,
                "mean": row["mean"],
                "gap_per_seed": [round(100.0 * (seeds[k] - clean_seeds[k]), 1) for k in sorted(seeds)],
            }
        worst[partition] = {}
        for rule in RULES:
            gaps = {a: 100.0 * (attacks[a][rule] - clean) for a in ATTACKS[1:] if rule in attacks[a]}
            if gaps:
                under = min(gaps, key=lambda a: gaps[a])
                worst[partition][rule] = {
                    "worst_gap_points": round(gaps[under], 2),
                    "under": under,
                    "met": gaps[under] >= -2.0,
                }
    return goal, worst


def _markdown(
    accuracy: dict[str, Any],
    mean_acc: dict[str, Any],
    asr: dict[str, Any],
    detection: dict[str, Any],
    goal: dict[str, Any],
    worst: dict[str, Any],
    runs: list[dict[str, Any]],
    cost: dict[str, Any] | None,
    args: argparse.Namespace,
) -> str:
    rules = list(RULES)
    lines = [
        f"Digits, {MEMBERS} members of which {ATTACKERS} attack, {args.rounds} rounds, mean over {args.seeds} "
        "seed(s): final held-out accuracy (the clean run is the `none` row; `absent`: plain mean with the "
        "attackers silent, the honest members alone). Columns `*_s2`: bucketing with `bucket_size = 2` in "
        "front of the rule.",
        "",
    ]
    for partition in PARTITIONS:
        if partition not in accuracy:
            continue
        lines += [f"### {partition}" + (" (Dirichlet alpha = 0.5)" if partition == "dirichlet" else ""), ""]
        lines.append("| attack | " + " | ".join(rules) + " |")
        lines.append("|---" * (len(rules) + 1) + "|")
        for attack in ATTACKS:
            row = accuracy[partition].get(attack, {})
            best = max(row.values()) if row else math.nan
            cells = [
                (f"**{row[r]:.3f}**" if row.get(r) == best else f"{row[r]:.3f}") if r in row else "-" for r in rules
            ]
            lines.append(f"| {attack} | " + " | ".join(cells) + " |")
        honest = accuracy[partition].get(REFERENCE, {}).get("mean")
        if honest is not None:
            lines.append(f"| {REFERENCE} | {honest:.3f} |" + " |" * (len(rules) - 1))
        lines += ["", "Mean accuracy over the rounds (how much the attack hurt on the way):", ""]
        lines.append("| attack | " + " | ".join(rules) + " |")
        lines.append("|---" * (len(rules) + 1) + "|")
        for attack in ATTACKS:
            row = mean_acc[partition].get(attack, {})
            lines.append(f"| {attack} | " + " | ".join(f"{row[r]:.3f}" if r in row else "-" for r in rules) + " |")
        lines += [
            "",
            "Backdoor attack success rate (triggered held-out digits of other classes classified as 0; "
            "`none`: the same trigger on the clean model):",
            "",
        ]
        lines.append("| run | " + " | ".join(rules) + " |")
        lines.append("|---" * (len(rules) + 1) + "|")
        for attack in ("none", "backdoor"):
            row = asr.get(partition, {}).get(attack, {})
            lines.append(f"| {attack} | " + " | ".join(f"{row[r]:.3f}" if r in row else "-" for r in rules) + " |")
        lines += [
            "",
            "Goal: under every attack the best rule within 2 points of the clean run (plain mean); the gap per "
            "seed compares the same seed's runs:",
            "",
        ]
        lines.append(
            "| attack | best rule | accuracy | clean | gap (points) | gap per seed | met | plain mean (drop) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for attack, g in goal[partition].items():
            per_seed = " / ".join(f"{x:+.1f}" for x in g["gap_per_seed"])
            drop = 100.0 * (g["clean"] - g["mean"])
            lines.append(
                f"| {attack} | {g['best_rule']} | {g['best']:.3f} | {g['clean']:.3f} | {g['gap_points']:+.1f} | "
                f"{per_seed} | {'yes' if g['met'] else '**no**'} | {g['mean']:.3f} ({drop:+.1f}) |"
            )
        lines += ["", "Each rule's worst gap to the clean run over the attacks (one rule for every attack):", ""]
        lines.append("| rule | worst gap (points) | under | within 2 points under every attack |")
        lines.append("|---|---|---|---|")
        for rule, w in worst[partition].items():
            lines.append(f"| {rule} | {w['worst_gap_points']:+.1f} | {w['under']} | {'yes' if w['met'] else 'no'} |")
        lines += ["", "Clean runs per seed (final accuracy):", ""]
        seeds = sorted({r["seed"] for r in runs})
        lines.append("| rule | " + " | ".join(f"seed {k}" for k in seeds) + " |")
        lines.append("|---" * (len(seeds) + 1) + "|")
        for rule, attack in [(r, "none") for r in rules] + [("mean", REFERENCE)]:
            got = {
                r["seed"]: r["accuracy"]
                for r in runs
                if r["partition"] == partition and r["attack"] == attack and r["rule"] == rule
            }
            if got:
                label = rule if attack == "none" else f"mean, {REFERENCE}"
                lines.append(f"| {label} | " + " | ".join(f"{got[k]:.3f}" if k in got else "-" for k in seeds) + " |")
        lines += [
            "",
            "Detection (plain-mean runs, summed over seeds): attackers / honest members flagged in the run summary:",
            "",
        ]
        lines.append("| attack | attackers flagged | honest flagged |")
        lines.append("|---|---|---|")
        for attack, d in detection.get(partition, {}).items():
            lines.append(f"| {attack} | {d['attackers']}/{d['possible']} | {d['honest']} |")
        lines.append("")
    if cost is not None:
        lines += [
            f"### Cost at {cost['members']} members x {cost['params']:,} parameters (aggregation_cost.py, 1 call, "
            f"load average {cost['load_average'][0]:.1f})",
            "",
            "| rule | seconds per round | x numpy mean |",
            "|---|---|---|",
            f"| mean (numpy) | {cost['baseline_seconds']:.3f} | 1.0 |",
        ]
        for rule, name in COST_NAMES.items():
            r = cost["rules"].get(name)
            if r:
                lines.append(f"| {rule} | {r['seconds']:.3f} | {r['ratio_to_mean']:.1f} |")
        lines.append(
            f"| detection (scores per round) | {cost['detection_seconds']:.3f} | "
            f"{cost['detection_seconds'] / cost['baseline_seconds']:.1f} |"
        )
        lines.append("")
    return "\n".join(lines)


def _heatmap(accuracy: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in PARTITIONS if p in accuracy]
    fig, axes = plt.subplots(1, len(parts), figsize=(7.5 * len(parts), 5.2), squeeze=False)
    rules = list(RULES)
    for ax, partition in zip(axes[0], parts, strict=True):
        grid = np.array([[accuracy[partition].get(a, {}).get(r, np.nan) for r in rules] for a in ATTACKS])
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(rules)), rules, rotation=45, ha="right")
        ax.set_yticks(range(len(ATTACKS)), ATTACKS)
        for i in range(len(ATTACKS)):
            for j in range(len(rules)):
                if np.isfinite(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if grid[i, j] > 0.6 else "white",
                    )
        ax.set_title(f"{partition}: final accuracy")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _simulate(args: argparse.Namespace) -> tuple[list[dict[str, Any]], float]:
    jobs = [
        (p, a, r, s, args.rounds) for p in args.partitions for a in ATTACKS for r in RULES for s in range(args.seeds)
    ]
    jobs += [(p, REFERENCE, "mean", s, args.rounds) for p in args.partitions for s in range(args.seeds)]
    print(f"{len(jobs)} runs on {args.workers} worker(s)", file=sys.stderr)
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for i, run in enumerate(pool.map(_run, jobs, chunksize=4), start=1):
            runs.append(run)
            if i % 20 == 0 or i == len(jobs):
                print(f"  {i}/{len(jobs)} runs, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return runs, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 8 rounds, no cost measurement")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--partitions", nargs="*", default=PARTITIONS, choices=PARTITIONS)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--cost",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run aggregation_cost.py at --cost-members x --cost-params (default: yes, unless --reuse "
        "takes a file that has the cost already)",
    )
    parser.add_argument("--cost-members", type=int, default=100)
    parser.add_argument("--cost-params", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--reuse", type=Path, default=None, help="take the runs from this robustness.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.cost = 1, 8, False

    earlier: dict[str, Any] = {}
    if args.reuse is not None:
        earlier = json.loads(args.reuse.read_text())
        runs: list[dict[str, Any]] = earlier["runs"]
        args.seeds, args.rounds = earlier["settings"]["seeds"], earlier["settings"]["rounds"]
        args.partitions = [p for p in PARTITIONS if any(r["partition"] == p for r in runs)]
        simulation_seconds = float(earlier.get("simulation_seconds", math.nan))
    else:
        runs, simulation_seconds = _simulate(args)

    accuracy = _aggregate(runs, "accuracy")
    mean_acc = _aggregate(runs, "accuracy_mean_over_rounds")
    asr = _aggregate(runs, "attack_success_rate")
    goal, worst = _goal(accuracy, runs)
    detection: dict[str, dict[str, dict[str, int]]] = {}
    for r in runs:
        if r["rule"] != "mean" or r["attack"] == REFERENCE:
            continue
        d = detection.setdefault(r["partition"], {}).setdefault(
            r["attack"], {"attackers": 0, "honest": 0, "possible": 0}
        )
        d["attackers"] += r["flagged_attackers"]
        d["honest"] += r["flagged_honest"]
        d["possible"] += ATTACKERS if r["attack"] != "none" else 0
    if args.cost is None:
        args.cost = earlier.get("cost") is None
    cost = _cost(args.cost_members, args.cost_params) if args.cost else earlier.get("cost")
    args.cost_source = "measured" if args.cost else ("reused" if cost is not None else "none")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robustness.json").write_text(
        json.dumps(
            {
                "settings": vars(args)
                | {"out": str(args.out), "reuse": None if args.reuse is None else str(args.reuse)},
                "simulation_seconds": round(simulation_seconds, 1),
                "runs": runs,
                "cost": cost,
            },
            indent=1,
        )
    )
    (args.out / "robustness.md").write_text(
        _markdown(accuracy, mean_acc, asr, detection, goal, worst, runs, cost, args)
    )
    _heatmap(
        accuracy,
        args.out / "robustness.png",
        f"digits, {MEMBERS} members, {ATTACKERS} attackers, {args.rounds} rounds, {args.seeds} seed(s)",
    )
    summary = {
        "benchmark": "robustness",
        "members": MEMBERS,
        "attackers": ATTACKERS,
        "rounds": args.rounds,
        "seeds": args.seeds,
        "runs": len(runs),
        "simulation_seconds": round(simulation_seconds, 1),
        "accuracy": accuracy,
        "attack_success_rate": {p: v.get("backdoor", {}) for p, v in asr.items()},
        "goal": {
            p: {a: {"best_rule": g["best_rule"], "gap_points": g["gap_points"], "met": g["met"]} for a, g in v.items()}
            for p, v in goal.items()
        },
        "goal_met": all(g["met"] for v in goal.values() for g in v.values()),
        "mean_drop_points": {
            p: {a: round(100.0 * (v[a]["clean"] - v[a]["mean"]), 1) for a in ("scaling", "ipm") if a in v}
            for p, v in goal.items()
        },
        "rules_meeting_goal_under_every_attack": {p: [r for r, w in v.items() if w["met"]] for p, v in worst.items()},
        "honest_only_accuracy": {p: v.get(REFERENCE, {}).get("mean") for p, v in accuracy.items()},
        "detection": detection,
        "cost_seconds": None
        if cost is None
        else {
            "mean": cost["baseline_seconds"],
            "detection": cost["detection_seconds"],
            **{rule: cost["rules"][name]["seconds"] for rule, name in COST_NAMES.items() if name in cost["rules"]},
        },
        "outputs": [str(args.out / n) for n in ("robustness.json", "robustness.md", "robustness.png")],
    }
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
