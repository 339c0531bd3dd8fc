"""Cost of one SecAgg+ round (Bonawitz et al., 2017; Bell et al., 2020) against an unprotected round.

Runs the member and aggregator state machines in one process with the messages passed in memory, at
several dropout rates. Members that drop do so at ``--drop-phase`` (default 2: after sharing their keys,
before sending masked input, the costliest case for the aggregator, which must then reconstruct their
masking keys and strip the pairwise masks). The neighbour degree for each rate comes from
``degree_for_dropout`` (failure probability ``--failure``) unless ``--degree`` is given; the threshold
is ``degree // 2 + 1``.

Reported per dropout rate: seconds per member (all four phases, including packing the masked vector to
``ring_bits`` bits), seconds at the aggregator (including unpacking), bytes each full member sends and
receives in the compact encoding of ``fedswarm.privacy.secagg.messages.wire_size``, and the ratio of
bytes sent to an unprotected float32 upload of the same vector. Prints one JSON line on stdout.

    .venv/bin/python benchmarks/secagg.py                        # 100 members x 100,000 params
    .venv/bin/python benchmarks/secagg.py --members 20 --dimension 1000 --dropouts 0 0.1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Collection
from functools import partial
from typing import TypeVar

import numpy as np

from fedswarm.core.errors import RoundAborted
from fedswarm.privacy.secagg.aggregator import SecAggAggregator
from fedswarm.privacy.secagg.graph import degree_for_dropout
from fedswarm.privacy.secagg.member import SecAggMember
from fedswarm.privacy.secagg.messages import MaskedInput, wire_size
from fedswarm.privacy.secagg.params import SecAggParams
from fedswarm.privacy.secagg.quantize import pack_ring, unpack_ring

T = TypeVar("T")


def _timed(clock: dict[str, float], key: str, call: Callable[[], T]) -> T:
    start = time.perf_counter()
    result = call()
    clock[key] = clock.get(key, 0.0) + time.perf_counter() - start
    return result


def run(args: argparse.Namespace, dropout: float, inputs: np.ndarray) -> dict[str, object]:
    n, d = args.members, args.dimension
    roster = [f"member-{i:04d}" for i in range(n)]
    degree = args.degree or degree_for_dropout(n, dropout_rate=dropout, failure_probability=args.failure)
    params = SecAggParams.create(
        roster,
        session=b"benchmark session 0001",
        dimension=d,
        clip=args.clip,
        bits=args.bits,
        degree=degree,
        threshold=degree // 2 + 1,
    )
    rng = np.random.default_rng(args.seed)
    dropped = set(rng.choice(roster, size=round(dropout * n), replace=False).tolist())
    members = {m: SecAggMember(m, params) for m in roster}
    aggregator = SecAggAggregator(params)
    member_clock: dict[str, float] = {}
    agg_clock: dict[str, float] = {}
    up = dict.fromkeys(roster, 0)
    down = dict.fromkeys(roster, 0)

    def live(phase: int, inbox: Collection[str]) -> list[str]:
        return [m for m in roster if m in inbox and not (phase >= args.drop_phase and m in dropped)]

    adverts = [_timed(member_clock, m, members[m].advertise_keys) for m in live(0, roster)]
    keys = _timed(agg_clock, "agg", lambda: aggregator.collect_keys(adverts))
    shares = []
    for m in live(1, keys):
        down[m] += wire_size(keys[m])
        shares.append(_timed(member_clock, m, partial(members[m].share_keys, keys[m])))
    deliveries = _timed(agg_clock, "agg", lambda: aggregator.route_shares(shares))
    masked = []
    for m in live(2, deliveries):
        down[m] += wire_size(deliveries[m])
        message = _timed(
            member_clock, m, partial(members[m].masked_input, inputs[roster.index(m)], deliveries[m], rng=rng)
        )
        packed = _timed(member_clock, m, partial(pack_ring, message.masked, bits=params.ring_bits))
        assert wire_size(message) == len(m.encode()) + 2 + 5 + len(packed)
        masked.append((m, packed))

    def receive() -> list[MaskedInput]:
        return [MaskedInput(m, unpack_ring(p, bits=params.ring_bits, length=d), params.ring_bits) for m, p in masked]

    received = _timed(agg_clock, "agg", receive)
    for item in received:
        up[item.member] += wire_size(item)
    requests = _timed(agg_clock, "agg", lambda: aggregator.collect_masked(received))
    replies = []
    for m in live(3, requests):
        down[m] += wire_size(requests[m])
        replies.append(_timed(member_clock, m, partial(members[m].unmask, requests[m])))
    result = _timed(agg_clock, "agg", lambda: aggregator.finish(replies))
    for group in (adverts, shares, replies):
        for sent in group:
            up[sent.member] += wire_size(sent)
    full = list(result.contributors)
    idx = [roster.index(m) for m in full]
    error = float(np.max(np.abs(result.total - np.clip(inputs[idx], -args.clip, args.clip).sum(axis=0))))
    plain = 2 + len(roster[0]) + 4 + 4 * d
    bytes_up = float(np.mean([up[m] for m in full]))
    bytes_down = float(np.mean([down[m] for m in full]))
    return {
        "dropout": dropout,
        "dropped": len(dropped),
        "degree": degree,
        "threshold": params.threshold,
        "ring_bits": params.ring_bits,
        "member_seconds": sum(member_clock.values()) / n,
        "member_seconds_max": max(member_clock.values()),
        "aggregator_seconds": agg_clock["agg"],
        "bytes_up_per_member": bytes_up,
        "bytes_down_per_member": bytes_down,
        "plain_float32_bytes_per_member": plain,
        "expansion_up": bytes_up / plain,
        "expansion_up_and_down": (bytes_up + bytes_down) / plain,
        "max_abs_error": error,
        "error_bound": result.error_bound,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--dimension", type=int, default=100_000)
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--drop-phase", type=int, choices=[0, 1, 2, 3], default=2)
    parser.add_argument("--bits", type=int, default=16)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--degree", type=int, default=None, help="fixed neighbour degree (default: per rate)")
    parser.add_argument("--failure", type=float, default=1e-6, help="abort probability the degree allows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    inputs = np.random.default_rng(args.seed).normal(0.0, 0.3, size=(args.members, args.dimension))
    runs: list[dict[str, object]] = []
    for dropout in args.dropouts:
        print(f"secagg: {args.members} members x {args.dimension} params, {dropout:.0%} dropout", file=sys.stderr)
        try:
            runs.append({"completed": True, **run(args, dropout, inputs)})
        except RoundAborted as exc:
            runs.append({"completed": False, "dropout": dropout, "reason": str(exc)})
        print(f"  {runs[-1]}", file=sys.stderr)
    print(
        json.dumps(
            {
                "benchmark": "secagg",
                "members": args.members,
                "dimension": args.dimension,
                "bits": args.bits,
                "drop_phase": args.drop_phase,
                "runs": runs,
            }
        )
    )


if __name__ == "__main__":
    main()
