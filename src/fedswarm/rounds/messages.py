"""The messages a round exchanges between whoever coordinates it and the members.

A round is a short sequence of :class:`Exchange` s: the coordinator sends one request per member of a
given kind and receives, per member, a reply or a :class:`Dropout`. The simulation engine delivers them
by calling the member runtime directly; the network layer delivers the same messages over gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from fedswarm.core.parameters import Parameters
from fedswarm.core.task import FitConfig

__all__ = [
    "Dropout",
    "EvaluateReply",
    "EvaluateRequest",
    "Exchange",
    "FitReply",
    "FitRequest",
    "Reply",
]


@dataclass(frozen=True, slots=True)
class FitRequest:
    """Train from ``parameters`` with ``config``."""

    parameters: Parameters
    config: FitConfig


@dataclass(frozen=True, slots=True)
class FitReply:
    """A member's update as a flat float64 vector (new minus global, after the member's stages)."""

    update: npt.NDArray[np.float64]
    num_examples: int
    payload_bytes: int
    seconds: float
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvaluateRequest:
    """Evaluate ``parameters`` on the member's local test split."""

    round: int
    parameters: Parameters


@dataclass(frozen=True, slots=True)
class EvaluateReply:
    num_examples: int
    loss: float
    metrics: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Dropout:
    """A member that did not deliver: ``reason`` says why (raised, timed out, unreachable ...)."""

    reason: str


RequestT = TypeVar("RequestT")
Reply = FitReply | EvaluateReply | Dropout | Any


@dataclass(frozen=True, slots=True)
class Exchange(Generic[RequestT]):
    """One request per member, all of the same ``kind`` (``"fit"``, ``"evaluate"``, or a stage's own)."""

    kind: str
    round: int
    requests: Mapping[int, RequestT]
