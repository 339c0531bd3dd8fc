"""What privacy costs: SecAgg+ and CKKS rounds against unprotected ones, and accuracy under client-level DP.

Three parts, one JSON line on stdout (progress on stderr):

``secagg``
    One round of SecAgg+ through the round engine's collector and member handlers (the same code a
    simulation runs), ``--members`` members x ``--dimension`` parameters, at each ``--dropouts`` rate;
    members drop after sharing their keys (phase 2, the costliest case: the aggregator reconstructs their
    masking keys). Members "train" a synthetic task (a random update), so the times are the protocol's:
    seconds per member (all four handlers, minus the synthetic training), seconds at the aggregator
    (everything else: the collector and the aggregator state machine), bytes each contributing member
    sends (compact encoding) against the unprotected float32 upload of the same update, and the same
    for its canonical wire encoding (``to_wire``, hex inside canonical JSON).
``ckks``
    One round of CKKS aggregation of ``--dimension`` parameters from ``--ckks-members`` members: seconds to
    encrypt per member, to add at the aggregator, to decrypt at one member, ciphertext bytes per member
    against float32 (the expansion), and the largest error against the stated bound.
``utility``
    Final held-out accuracy of ``examples/hospitals.toml`` and ``examples/digits.toml`` with central
    client-level DP at each ``--epsilons`` (delta ``--delta``; the noise is calibrated to spend exactly
    that epsilon over the example's rounds), against the non-private run (epsilon infinity), mean and
    range over ``--repeats`` noise draws. The DP clip is the median L2 norm of the first round's updates
    of the non-private run (``--clip`` overrides it); choosing it that way looks at the data and is not
    itself private, as usual in such comparisons.

Run from the repository root::

    .venv/bin/python benchmarks/privacy.py                           # the full set (several minutes)
    .venv/bin/python benchmarks/privacy.py --parts secagg --dimension 10000 --members 20
    .venv/bin/python benchmarks/privacy.py --parts utility --repeats 1 --epsilons 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedswarm.core.data import Arrays, LocalData
from fedswarm.core.errors import RoundAborted
from fedswarm.core.parameters import Parameters
from fedswarm.core.task import EvalResult, FitConfig, FitResult, MemberState
from fedswarm.privacy.he.ckks import CKKSAdder, CKKSKeyHolder, CKKSParams, ckks_error_bound, provision_contexts
from fedswarm.rounds.member import MemberRuntime
from fedswarm.rounds.messages import Dropout, Exchange, FitRequest
from fedswarm.rounds.privacy.member import MemberProtection
from fedswarm.rounds.privacy.messages import SecAggMasked
from fedswarm.rounds.privacy.release import SumRelease
from fedswarm.rounds.privacy.secagg import SecAggCollector, SecAggMemberSide, SecAggSettings
from fedswarm.rounds.stages import ServerContext
from fedswarm.sim.engine import run_simulation
from fedswarm.spec.schema import Spec, load_spec
from fedswarm.strategy.base import member_seed

ROOT = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- SecAgg+ through the round engine ------------------------------------------------------------
class SyntheticTask:
    """A task whose update is a fixed random vector per (round, member): no training cost."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension

    def init_parameters(self, *, seed: int) -> Parameters:
        return Parameters({"w": np.zeros(self.dimension, dtype=np.float32)})

    def fit(self, parameters: Parameters, data: Arrays, *, config: FitConfig, state: MemberState) -> FitResult:
        update = np.random.default_rng(config.seed).normal(0.0, 0.3, size=self.dimension).astype(np.float32)
        return FitResult(num_examples=len(data), update=Parameters({"w": update}))

    def evaluate(self, parameters: Parameters, data: Arrays) -> EvalResult:  # pragma: no cover - unused
        return EvalResult(num_examples=0, loss=0.0)


def _name(m: int) -> str:
    return f"member-{m:05d}"


