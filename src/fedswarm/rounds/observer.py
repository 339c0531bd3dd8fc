"""Observers of a run: the hook through which the ledger, metrics exporters and dashboards see rounds.

The engine (simulation or node) calls these in order: ``on_start`` once, ``on_round`` after every
committed round (with the new global model and its digest), ``on_finish`` with the run summary, then
``close``. Observers must not modify what they are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fedswarm.core.parameters import Parameters
from fedswarm.rounds.coordinator import RoundOutcome

__all__ = ["RunObserver", "RunStart"]


@dataclass(frozen=True)
class RunStart:
    """What an observer learns when a run starts (``members`` are the member names, in id order)."""

    federation: str
    spec: Mapping[str, Any]
    spec_digest: str
    members: Sequence[str]
    strategy: str
    initial_model: Parameters
    initial_digest: str
    seed: int


class RunObserver(Protocol):
    def on_start(self, start: RunStart) -> None: ...

    def on_round(self, outcome: RoundOutcome, *, model: Parameters, model_digest: str) -> None: ...

    def on_finish(self, summary: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...
