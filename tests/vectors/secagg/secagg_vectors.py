"""Loader of the secure-aggregation known-answer vectors in this folder.

Tests load it by path (tests are not a package)::

    spec = importlib.util.spec_from_file_location("secagg_vectors", VECTORS / "secagg_vectors.py")

Files: ``shamir.json`` and ``prg.json`` (made by ``generate_secagg_vectors.py`` without fedswarm's code),
``x25519_rfc7748.json`` (RFC 7748), ``aes_gcm.json`` (GCM specification test cases),
``aes_ctr_sp800_38a.json`` (NIST SP 800-38A) and ``hkdf_rfc5869.json`` (RFC 5869).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load(name: str) -> Any:
    """Parsed JSON of ``<name>.json`` in this folder."""
    return json.loads((HERE / f"{name}.json").read_text())


def shamir_integer_cases() -> list[dict[str, Any]]:
    """Integer Shamir cases: prime, threshold, secret, coefficients, xs, ys."""
    cases: list[dict[str, Any]] = load("shamir")["integer"]
    return cases


def shamir_byte_cases() -> list[dict[str, Any]]:
    """Byte-string Shamir cases: threshold, secret (bytes), xs, shares (lists of field elements)."""
    cases = load("shamir")["bytes"]
    return [{**case, "secret": bytes.fromhex(case["secret_hex"])} for case in cases]


def prg_cases() -> list[dict[str, Any]]:
    """PRG cases: seed (bytes), length, offsets and the expected uint64 words (as ints)."""
    return [
        {**case, "seed": bytes.fromhex(case["seed_hex"]), "words": [int(w) for w in case["words"]]}
        for case in load("prg")["cases"]
    ]


def hex_fields(record: dict[str, Any]) -> dict[str, Any]:
    """Decode every hex string value of ``record`` (except ``name`` and ``source``) to bytes."""
    return {k: v if k in ("name", "source") or not isinstance(v, str) else bytes.fromhex(v) for k, v in record.items()}
