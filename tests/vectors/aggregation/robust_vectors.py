"""Loader of the robust-aggregation known-answer vectors in ``robust_rules.json``.

Each case names a rule of ``fedswarm.aggregation``, its updates and keyword settings, and exactly one of:
the expected aggregate (``expected``, compared with ``rtol``/``atol``), the expected selected indices
(``expected_indices``), or the expected error class and a regular expression its message matches
(``error``/``match``). The answers were derived by hand; each case's ``note`` shows the derivation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RobustCase", "load_cases"]

VECTORS_FILE = Path(__file__).with_name("robust_rules.json")
_DEFAULT_TOLERANCE = 1e-12


@dataclass(frozen=True)
class RobustCase:
    """One known-answer case."""

    id: str
    rule: str
    updates: list[list[float]]
    settings: dict[str, Any]
    expected: list[float] | None
    expected_indices: list[int] | None
    error: str | None
    match: str | None
    rtol: float
    atol: float
    note: str


def load_cases(path: Path = VECTORS_FILE) -> list[RobustCase]:
    """Read the vectors file; refuses a case that does not give exactly one kind of answer."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    cases: list[RobustCase] = []
    for entry in raw["cases"]:
        answers = [key for key in ("expected", "expected_indices", "error") if key in entry]
        if len(answers) != 1:
            raise ValueError(f"{path}: case {entry.get('id')!r} gives {answers}, expected exactly one answer")
        if "error" in entry and "match" not in entry:
            raise ValueError(f"{path}: error case {entry['id']!r} has no 'match'")
        cases.append(
            RobustCase(
                id=entry["id"],
                rule=entry["rule"],
                updates=entry["updates"],
                settings=entry["settings"],
                expected=entry.get("expected"),
                expected_indices=entry.get("expected_indices"),
                error=entry.get("error"),
                match=entry.get("match"),
                rtol=float(entry.get("rtol", _DEFAULT_TOLERANCE)),
                atol=float(entry.get("atol", _DEFAULT_TOLERANCE)),
                note=entry["note"],
            )
        )
    ids = [case.id for case in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate case ids")
    return cases
