"""Benchmark of the ledger: signed appends per second, verification of a large log, proofs, run overhead.

Measures, in one process:

* **appends**: signed entries per second appended to a fresh ledger in batches (rounds of one
  ``round_opened``, 100 ``update_submitted`` signed by 100 members and one ``aggregate_committed``, with the
  round's model packed into the database with the round's entries), signing in the caller and with
  one signing process beside it;
  target >= 10,000/s;
* **verify**: :func:`fedswarm.ledger.verify.verify_ledger` of a log of ``--entries`` entries (default
  1,000,000) built the same way, with a checkpoint every ``--checkpoint-every`` rounds (default 1, as
  ``fedswarm simulate`` writes them: signed by the coordinator and cosigned by more than 2/3 of the 100
  members, so 67 cosignatures per 102 entries), on all available cores; target <= 120 s for 1,000,000 entries (for a
  smaller ``--entries`` the time is also projected linearly to 1,000,000). Because wall times on a shared
  machine depend on what else runs, the CPU time per entry of a one-worker verification and per append
  are reported too, with the 1,000,000-entry time they imply when every core is free, and the load
  average at the start;
* **proofs**: inclusion and consistency proof creation from the SQLite-backed tree and their
  verification at that size, median over ``--samples``; target <= 1 ms each;
* **overhead**: wall time of ``run_simulation`` on ``--spec`` (default ``examples/digits.toml``) with the
  ledger enabled divided by the same run with ``ledger.enabled=false``, alternating, median of
  ``--repeats`` runs each (after one warm-up of each); also with the baselines switched off, where the
  rounds are all there is; target <= 1.10. The CPU seconds of each setting (this process and its
  children, so the ledger's background writer too) are reported beside the wall times: on a loaded
  machine, where the writer cannot overlap with training on a free core, their ratio is what the wall
  ratio tends to. ``ratio`` is the ratio of the medians; ``ratio_of_pairs`` the median of the ratios of
  the runs made one right after the other, which cancels load that changes slowly;
  ``writer_cpu_seconds`` the median CPU seconds of the ledger's writer process (the only child process
  of a run), which varies far less with the load than wall times.

The big log's verification also reports its CPU seconds (all processes) per run, and what they imply per
core (``verify_1m_cpu_seconds_per_core``: the wall time on free cores).

Run from the repository root::

    .venv/bin/python benchmarks/ledger.py                      # about 5 minutes on 2 cores
    .venv/bin/python benchmarks/ledger.py --entries 100000 --appends 20000 --repeats 2
    # verification only, three times, on a log kept between runs (built on the first run):
    .venv/bin/python benchmarks/ledger.py --log /tmp/ledger-1m --skip-appends --skip-overhead --verify-repeats 3
    # the run overhead with extra spec overrides (for example fewer checkpoints):
    .venv/bin/python benchmarks/ledger.py --overhead-only --override ledger.checkpoint_every=10

Prints one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedswarm.codec.tensors import encode
from fedswarm.core.parameters import Parameters
from fedswarm.crypto.signing import SigningKey
from fedswarm.ledger.checkpoint import TreeHead, cosign_many, quorum_size, sign_tree_head
from fedswarm.ledger.entries import AggregateCommitted, FederationCreated, MemberKey, RoundOpened, UpdateSubmitted
from fedswarm.ledger.merkle import verify_consistency, verify_inclusion
from fedswarm.ledger.simkeys import SimulationKeys
from fedswarm.ledger.store import LedgerStore
from fedswarm.ledger.verify import verify_ledger
from fedswarm.ledger.writer import LedgerWriter

MEMBERS = 100
TARGETS = {"appends_per_s": 10_000, "verify_1m_s": 120.0, "proof_ms": 1.0, "overhead_ratio": 1.10}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _median_ms(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        function()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e6


def build_log(
    folder: Path, entries: int, *, processes: int, checkpoint_every: int = 0, progress: bool = False
) -> float:
    """Write a verifiable log of about ``entries`` entries; return the seconds spent appending.

    ``checkpoint_every`` > 0: after every that many rounds (and after the last) a checkpoint signed by the
    coordinator and cosigned by the first quorum of members, as ``fedswarm simulate`` writes them
    (:meth:`fedswarm.ledger.recorder_core.RecorderCore.checkpoint`); 0: none.
    """
    keys = SimulationKeys(0)
    names = [f"member-{m:05d}" for m in range(MEMBERS)]
    member_keys = [keys.member(name) for name in names]
    coordinator = keys.coordinator()
    store = LedgerStore(folder, create=True, federation="bench")
    writer = LedgerWriter(store, batch=2048, processes=processes)
    rng = np.random.default_rng(0)
    model = writer.put_object(encode(Parameters({"w": np.zeros(4)})))
    started = time.perf_counter()
    writer.add(
        FederationCreated(
            "0" * 64,
            MEMBERS,
            tuple(MemberKey(n, k.public_key().raw) for n, k in zip(names, member_keys, strict=True)),
            "fedavg",
            model,
        ),
        author="coordinator",
        key=coordinator,
    )
    config = "1" * 64
    digests = [f"{i:064x}" for i in range(MEMBERS)]
    cosigners = list(zip(names, member_keys, strict=True))[: quorum_size(MEMBERS)]
    rnd = 0
    while writer.next_seq < entries:
        rnd += 1
        writer.add(RoundOpened(rnd, "coordinator", tuple(names), config, model), author="coordinator", key=coordinator)
        for name, key, digest in zip(names, member_keys, digests, strict=True):
            writer.add(UpdateSubmitted(rnd, digest, 100, float(rng.random()), 64), author=name, key=key)
        new_model = writer.put_object(encode(Parameters({"w": np.full(4, float(rnd))})))
        writer.add(
            AggregateCommitted(
                rnd, "fedavg", model, tuple(digests), tuple(names), (100.0,) * MEMBERS, new_model, {}, {}, {}
            ),
            author="coordinator",
            key=coordinator,
        )
        model = new_model
        if checkpoint_every and rnd % checkpoint_every == 0:
            _checkpoint(writer, store, coordinator, cosigners)
        if progress and rnd % 500 == 0:
            _log(f"  built {writer.next_seq:,} entries")
    if checkpoint_every and rnd % checkpoint_every:
        _checkpoint(writer, store, coordinator, cosigners)
    writer.close()
    seconds = time.perf_counter() - started
    store.close()
    return seconds


def _checkpoint(
    writer: LedgerWriter, store: LedgerStore, coordinator: SigningKey, cosigners: list[tuple[str, SigningKey]]
) -> None:
    writer.flush()
    head = TreeHead(store.federation, store.size, store.root(), int(time.time() * 1000))
    checkpoint = sign_tree_head(head, signer="coordinator", key=coordinator)
    store.add_checkpoint(checkpoint.with_cosignatures(cosign_many(checkpoint, cosigners)))


def bench_appends(base: Path, count: int) -> dict[str, float]:
    out = {}
    for processes in (0, 1):
        folder = base / f"appends-{processes}"
        cpu = time.process_time()
        seconds = build_log(folder, count, processes=processes)
        cpu = time.process_time() - cpu
        with LedgerStore(folder, readonly=True) as store:
            size = store.size
        out[f"processes_{processes}"] = size / seconds
        if processes == 0:
            out["cpu_us_per_append"] = cpu / size * 1e6
        _log(f"appends with {processes} signing process(es): {size / seconds:,.0f} signed entries/s")
    return out


def bench_proofs(folder: Path, samples: int) -> dict[str, float]:
    rng = random.Random(0)
    with LedgerStore(folder, readonly=True) as store:
        n = store.size
        root = store.root()
        indices = [rng.randrange(n) for _ in range(samples)]
        olds = [rng.randrange(1, n) for _ in range(samples)]
        proofs = {i: store.inclusion_proof(i) for i in indices}
        leaves = {i: store.tree.leaf_hash(i) for i in indices}
        it = iter(indices)
        create = _median_ms(lambda: store.inclusion_proof(next(it)), samples)
        it = iter(indices)

        def check() -> None:
            i = next(it)
            verify_inclusion(leaves[i], i, n, proofs[i], root)

        check_ms = _median_ms(check, samples)
        old_roots = {m: store.root(m) for m in olds}
        consistency = {m: store.consistency_proof(m) for m in olds}
        it = iter(olds)
        cons_create = _median_ms(lambda: store.consistency_proof(next(it)), samples)
        it = iter(olds)

        def cons_check() -> None:
            m = next(it)
            verify_consistency(m, n, old_roots[m], root, consistency[m])

        cons_check_ms = _median_ms(cons_check, samples)
    return {
        "inclusion_proof_ms": create,
        "inclusion_check_ms": check_ms,
        "consistency_proof_ms": cons_create,
        "consistency_check_ms": cons_check_ms,
    }


def bench_overhead(spec_path: Path, repeats: int, extra: list[str]) -> dict[str, object]:
    """Wall and CPU seconds (this process and its children) of runs with and without the ledger."""
    from fedswarm.sim.engine import run_simulation
    from fedswarm.spec.schema import load_spec

    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    writer: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(repeats + 1):
            for enabled in (False, True):
                spec, _ = load_spec(spec_path, overrides=[f"ledger.enabled={'true' if enabled else 'false'}", *extra])
                started, cpu_before, children_before = time.perf_counter(), _cpu_with_children(), _cpu_children()
                run_simulation(spec, out_dir=Path(tmp) / f"{run}-{enabled}")
                seconds, cpu_seconds = time.perf_counter() - started, _cpu_with_children() - cpu_before
                if run:  # the first pair warms caches up
                    times[enabled].append(seconds)
                    cpu[enabled].append(cpu_seconds)
                    if enabled:
                        writer.append(_cpu_children() - children_before)
                _log(
                    f"  {spec_path.name} {' '.join(extra)} ledger={enabled}: {seconds:.2f} s ({cpu_seconds:.2f} s CPU)"
                )
    on, off = statistics.median(times[True]), statistics.median(times[False])
    ratios = [a / b for a, b in zip(times[True], times[False], strict=True)]
    return {
        "ratio": on / off,
        "ratio_of_pairs": statistics.median(ratios),
        "seconds_with_ledger": on,
        "seconds_without_ledger": off,
        "cpu_seconds_with_ledger": statistics.median(cpu[True]),
        "cpu_seconds_without_ledger": statistics.median(cpu[False]),
        "writer_cpu_seconds": statistics.median(writer),
        "ratios": ratios,
    }


def bench_log(base: Path, args: argparse.Namespace, result: dict[str, object]) -> None:
    """Appends, one-worker verification, the big log's verification and proofs, into ``result``."""
    single_rate = None
    if not args.skip_appends:
        _log(f"appending {args.appends:,} signed entries ...")
        appends = bench_appends(base, args.appends)
        result["appends_per_s"] = round(max(appends.values()))
        result["appends_per_s_inline_signing"] = round(appends["processes_0"])
        result["appends_per_s_signing_process"] = round(appends["processes_1"])
        result["appends_cpu_us_per_entry"] = round(appends["cpu_us_per_append"], 1)
        started, cpu = time.perf_counter(), time.process_time()
        verify_ledger(base / "appends-0", workers=1)
        single, cpu = time.perf_counter() - started, time.process_time() - cpu
        with LedgerStore(base / "appends-0", readonly=True) as store:
            single_rate = store.size / single
            cpu_per_entry = cpu / store.size
        result["verify_entries_per_s_one_worker"] = round(single_rate)
        result["verify_cpu_us_per_entry"] = round(cpu_per_entry * 1e6, 1)
        cpus = len(os.sched_getaffinity(0))
        result["verify_1m_cpu_bound_seconds"] = round(cpu_per_entry * 1_000_000 / cpus, 1)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]

    log = args.log if args.log is not None else base / "big"
    if args.log is None or not (log / "ledger.sqlite").exists():
        _log(f"building a log of {args.entries:,} entries ...")
        build_seconds = build_log(log, args.entries, processes=1, checkpoint_every=args.checkpoint_every, progress=True)
        result["log_build_seconds"] = round(build_seconds, 1)
    with LedgerStore(log, readonly=True) as store:
        size = store.size
        checkpoints = store.checkpoints()
    result["log_entries"] = size
    result["log_checkpoints"] = len(checkpoints)
    result["log_cosignatures"] = sum(len(c.cosignatures) for c in checkpoints)
    result["log_signatures_per_entry"] = round((size + len(checkpoints) + result["log_cosignatures"]) / size, 3)  # type: ignore[operator]
    result["log_bytes"] = sum(p.stat().st_size for p in log.rglob("*") if p.is_file())
    seconds = []
    cpu_seconds = []
    workers = 0
    for run in range(max(1, args.verify_repeats)):
        _log(f"verifying {size:,} entries (run {run + 1}) ...")
        started = time.perf_counter()
        cpu_before = _cpu_with_children()
        report = verify_ledger(log, workers=args.workers)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(_cpu_with_children() - cpu_before)
        workers = report.workers
        _log(f"verified in {seconds[-1]:.1f} s ({cpu_seconds[-1]:.1f} s CPU) on {report.workers} worker(s)")
    verify_seconds = statistics.median(seconds)
    result["verify_seconds"] = round(verify_seconds, 2)
    result["verify_seconds_runs"] = [round(x, 1) for x in seconds]
    result["verify_cpu_seconds_runs"] = [round(x, 1) for x in cpu_seconds]
    result["verify_workers"] = workers
    result["verify_entries_per_s"] = round(size / verify_seconds)
    result["verify_1m_projected_seconds"] = round(verify_seconds * 1_000_000 / size, 1)
    result["verify_1m_cpu_seconds_per_core"] = round(statistics.median(cpu_seconds) * 1_000_000 / size / workers, 1)
    if single_rate is not None:
        result["verify_speedup_vs_one_worker"] = round((size / verify_seconds) / single_rate, 2)
    result["load_average_after_verify"] = [round(x, 2) for x in os.getloadavg()]
    proofs = bench_proofs(log, args.samples)
    result.update({k: round(v, 4) for k, v in proofs.items()})
    _log(f"proofs at {size:,}: {proofs}")


