"""Benchmark of the ledger's Merkle tree: appends per second, proof creation and verification.

Builds an incremental :class:`fedswarm.ledger.tree.MerkleTree` of ``--entries`` log entries (each hashed
into a leaf on the way), then times inclusion and consistency proofs for random indices and sizes
(median over ``--samples``), and, as the in-run baseline, the pure functions of
:mod:`fedswarm.ledger.merkle`, which rehash the whole log for each proof. Targets: creating and
checking a proof takes at most 1 ms each at 1,000,000 entries.

Run from the repository root::

    .venv/bin/python benchmarks/merkle.py                  # 1,000,000 entries, 15-30 s
    .venv/bin/python benchmarks/merkle.py --entries 100000 --samples 500

Prints one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable

from fedswarm.ledger.merkle import (
    inclusion_proof_from_hashes,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from fedswarm.ledger.tree import MerkleTree

TARGET_MS = 1.0


def _median_ms(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        function()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e6


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its JSON line."""
    parser = argparse.ArgumentParser(description="Benchmark of the ledger's Merkle tree.")
    parser.add_argument("--entries", type=int, default=1_000_000, help="log entries (default 1,000,000)")
    parser.add_argument("--samples", type=int, default=2000, help="proofs timed per kind (default 2000)")
    parser.add_argument("--baseline-runs", type=int, default=3, help="runs of the rehashing baseline")
    parser.add_argument("--entry-bytes", type=int, default=64, help="size of one log entry in bytes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.entries < 2 or args.samples < 1 or args.baseline_runs < 1 or args.entry_bytes < 8:
        parser.error("need --entries >= 2, --samples >= 1, --baseline-runs >= 1, --entry-bytes >= 8")
    rng = random.Random(args.seed)
    n = args.entries
    padding = bytes(args.entry_bytes - 8)

    _log(f"appending {n} entries")
    tree = MerkleTree()
    start = time.perf_counter()
    for i in range(n):
        tree.append(leaf_hash(i.to_bytes(8, "big") + padding))
    append_s = time.perf_counter() - start

    _log("extend (one batch of leaf hashes)")
    hashes = [tree.leaf_hash(i) for i in range(n)]
    appended_root = tree.root()
    del tree  # keep one tree in memory at a time
    tree = MerkleTree()
    start = time.perf_counter()
    tree.extend(hashes)
    extend_s = time.perf_counter() - start
    if tree.root() != appended_root:
        raise RuntimeError("append and extend built different trees")

    top = tree.root()
    root_ms = _median_ms(lambda: tree.root(rng.randrange(1, n + 1)), args.samples)

    _log(f"inclusion proofs, {args.samples} samples")
    indices = [rng.randrange(n) for _ in range(args.samples)]
    proofs = {}
    create_times = []
    for index in indices:
        t0 = time.perf_counter_ns()
        proofs[index] = tree.inclusion_proof(index)
        create_times.append(time.perf_counter_ns() - t0)
    verify_times = []
    for index in indices:
        leaf = hashes[index]
        proof = proofs[index]
        t0 = time.perf_counter_ns()
        verify_inclusion(leaf, index, n, proof, top)
        verify_times.append(time.perf_counter_ns() - t0)
    inclusion_create_ms = statistics.median(create_times) / 1e6
    inclusion_verify_ms = statistics.median(verify_times) / 1e6

    _log(f"consistency proofs, {args.samples} samples")
    old_sizes = [rng.randrange(1, n) for _ in range(args.samples)]
    old_roots = {old: tree.root(old) for old in old_sizes}
    cproofs = {}
    create_times = []
    for old in old_sizes:
        t0 = time.perf_counter_ns()
        cproofs[old] = tree.consistency_proof(old)
        create_times.append(time.perf_counter_ns() - t0)
    verify_times = []
    for old in old_sizes:
        old_root, proof = old_roots[old], cproofs[old]
        t0 = time.perf_counter_ns()
        verify_consistency(old, n, old_root, top, proof)
        verify_times.append(time.perf_counter_ns() - t0)
    consistency_create_ms = statistics.median(create_times) / 1e6
    consistency_verify_ms = statistics.median(verify_times) / 1e6

    _log(f"baseline: rehashing inclusion proof over all {n} leaf hashes, {args.baseline_runs} runs")
    baseline_index = rng.randrange(n)
    baseline_ms = _median_ms(lambda: inclusion_proof_from_hashes(hashes, baseline_index), args.baseline_runs)
    if inclusion_proof_from_hashes(hashes, baseline_index) != tree.inclusion_proof(baseline_index):
        raise RuntimeError("the tree and the pure functions disagree")

    result = {
        "benchmark": "merkle",
        "entries": n,
        "entry_bytes": args.entry_bytes,
        "samples": args.samples,
        "python": platform.python_version(),
        "append_per_s": round(n / append_s),
        "extend_per_s": round(n / extend_s),
        "root_past_size_ms": round(root_ms, 4),
        "inclusion_create_ms": round(inclusion_create_ms, 4),
        "inclusion_verify_ms": round(inclusion_verify_ms, 4),
        "consistency_create_ms": round(consistency_create_ms, 4),
        "consistency_verify_ms": round(consistency_verify_ms, 4),
        "rehash_inclusion_baseline_ms": round(baseline_ms, 1),
        "ratios": {
            "rehash_baseline_over_tree_inclusion_create": round(baseline_ms / inclusion_create_ms),
            "inclusion_create_over_target": round(inclusion_create_ms / TARGET_MS, 4),
            "inclusion_verify_over_target": round(inclusion_verify_ms / TARGET_MS, 4),
            "consistency_create_over_target": round(consistency_create_ms / TARGET_MS, 4),
            "consistency_verify_over_target": round(consistency_verify_ms / TARGET_MS, 4),
        },
        "targets_met": max(inclusion_create_ms, inclusion_verify_ms, consistency_create_ms, consistency_verify_ms)
        <= TARGET_MS,
    }
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
