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

``--against REF`` compares with the rules as they were at git revision ``REF`` (their modules read with
``git show REF:src/fedswarm/aggregation/<module>.py``, helpers from the working tree): each rule is
called alternately in its current and its ``REF`` version, ``--repeats`` times each, in this one process,
so both see the same load; the JSON line then has ``against`` with both medians and ``speedup``.

Run from the repository root::

    .venv/bin/python benchmarks/aggregation_cost.py --members 100 --params 1000000
    .venv/bin/python benchmarks/aggregation_cost.py --members 100 --params 1000000 --burn 2   # under load
    .venv/bin/python benchmarks/aggregation_cost.py --rules weighted_median centered_clipping_3 \
        --repeats 5 --no-memory --burn 2 --against HEAD                                        # old vs new

Prints exactly one JSON line on stdout (progress goes to stderr)::

    {"benchmark": "aggregation_cost", "members": 100, "params": 1000000, "repeats": 3, "f": 24,
     "baseline": "numpy_mean", "baseline_seconds": ..., "rules": {"median": {"seconds": ...,
     "ratio_to_mean": ..., "peak_extra_mb": ...}, ...}, "slowest_excluding_bulyan": [name, seconds],
     "threads": 2, "blas": [...], "burn": 0, "load_average": [before, after]}
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedswarm.aggregation._threads import thread_count

_BURN = "while True: pass"
_MODULES = ("bucketing", "bulyan", "clipping", "fltrust", "geometric_median", "krum", "median", "trimmed_mean")
_ROOT = Path(__file__).resolve().parent.parent


def _current() -> dict[str, Any]:
    return {name: importlib.import_module(f"fedswarm.aggregation.{name}") for name in _MODULES}


def _at_revision(ref: str) -> dict[str, Any]:
    """The rule modules as they were at git revision ``ref`` (read-only ``git show``), as fresh modules."""
    out: dict[str, Any] = {}
    for name in _MODULES:
        path = f"src/fedswarm/aggregation/{name}.py"
        source = subprocess.run(
            ["git", "show", f"{ref}:{path}"], cwd=_ROOT, check=True, capture_output=True, text=True
        ).stdout
        module = types.ModuleType(f"_against_{name}")
        module.__file__ = f"{ref}:{path}"
        exec(compile(source, module.__file__, "exec"), module.__dict__)
        out[name] = module
    return out


def _rules(updates: np.ndarray, f: int, seed: int, m: Mapping[str, Any]) -> dict[str, Callable[[], Any]]:
    median, trimmed_mean = m["median"].median, m["trimmed_mean"].trimmed_mean
    krum, multi_krum, bulyan = m["krum"].krum, m["krum"].multi_krum, m["bulyan"].bulyan
    geometric_median, fltrust, bucket_means = (
        m["geometric_median"].geometric_median,
        m["fltrust"].fltrust,
        m["bucketing"].bucket_means,
    )
    centered_clipping, clipped_mean = m["clipping"].centered_clipping, m["clipping"].clipped_mean
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


def _alternate(now: Callable[[], Any], before: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds (all threads of the process) of the current and the earlier version,
    called alternately after one warm-up each."""
    now(), before()
    wall: dict[str, list[float]] = {"now": [], "before": []}
    cpu: dict[str, list[float]] = {"now": [], "before": []}
    for _ in range(repeats):
        for key, call in (("before", before), ("now", now)):
            start, start_cpu = time.perf_counter(), time.process_time()
            call()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    a, b = statistics.median(wall["now"]), statistics.median(wall["before"])
    ca, cb = statistics.median(cpu["now"]), statistics.median(cpu["before"])
    print(f"  against: now {a:.3f} s (cpu {ca:.3f}), before {b:.3f} s (cpu {cb:.3f}): {b / a:.2f}x", file=sys.stderr)
    return {
        "seconds": round(a, 4),
        "before_seconds": round(b, 4),
        "speedup": round(b / a, 2),
        "cpu_seconds": round(ca, 4),
        "before_cpu_seconds": round(cb, 4),
        "cpu_speedup": round(cb / ca, 2),
    }


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
    parser.add_argument("--against", default=None, help="also time the rules as at this git revision, alternately")
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
    rules = _rules(updates, f, args.seed, _current())
    if args.rules:
        unknown = sorted(set(args.rules) - set(rules))
        if unknown:
            raise SystemExit(f"unknown rules {unknown}; known: {sorted(rules)}")
        rules = {name: rules[name] for name in args.rules}
    against: dict[str, dict[str, float]] | None = None
    if args.against is not None:
        before = _rules(updates, f, args.seed, _at_revision(args.against))
        against = {name: _alternate(call, before[name], args.repeats) for name, call in rules.items()}

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
                "against": None if against is None else {"revision": args.against, "rules": against},
                "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
