"""Benchmark of Ed25519 signing and verification: fedswarm (libsodium) against OpenSSL, in one process.

fedswarm signs messages up to 64 KiB and verifies every signature through libsodium (PyNaCl), strictly
(small-order and non-canonical keys and points refused); OpenSSL, through ``cryptography``, is what it used
before and what gives the same signatures. Each round times, in alternating order, on the same keys and
messages:

* ``sign``: :meth:`fedswarm.crypto.signing.SigningKey.sign` against ``Ed25519PrivateKey.sign``;
* ``verify_single``: :meth:`fedswarm.crypto.signing.VerifyKey.verify` (key parsed and checked per call)
  against ``Ed25519PublicKey.from_public_bytes(...).verify``;
* ``verify_batch``: :func:`fedswarm.crypto.batch.verify_signatures` (keys parsed once) against a loop over
  OpenSSL keys parsed once.

Reports the median microseconds per signature of each and the ratios (OpenSSL ÷ fedswarm) as one JSON
line on stdout; the load average is included, since the machines are shared.

Run from the repository root::

    .venv/bin/python benchmarks/signatures.py                 # 21 rounds of 512 signatures
    .venv/bin/python benchmarks/signatures.py --rounds 41 --signatures 1024 --message-bytes 256
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ed25519

from fedswarm.crypto.batch import verify_signatures
from fedswarm.crypto.signing import SigningKey, VerifyKey

KEYS = 8


def _timed(function: Callable[[], object], count: int) -> float:
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) / count * 1e6


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its JSON line."""
    parser = argparse.ArgumentParser(description="Ed25519: fedswarm (libsodium) against OpenSSL.")
    parser.add_argument("--rounds", type=int, default=21, help="alternating rounds (median reported)")
    parser.add_argument("--signatures", type=int, default=512, help="signatures per round and kind")
    parser.add_argument("--message-bytes", type=int, default=256, help="length of each signed message")
    args = parser.parse_args(argv)

    seeds = [hashlib.sha256(bytes([i])).digest() for i in range(KEYS)]
    ours = [SigningKey.from_seed(seed) for seed in seeds]
    theirs = [ed25519.Ed25519PrivateKey.from_private_bytes(seed) for seed in seeds]
    messages = [hashlib.shake_256(i.to_bytes(4, "big")).digest(args.message_bytes) for i in range(args.signatures)]
    items = [(ours[i % KEYS].public_key().raw, m, ours[i % KEYS].sign(m)) for i, m in enumerate(messages)]
    assert all(theirs[i % KEYS].sign(m) == s for i, (_, m, s) in enumerate(items)), "signatures differ"

    def sign_ours() -> None:
        for i, message in enumerate(messages):
            ours[i % KEYS].sign(message)

    def sign_openssl() -> None:
        for i, message in enumerate(messages):
            theirs[i % KEYS].sign(message)

    def single_ours() -> None:
        for public, message, signature in items:
            VerifyKey.from_raw(public).verify(message, signature)

    def single_openssl() -> None:
        for public, message, signature in items:
            ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)

    def batch_ours() -> None:
        verify_signatures(items)

    def batch_openssl() -> None:
        keys: dict[bytes, ed25519.Ed25519PublicKey] = {}
        for public, message, signature in items:
            key = keys.get(public)
            if key is None:
                key = keys[public] = ed25519.Ed25519PublicKey.from_public_bytes(public)
            key.verify(signature, message)

    runs: dict[str, Callable[[], None]] = {
        "sign_fedswarm": sign_ours,
        "sign_openssl": sign_openssl,
        "verify_single_fedswarm": single_ours,
        "verify_single_openssl": single_openssl,
        "verify_batch_fedswarm": batch_ours,
        "verify_batch_openssl": batch_openssl,
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    load_start = os.getloadavg()
    for round_ in range(args.rounds):
        order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
        for name in order:
            times[name].append(_timed(runs[name], len(items)))
        print(f"round {round_ + 1}/{args.rounds}", file=sys.stderr)
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "benchmark": "signatures",
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "rounds": args.rounds,
        "signatures": len(items),
        "message_bytes": args.message_bytes,
        "us_per_signature": {name: round(value, 1) for name, value in median.items()},
        "ratio_sign": round(median["sign_openssl"] / median["sign_fedswarm"], 2),
        "ratio_verify_single": round(median["verify_single_openssl"] / median["verify_single_fedswarm"], 2),
        "ratio_verify_batch": round(median["verify_batch_openssl"] / median["verify_batch_fedswarm"], 2),
    }
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
