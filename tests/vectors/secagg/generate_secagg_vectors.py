"""Regenerate ``shamir.json`` and ``prg.json`` (run from the repository root).

    .venv/bin/python tests/vectors/secagg/generate_secagg_vectors.py

The expected values are computed here without fedswarm's code, by different means:

* Shamir shares as the plain power sum ``sum(c_i * x**i) mod p`` (fedswarm uses Horner's rule), with
  parameters from a fixed-seed ``random.Random``; byte secrets cut into 15-byte big-endian chunks.
* PRG words by encrypting the counter blocks ``0, 1, 2, ...`` (128-bit big-endian) one by one with
  AES-256 in ECB mode and reading the result as little-endian 64-bit words (fedswarm uses CTR mode).

The hand-checkable Shamir case is the textbook example ``f(x) = 1234 + 166 x + 94 x^2``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HERE = Path(__file__).parent
P127 = 2**127 - 1


def power_sum(coefficients: list[int], x: int, p: int) -> int:
    return sum(c * pow(x, i, p) for i, c in enumerate(coefficients)) % p


def shamir_cases() -> dict[str, object]:
    rng = random.Random(20170101)
    int_cases: list[dict[str, object]] = [
        {
            "name": "textbook f(x) = 1234 + 166x + 94x^2",
            "prime": P127,
            "threshold": 3,
            "secret": 1234,
            "coefficients": [166, 94],
            "xs": [1, 2, 3, 4, 5, 6],
            "ys": [1494, 1942, 2578, 3402, 4414, 5614],
        },
        {
            "name": "GF(257) with wrap-around: 200 + 100x + 50x^2 = 1950, 2600, 3350 = 151, 30, 9 mod 257",
            "prime": 257,
            "threshold": 3,
            "secret": 200,
            "coefficients": [100, 50],
            "xs": [5, 6, 7],
            "ys": [151, 30, 9],
        },
    ]
    for threshold, holders in [(2, 3), (3, 5), (5, 8), (9, 16)]:
        secret = rng.randrange(P127)
        coefficients = [rng.randrange(P127) for _ in range(threshold - 1)]
        xs = sorted(rng.sample(range(1, 1000), holders))
        int_cases.append(
            {
                "name": f"random {threshold}-of-{holders} over GF(2^127 - 1)",
                "prime": P127,
                "threshold": threshold,
                "secret": secret,
                "coefficients": coefficients,
                "xs": xs,
                "ys": [power_sum([secret, *coefficients], x, P127) for x in xs],
            }
        )
    byte_cases = []
    for threshold, holders, length in [(2, 3, 32), (4, 6, 32), (3, 5, 1), (3, 4, 45)]:
        secret_bytes = bytes(rng.randrange(256) for _ in range(length))
        chunks = [int.from_bytes(secret_bytes[i : i + 15], "big") for i in range(0, length, 15)]
        polys = [[chunk] + [rng.randrange(P127) for _ in range(threshold - 1)] for chunk in chunks]
        xs = sorted(rng.sample(range(1, 200), holders))
        byte_cases.append(
            {
                "name": f"{length}-byte secret, {threshold}-of-{holders}",
                "threshold": threshold,
                "secret_hex": secret_bytes.hex(),
                "xs": xs,
                "shares": [[power_sum(poly, x, P127) for poly in polys] for x in xs],
            }
        )
    return {"integer": int_cases, "bytes": byte_cases}


def prg_cases() -> list[dict[str, object]]:
    cases = []
    for name, seed in [
        ("zero seed", bytes(32)),
        ("seed 00..1f", bytes(range(32))),
        ("seed ff..ff", b"\xff" * 32),
    ]:
        encryptor = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
        offsets = [0, 1, 2, 3, 4, 5, 998, 999, 1000, 1001]
        blocks = {i // 2 for i in offsets}
        stream = {b: encryptor.update(b.to_bytes(16, "big")) for b in sorted(blocks)}
        words = []
        for i in offsets:
            block = stream[i // 2]
            half = block[8 * (i % 2) : 8 * (i % 2) + 8]
            words.append(str(int.from_bytes(half, "little")))
        cases.append({"name": name, "seed_hex": seed.hex(), "length": 1002, "offsets": offsets, "words": words})
    return cases


def main() -> None:
    (HERE / "shamir.json").write_text(json.dumps(shamir_cases(), indent=1) + "\n")
    (HERE / "prg.json").write_text(
        json.dumps(
            {"construction": "AES-256-ECB of counter blocks 0,1,2,...; words little-endian", "cases": prg_cases()},
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
