"""Simulation overhead: fedswarm against the same arithmetic written as a plain numpy loop.

The job: digits, softmax regression (64×10 weights + 10 biases, zeros init), one epoch of local mini-batch
SGD (lr 0.1, batch 32), Dirichlet(0.5) label partition over N clients, 20% of the data held out centrally,
FedAvg weighted by examples, a fraction F of clients per round, accuracy on the held-out set every round.
Both sides use the same partition (built by fedswarm, before any timing), the same client sampling, and
the same per-client shuffling seeds, so they compute the same models (checked: ``max_abs_diff``).

With more clients than the 1,437 pooled training rows can serve, each client draws ``--samples-per-client``
rows with replacement according to its own Dirichlet label mix (fedswarm's lazy ``samples_per_member``
partition, which holds nothing per client until that client is sampled). It is used by default from
1,000 clients on.

    python benchmarks/simulation.py --clients 10 --rounds 20 --fraction 1.0
    python benchmarks/simulation.py --clients 100000 --rounds 5 --fraction 0.01

Prints one JSON line; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import statistics
import sys
import time
from typing import Any

import numpy as np

from fedswarm.rounds.coordinator import RoundOutcome
from fedswarm.sim.engine import run_simulation
from fedswarm.sim.world import build_world
from fedswarm.spec.schema import Spec, parse_spec
from fedswarm.strategy.base import Sampling, member_seed, sample_members


def make_spec(clients: int, rounds: int, fraction: float, samples_per_client: int | None, seed: int) -> Spec:
    data: dict[str, Any] = {
        "dataset": "digits",
        "partition": "dirichlet",
        "alpha": 0.5,
        "holdout": 0.2,
        "test_fraction": 0.0,
        "min_samples": 1,
    }
    if samples_per_client:
        data["samples_per_member"] = samples_per_client
    return parse_spec(
        {
            "federation": {"name": "bench-digits", "members": clients, "rounds": rounds, "seed": seed},
            "data": data,
            "task": {"name": "numpy_softmax", "options": {"init": "zeros", "dtype": "float32"}},
            "training": {"epochs": 1, "batch_size": 32, "learning_rate": 0.1},
            "strategy": {"name": "fedavg", "fraction": fraction, "min_members": 1},
            "evaluation": {"members": "none", "every": 1},
            "baselines": {"local_only": False, "centralized": False},
        }
    )


def numpy_loop(spec: Spec, rounds: int) -> tuple[list[float], np.ndarray, np.ndarray, float]:
    """The same job by hand: returns per-round seconds, final weights, bias, final accuracy."""
    world = build_world(spec)
    data = world.data
    n_clients = data.members
    sampling = Sampling(fraction=spec.strategy.fraction, min_members=spec.strategy.min_members)
    seed = spec.federation.seed
    hx = data.holdout.x
    hy = data.holdout.y
    d, k = data.num_features, data.num_classes
    w = np.zeros((d, k), dtype=np.float32)
    b = np.zeros(k, dtype=np.float32)
    lr = np.float32(0.1)
    times = []
    acc = 0.0
    for rnd in range(1, rounds + 1):
        t0 = time.perf_counter()
        chosen = sample_members(rnd, n_clients, sampling=sampling, seed=seed)
        new_w = np.zeros((d, k), dtype=np.float64)
        new_b = np.zeros(k, dtype=np.float64)
        total = 0
        for c in chosen:
            train = data.local(int(c)).train
            x, y = train.x, train.y
            n = len(y)
            lw, lb = w.copy(), b.copy()
            rng = np.random.Generator(np.random.PCG64(member_seed(seed, rnd, int(c))))
            perm = rng.permutation(n)
            for s in range(0, n, 32):
                idx = perm[s : s + 32]
                xb = x[idx]
                z = xb @ lw + lb
                z -= z.max(axis=1, keepdims=True)
                p = np.exp(z)
                p /= p.sum(axis=1, keepdims=True)
                p[np.arange(len(idx)), y[idx]] -= 1.0
                p /= len(idx)
                lw -= lr * (xb.T @ p)
                lb -= lr * p.sum(axis=0)
            new_w += n * lw
            new_b += n * lb
            total += n
        w = (new_w / total).astype(np.float32)
        b = (new_b / total).astype(np.float32)
        acc = float(np.mean(np.argmax(hx @ w + b, axis=1) == hy))
        times.append(time.perf_counter() - t0)
    return times, w, b, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--fraction", type=float, default=1.0)
    ap.add_argument("--samples-per-client", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-numpy", action="store_true", help="only run fedswarm (for very large N)")
    args = ap.parse_args()
    spc = args.samples_per_client
    if spc is None and args.clients >= 1000:
        spc = 16
    spec = make_spec(args.clients, args.rounds, args.fraction, spc, args.seed)

    stamps: list[float] = []

    def on_round(o: RoundOutcome, total: int) -> None:
        stamps.append(time.perf_counter())
        print(f"fedswarm round {o.round}/{total}", file=sys.stderr)

    t0 = time.perf_counter()
    result = run_simulation(spec, on_round=on_round, write_outputs=False)
    wall = time.perf_counter() - t0
    per_round = [b - a for a, b in itertools.pairwise(stamps)]
    fs = statistics.median(per_round) if per_round else float("nan")
    out: dict[str, Any] = {
        "benchmark": "simulation",
        "clients": args.clients,
        "rounds": args.rounds,
        "fraction": args.fraction,
        "samples_per_client": spc,
        "seconds_per_round": fs,
        "wall_seconds": wall,
        "final_accuracy": result.summary["final"].get("accuracy"),
    }
    if not args.skip_numpy:
        print("numpy loop ...", file=sys.stderr)
        times, w, b, acc = numpy_loop(spec, args.rounds)
        ns = statistics.median(times[1:]) if len(times) > 1 else times[0]
        out["numpy_seconds_per_round"] = ns
        out["ratio_vs_numpy"] = fs / ns
        out["numpy_final_accuracy"] = acc
        out["max_abs_diff"] = float(
            max(np.abs(result.final["weight"] - w).max(), np.abs(result.final["bias"] - b).max())
        )
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