def secagg_round(args: argparse.Namespace, dropout: float) -> dict[str, Any]:
    n, d = args.members, args.dimension
    task = SyntheticTask(d)
    data = LocalData(
        train=Arrays(np.zeros((10, 1), np.float32), np.zeros(10, np.int64)),
        test=Arrays(np.zeros((1, 1), np.float32), np.zeros(1, np.int64)),
        num_classes=2,
    )
    params = task.init_parameters(seed=0)
    runtime = MemberRuntime(
        task,
        lambda m: data,
        schema=params.schema,
        member_name=_name,
        handlers=SecAggMemberSide(MemberProtection()).handlers(),
    )
    settings = SecAggSettings(
        bits=args.bits,
        clip=args.clip,
        rounding="stochastic",
        degree=None,
        dropout_tolerance=dropout if dropout > 0 else None,
        threshold=None,
        min_inputs=None,
        keep_view=False,
    )
    collector = SecAggCollector(
        SumRelease(mode="none"),
        settings=settings,
        federation="bench",
        seed=args.seed,
        default_range=None,
        min_contributors=2,
    )
    rng = np.random.default_rng(args.seed)
    dropped = set(rng.choice(n, size=round(dropout * n), replace=False).tolist())
    requests = {
        m: FitRequest(
            params, FitConfig(round=1, epochs=1, batch_size=1, learning_rate=0.1, seed=member_seed(args.seed, 1, m))
        )
        for m in range(n)
    }
    gvec = params.flatten()
    # the synthetic training alone, to subtract from the members' time
    start = time.perf_counter()
    plain = [runtime.fit(m, requests[m], gvec) for m in range(n)]
    train_seconds = (time.perf_counter() - start) / n
    plain_bytes = float(np.mean([r.payload_bytes for r in plain if not isinstance(r, Dropout)]))

    member_seconds = 0.0
    aggregator_seconds = 0.0
    wire_up = 0
    gen = collector.collect(
        1,
        requests,
        dimension=d,
        ctx=ServerContext(1, np.arange(n), args.seed),
        screen=lambda m, u: None,
        member_name=_name,
    )
    start = time.perf_counter()
    try:
        exchange: Exchange[Any] = next(gen)
        while True:
            aggregator_seconds += time.perf_counter() - start
            replies: dict[int, Any] = {}
            t0 = time.perf_counter()
            for m, req in exchange.requests.items():
                if exchange.kind == "secagg.fit" and m in dropped:
                    replies[m] = Dropout(f"{_name(m)}: dropped (benchmark)")
                    continue
                replies[m] = runtime.handle(exchange.kind, m, req, gvec)
                if isinstance(replies[m], SecAggMasked) and m == min(set(range(n)) - dropped):
                    wire_up = len(replies[m].to_wire())
            member_seconds += time.perf_counter() - t0
            start = time.perf_counter()
            exchange = gen.send(replies)
    except StopIteration as stop:
        aggregator_seconds += time.perf_counter() - start
        collection = stop.value
    contributors = collection.count
    clipped = [np.clip(plain[m].update, -args.clip, args.clip) for m in range(n) if m not in dropped]  # type: ignore[union-attr]
    error = float(np.max(np.abs(collection.total - np.sum(clipped, axis=0))))
    last = collector.last_round
    bytes_up = collection.bytes_up / contributors
    return {
        "dropout": dropout,
        "dropped": len(dropped),
        "contributors": contributors,
        "degree": last["degree"],
        "threshold": last["threshold"],
        "ring_bits": last["ring_bits"],
        "member_seconds": (member_seconds - train_seconds * (n - len(dropped))) / n,
        "aggregator_seconds": aggregator_seconds,
        "bytes_up_per_member": bytes_up,
        "bytes_down_per_member_extra": collection.extra_bytes_down / contributors,
        "plain_float32_bytes_per_member": plain_bytes,
        "expansion_up": bytes_up / plain_bytes,
        "wire_bytes_masked_reply": wire_up,
        "wire_expansion_masked_reply": wire_up / plain_bytes,
        "max_abs_error": error,
        "error_bound": last["quantization_error_bound"],
    }


# --- CKKS ------------------------------------------------------------------------------------------
def ckks_round(args: argparse.Namespace) -> dict[str, Any]:
    params = CKKSParams()
    secret, public = provision_contexts(params)
    holder, adder = CKKSKeyHolder(secret, params), CKKSAdder(public, params)
    rng = np.random.default_rng(args.seed)
    inputs = rng.normal(0.0, 0.3, size=(args.ckks_members, args.dimension))
    t0 = time.perf_counter()
    encrypted = [holder.encrypt(v) for v in inputs]
    encrypt = (time.perf_counter() - t0) / args.ckks_members
    t0 = time.perf_counter()
    total = adder.add(encrypted, length=args.dimension)
    add = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = holder.decrypt(total, length=args.dimension)
    decrypt = time.perf_counter() - t0
    ct_bytes = sum(len(c) for c in encrypted[0])
    plain = 4 * args.dimension
    return {
        "members": args.ckks_members,
        "dimension": args.dimension,
        "poly_modulus_degree": params.poly_modulus_degree,
        "ciphertexts_per_member": len(encrypted[0]),
        "encrypt_seconds_per_member": encrypt,
        "aggregator_add_seconds": add,
        "aggregator_add_seconds_per_member": add / args.ckks_members,
        "decrypt_seconds": decrypt,
        "ciphertext_bytes_per_member": ct_bytes,
        "plain_float32_bytes": plain,
        "expansion": ct_bytes / plain,
        "public_context_bytes": len(public),
        "max_abs_error": float(np.max(np.abs(out - inputs.sum(axis=0)))),
        "error_bound": ckks_error_bound(args.ckks_members, params),
    }