def _cpu_children() -> float:
    """CPU seconds of this process's finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def _cpu_with_children() -> float:
    """CPU seconds of this process and its finished children (verification workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its JSON line."""
    parser = argparse.ArgumentParser(description="Benchmark of the fedswarm ledger.")
    parser.add_argument("--entries", type=int, default=1_000_000, help="size of the log to verify (default 1,000,000)")
    parser.add_argument("--appends", type=int, default=50_000, help="entries appended per append measurement")
    parser.add_argument("--samples", type=int, default=1000, help="proofs timed per kind")
    parser.add_argument("--workers", type=int, default=None, help="verification processes (default: all CPUs)")
    parser.add_argument("--spec", type=Path, default=Path("examples/digits.toml"), help="spec for the overhead runs")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting for the overhead (after a warm-up)")
    parser.add_argument("--skip-overhead", action="store_true", help="skip the simulation overhead runs")
    parser.add_argument("--overhead-only", action="store_true", help="only the simulation overhead runs")
    parser.add_argument("--skip-appends", action="store_true", help="skip the append measurements")
    parser.add_argument("--verify-repeats", type=int, default=1, help="verifications of the big log (median)")
    parser.add_argument("--log", type=Path, default=None, help="keep the big log here and reuse it if present")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=1,
        help="rounds between checkpoints of the big log, cosigned by a quorum as simulate does (default 1, "
        "simulate's default; 0: none)",
    )
    parser.add_argument(
        "--override", action="append", default=[], help="extra spec override for the overhead runs (repeatable)"
    )
    args = parser.parse_args(argv)

    result: dict[str, object] = {
        "benchmark": "ledger",
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    if not args.overhead_only:
        with tempfile.TemporaryDirectory() as tmp:
            bench_log(Path(tmp), args, result)
    if not args.skip_overhead:
        _log("overhead on a simulated run ...")
        full = bench_overhead(args.spec, args.repeats, list(args.override))
        fed = bench_overhead(
            args.spec, args.repeats, ["baselines.centralized=false", "baselines.local_only=false", *args.override]
        )
        result["overhead_spec"] = str(args.spec)
        result["overhead_overrides"] = list(args.override)
        result["overhead_ratio"] = round(float(full["ratio"]), 3)  # type: ignore[arg-type]
        result["overhead_ratio_of_pairs"] = round(float(full["ratio_of_pairs"]), 3)  # type: ignore[arg-type]
        result["overhead_ratios"] = [round(r, 3) for r in full["ratios"]]  # type: ignore[attr-defined]
        result["overhead_seconds"] = {
            k: round(float(v), 3)  # type: ignore[arg-type]
            for k, v in full.items()
            if k not in ("ratio", "ratio_of_pairs", "ratios")
        }
        result["overhead_ratio_without_baselines"] = round(float(fed["ratio"]), 3)  # type: ignore[arg-type]
        result["overhead_ratio_of_pairs_without_baselines"] = round(float(fed["ratio_of_pairs"]), 3)  # type: ignore[arg-type]
        result["overhead_ratios_without_baselines"] = [round(r, 3) for r in fed["ratios"]]  # type: ignore[attr-defined]
        result["overhead_seconds_without_baselines"] = {
            k: round(float(v), 3)  # type: ignore[arg-type]
            for k, v in fed.items()
            if k not in ("ratio", "ratio_of_pairs", "ratios")
        }
        result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = TARGETS
    met = {}
    if "appends_per_s" in result:
        met["appends"] = int(result["appends_per_s"]) >= TARGETS["appends_per_s"]  # type: ignore[call-overload]
    if "verify_1m_projected_seconds" in result:
        met["verify"] = float(result["verify_1m_projected_seconds"]) <= TARGETS["verify_1m_s"]  # type: ignore[arg-type]
        proof_worst = max(float(result[k]) for k in ("inclusion_proof_ms", "inclusion_check_ms"))  # type: ignore[arg-type]
        met["proofs"] = proof_worst <= TARGETS["proof_ms"]
    if "overhead_ratio" in result:
        met["overhead"] = float(result["overhead_ratio"]) <= TARGETS["overhead_ratio"]  # type: ignore[arg-type]
    result["met"] = met
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
