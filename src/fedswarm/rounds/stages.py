"""Composable transforms applied to updates on either side of the wire.

*Client stages* run on the member, in order, on the flat update vector before it leaves (clip, compress,
add a distributed-DP noise share, mask). *Server stages* run at the coordinator: ``accept`` screens
individual updates before aggregation (and may reject one with a reason), ``after_aggregate`` transforms
the aggregated update (central DP noise). Secure aggregation and other protocols that need extra
exchanges plug in as a :class:`Collector` (see :mod:`fedswarm.rounds.coordinator`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fedswarm.core.errors import ConfigurationError
from fedswarm.core.task import MemberState

__all__ = ["ClientContext", "ClientStage", "ClipNorm", "ServerContext", "ServerStage"]

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ClientContext:
    member: int
    round: int
    seed: int
    state: MemberState


@dataclass(frozen=True, slots=True)
class ServerContext:
    round: int
    members: npt.NDArray[np.int64]
    seed: int


class ClientStage(Protocol):
    """A member-side transform of its own update vector."""

    @property
    def name(self) -> str: ...

    def apply(self, update: Vector, *, ctx: ClientContext) -> Vector: ...

    def payload_bytes(self, update: Vector, *, dense_bytes: int) -> int:
        """Bytes this update occupies on the wire after the stage (default: unchanged)."""
        ...


class ServerStage(Protocol):
    """A coordinator-side screen of individual updates and transform of the aggregate."""

    @property
    def name(self) -> str: ...

    def accept(self, member: int, update: Vector, *, ctx: ServerContext) -> str | None:
        """Return ``None`` to accept, or the reason for rejecting this update."""
        ...

    def after_aggregate(self, aggregate: Vector, *, ctx: ServerContext) -> Vector: ...

    def state_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class ClipNorm:
    """Scale an update down to L2 norm ``max_norm`` if it is longer (norm bounding, member side)."""

    max_norm: float
    name: str = "clip"

    def __post_init__(self) -> None:
        if not self.max_norm > 0:
            raise ConfigurationError(f"stages.clip.max_norm must be > 0, got {self.max_norm}")

    def apply(self, update: Vector, *, ctx: ClientContext) -> Vector:
        norm = float(np.linalg.norm(update))
        if norm > self.max_norm:
            return update * (self.max_norm / norm)
        return update

    def payload_bytes(self, update: Vector, *, dense_bytes: int) -> int:
        return dense_bytes