# --- utility under client-level DP ------------------------------------------------------------------
def _with(spec: Spec, changes: Mapping[str, Any]) -> Spec:
    raw = spec.to_dict()
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            raw.setdefault(section, {})[name] = value
        else:
            raw[section] = value
    return Spec.model_validate(raw)


def _median_first_round_norm(spec: Spec) -> float:
    norms: list[float] = []

    def grab(outcome: Any, rounds: int) -> None:
        if outcome.round == 1:
            norms.extend(float(np.linalg.norm(u)) for u in outcome.updates)

    run_simulation(_with(spec, {"federation.rounds": 1}), write_outputs=False, on_round=grab)
    return float(statistics.median(norms))


def utility(args: argparse.Namespace, example: str) -> dict[str, Any]:
    base, _ = load_spec(ROOT / "examples" / f"{example}.toml")
    base = _with(
        base,
        {
            "baselines.local_only": False,
            "baselines.centralized": False,
            "ledger.enabled": False,
            "evaluation.members": "none",
            "output.save_models": "final",
        },
    )
    clip = args.clip_dp if args.clip_dp is not None else _median_first_round_norm(base)
    uniform = _with(base, {"strategy.rule": {"name": "mean", "options": {"weighted": False}}})
    plain = run_simulation(uniform, write_outputs=False).summary["final"]["accuracy"]
    log(f"utility {example}: non-private accuracy {plain:.4f}, clip {clip:.4g}")
    out: dict[str, Any] = {"clip": clip, "non_private_accuracy": plain, "epsilons": {}}
    for eps in args.epsilons:
        accs: list[float] = []
        z = None
        for r in range(args.repeats):
            spec = _with(
                uniform,
                {
                    "privacy": {"dp": "central", "target_epsilon": eps, "delta": args.delta, "clip": clip},
                    "federation.seed": base.federation.seed + r,
                },
            )
            result = run_simulation(spec, write_outputs=False)
            accs.append(float(result.summary["final"]["accuracy"]))
            z = result.summary["privacy"]["noise_multiplier"]
            spent = result.summary["privacy"]["epsilon"]
        out["epsilons"][str(eps)] = {
            "accuracy_mean": float(np.mean(accs)),
            "accuracy_min": float(np.min(accs)),
            "accuracy_max": float(np.max(accs)),
            "vs_non_private": float(np.mean(accs)) / plain,
            "noise_multiplier": z,
            "epsilon_spent": spent,
        }
        log(f"  epsilon {eps}: accuracy {np.mean(accs):.4f} (z = {z:.3g})")
    out["epsilons"]["inf"] = {"accuracy_mean": plain, "vs_non_private": 1.0}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--parts", nargs="+", choices=["secagg", "ckks", "utility"], default=["secagg", "ckks", "utility"]
    )
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--dimension", type=int, default=100_000)
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--bits", type=int, default=16)
    parser.add_argument("--clip", type=float, default=1.0, help="SecAgg+ quantization range")
    parser.add_argument("--ckks-members", type=int, default=20)
    parser.add_argument("--examples", nargs="+", default=["hospitals", "digits"])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip-dp", type=float, default=None, help="DP clip (default: median first-round norm)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    result: dict[str, Any] = {"benchmark": "privacy"}
    if "secagg" in args.parts:
        runs = []
        for dropout in args.dropouts:
            log(f"secagg+: {args.members} members x {args.dimension} parameters, {dropout:.0%} dropout")
            try:
                runs.append({"completed": True, **secagg_round(args, dropout)})
            except RoundAborted as exc:
                runs.append({"completed": False, "dropout": dropout, "reason": str(exc)})
            log(f"  {runs[-1]}")
        result["secagg"] = {"members": args.members, "dimension": args.dimension, "bits": args.bits, "runs": runs}
    if "ckks" in args.parts:
        log(f"ckks: {args.ckks_members} members x {args.dimension} parameters")
        result["ckks"] = ckks_round(args)
        log(f"  {result['ckks']}")
    if "utility" in args.parts:
        result["utility"] = {"delta": args.delta, "repeats": args.repeats}
        for example in args.examples:
            result["utility"][example] = utility(args, example)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
