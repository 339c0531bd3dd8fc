"""Cost of the Byzantine-robust aggregation rules on one round of large updates.

Times every rule of ``fedswarm.aggregation`` (median of ``--repeats`` calls) on one float64 ``(members,
params)`` matrix, next to numpy's plain mean of the same matrix, and measures each rule's peak extra
memory (numpy allocations seen by tracemalloc, in a separate call). Settings: ``f = (members - 3) // 4``
(the largest Bulyan accepts) for Krum, Multi-Krum (``m = members - f``) and Bulyan, and Bulyan again with
``f = 1`` (its slowest case: most updates selected, widest average); ``beta = 0.1`` for the
trimmed mean; integer weights for the weighted median; the clipping bound is the median update norm;
FLTrust also over the means of random pairs (``bucket_size = 2``, the bucketing included).

The rules run their column chunks on a few threads with BLAS held to one thread (threadpoolctl, see
``fedswarm.aggregation._threads``), so a multi-threaded BLAS does not oversubscribe the cores. The machines
are shared: the JSON line records the load average before and after, and ``--burn N`` starts ``N``
busy-looping processes for the duration of the measurement, to measure under a known extra load.

Run from the repository root::

    .venv/bin/python benchmarks/aggregation_cost.py --members 100 --params 1000000
    .venv/bin/python benchmarks/aggregation_cost.py --members 100 --params 1000000 --burn 2   # under load

Prints exactly one JSON line on stdout (progress goes to stderr)::

    {"benchmark": "aggregation_cost", "members": 100, "params": 1000000, "repeats": 3, "f": 24,
     "baseline": "numpy_mean", "baseline_seconds": ..., "rules": {"median": {"seconds": ...,
     "ratio_to_mean": ..., "peak_extra_mb": ...}, ...}, "slowest_excluding_bulyan": [name, seconds],
     "threads": 2, "blas": [...], "burn": 0, "load_average": [before, after]}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from fedswarm.aggregation._threads import thread_count
from fedswarm.aggregation.bucketing import bucket_means
from fedswarm.aggregation.bulyan import bulyan
from fedswarm.aggregation.clipping import centered_clipping, clipped_mean
from fedswarm.aggregation.fltrust import fltrust
from fedswarm.aggregation.geometric_median import geometric_median
from fedswarm.aggregation.krum import krum, multi_krum
from fedswarm.aggregation.median import median
from fedswarm.aggregation.trimmed_mean import trimmed_mean

_BURN = "while True: pass"


def _rules(updates: np.ndarray, f: int, seed: int) -> dict[str, Callable[[], Any]]:
    n, d = updates.shape
    rng = np.random.default_rng(seed + 1)
    weights = rng.integers(1, 1000, size=n).astype(np.float64)
    norms = np.linalg.norm(updates, axis=1)
    bound = float(np.median(norms))
    server = updates[: max(1, n // 10)].mean(axis=0)
    center = np.zeros(d)
    return {
        "median": lambda: median(updates),
        "weighted_median": lambda: median(updates, weights=weights),
        "trimmed_mean": lambda: trimmed_mean(updates, beta=0.1),
        "krum": lambda: krum(updates, f=f),
        "multi_krum": lambda: multi_krum(updates, f=f, m=n - f),
        "bulyan": lambda: bulyan(updates, f=f),
        "bulyan_f1": lambda: bulyan(updates, f=1),
        "geometric_median": lambda: geometric_median(updates),
        "fltrust": lambda: fltrust(updates, server_update=server),
        "fltrust_bucketed": lambda: fltrust(
            bucket_means(updates, bucket_size=2, seed=(seed,))[0], server_update=server
        ),
        "clipped_mean": lambda: clipped_mean(updates, max_norm=bound),
        "centered_clipping": lambda: centered_clipping(updates, tau=bound / 2, center=center),
        "centered_clipping_3": lambda: centered_clipping(updates, tau=bound / 2, center=center, iterations=3),
    }


def _seconds(call: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_extra_mb(call: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return round((peak - base) / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100, help="number of updates n")
    parser.add_argument("--params", type=int, default=1_000_000, help="parameters per update d")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per rule (the median is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rules", nargs="*", default=None, help="only these rules (default: all)")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc pass")
    parser.add_argument("--burn", type=int, default=0, help="busy-looping processes to run meanwhile (extra load)")
    args = parser.parse_args(argv)
    if args.members < 3 or args.params < 1 or args.repeats < 1 or args.burn < 0:
        parser.error("needs --members >= 3, --params >= 1, --repeats >= 1, --burn >= 0")
    load_before = os.getloadavg()[0]
    burners = [subprocess.Popen([sys.executable, "-c", _BURN]) for _ in range(args.burn)]
    try:
        return _measure(args, load_before)
    finally:
        for p in burners:
            p.kill()
            p.wait()


def _blas() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-untyped]
    except ImportError:
        return []
    return [
        {k: info.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]


def _measure(args: argparse.Namespace, load_before: float) -> int:

    n, d = args.members, args.params
    f = (n - 3) // 4
    print(f"generating {n} x {d} float64 updates ({n * d * 8 / 2**20:.0f} MB)", file=sys.stderr)
    updates = np.random.default_rng(args.seed).standard_normal((n, d))
    rules = _rules(updates, f, args.seed)
    if args.rules:
        unknown = sorted(set(args.rules) - set(rules))
        if unknown:
            raise SystemExit(f"unknown rules {unknown}; known: {sorted(rules)}")
        rules = {name: rules[name] for name in args.rules}

    baseline = _seconds(lambda: np.mean(updates, axis=0), args.repeats)
    print(f"numpy mean: {baseline:.3f} s", file=sys.stderr)
    results: dict[str, dict[str, float | None]] = {}
    for name, call in rules.items():
        call()  # warm-up (thread pool, BLAS)
        seconds = _seconds(call, args.repeats)
        memory = None if args.no_memory else _peak_extra_mb(call)
        results[name] = {
            "seconds": round(seconds, 4),
            "ratio_to_mean": round(seconds / baseline, 2),
            "peak_extra_mb": memory,
        }
        print(f"{name}: {seconds:.3f} s ({seconds / baseline:.1f}x mean), peak +{memory} MB", file=sys.stderr)

    others = {name: r["seconds"] for name, r in results.items() if not name.startswith("bulyan")}
    slowest = max(others.items(), key=lambda item: item[1] or 0.0) if others else None
    print(
        json.dumps(
            {
                "benchmark": "aggregation_cost",
                "members": n,
                "params": d,
                "repeats": args.repeats,
                "f": f,
                "baseline": "numpy_mean",
                "baseline_seconds": round(baseline, 4),
                "rules": results,
                "slowest_excluding_bulyan": list(slowest) if slowest else None,
                "threads": thread_count(),
                "blas": _blas(),
                "burn": args.burn,
                "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
