"""Loader of the differential-privacy golden values in ``golden_epsilons.json`` (origins in ``SOURCE.md``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["DPVectors", "GoldenCalibration", "GoldenEpsilon", "load_vectors"]

VECTORS_FILE = Path(__file__).with_name("golden_epsilons.json")


@dataclass(frozen=True)
class GoldenEpsilon:
    """A published epsilon; ``check`` says whether ours must equal it or stay at most it."""

    id: str
    source: str
    accountant: Literal["rdp", "pld"]
    sampling: Literal["poisson", "fixed_size"]
    population: int
    sample_size: int
    noise_multiplier: float
    rounds: int
    delta: float
    rdp_orders: list[float] | None
    published_epsilon: float
    check: Literal["equal", "upper_bound"]
    abs_tol: float


@dataclass(frozen=True)
class GoldenCalibration:
    """A published calibrated noise multiplier for a target epsilon."""

    id: str
    source: str
    accountant: Literal["rdp", "pld"]
    sampling: Literal["poisson", "fixed_size"]
    population: int
    sample_size: int
    rounds: int
    delta: float
    target_epsilon: float
    published_noise_multiplier: float
    abs_tol: float


@dataclass(frozen=True)
class DPVectors:
    epsilons: list[GoldenEpsilon]
    calibrations: list[GoldenCalibration]


def _epsilon(raw: dict[str, Any]) -> GoldenEpsilon:
    if raw["check"] not in ("equal", "upper_bound"):
        raise ValueError(f"{raw['id']}: unknown check {raw['check']!r}")
    orders = raw["rdp_orders"]
    return GoldenEpsilon(
        id=raw["id"],
        source=raw["source"],
        accountant=raw["accountant"],
        sampling=raw["sampling"],
        population=int(raw["population"]),
        sample_size=int(raw["sample_size"]),
        noise_multiplier=float(raw["noise_multiplier"]),
        rounds=int(raw["rounds"]),
        delta=float(raw["delta"]),
        rdp_orders=None if orders is None else [float(o) for o in orders],
        published_epsilon=float(raw["published_epsilon"]),
        check=raw["check"],
        abs_tol=float(raw["abs_tol"]),
    )


def _calibration(raw: dict[str, Any]) -> GoldenCalibration:
    return GoldenCalibration(
        id=raw["id"],
        source=raw["source"],
        accountant=raw["accountant"],
        sampling=raw["sampling"],
        population=int(raw["population"]),
        sample_size=int(raw["sample_size"]),
        rounds=int(raw["rounds"]),
        delta=float(raw["delta"]),
        target_epsilon=float(raw["target_epsilon"]),
        published_noise_multiplier=float(raw["published_noise_multiplier"]),
        abs_tol=float(raw["abs_tol"]),
    )


def load_vectors(path: Path = VECTORS_FILE) -> DPVectors:
    """Read and type the golden values."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return DPVectors(
        epsilons=[_epsilon(entry) for entry in raw["epsilons"]],
        calibrations=[_calibration(entry) for entry in raw["calibrations"]],
    )
